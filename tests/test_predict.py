"""`cli.py predict` and apps.predict: image discovery and loading, the fused point cloud's geometry on a
hand-made prediction, the written files, and one-line errors for bad input."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import trimesh

from conftest import ROOT, cli
from model import VGGT, VGGTConfig, save_checkpoint
from apps.predict import (Prediction, PredictError, find_images, fused_points, load_images, model_input_size,
                           write_outputs)

torch.set_num_threads(1)


def write_image(path, array):
    assert cv2.imwrite(str(path), array)
    return path


def test_find_images_expands_folders_in_name_order(tmp_path):
    folder = tmp_path / "views"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "notes.txt", "c.PNG"):
        (folder / name).write_bytes(b"x")
    single = tmp_path / "z.png"
    single.write_bytes(b"x")
    assert [p.name for p in find_images([single, folder])] == ["z.png", "a.jpg", "b.png", "c.PNG"]
    with pytest.raises(PredictError, match="no such file"):
        find_images([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictError, match="holds no images"):
        find_images([tmp_path / "empty"])


def test_model_input_size_keeps_aspect_on_the_patch_grid():
    assert model_input_size((480, 640), 126, 14) == (98, 126)     # 94.5 rounds to 7 patches
    assert model_input_size((640, 480), 126, 14) == (168, 126)
    assert model_input_size((100, 5000), 518, 14) == (14, 518)    # never below one patch


def test_load_images_reads_gray_rgba_and_16_bit_as_rgb(tmp_path):
    gray = write_image(tmp_path / "gray.png", np.full((60, 80), 128, np.uint8))
    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[..., 2] = 255                                          # BGRA: pure red
    rgba = write_image(tmp_path / "rgba.png", rgba)
    deep = write_image(tmp_path / "deep.png", np.full((60, 80, 3), 65535, np.uint16))
    images = load_images([gray, rgba, deep], width=56, patch=14)
    assert images.shape == (3, 3, 42, 56) and images.dtype == torch.float32
    torch.testing.assert_close(images[0], torch.full((3, 42, 56), 128 / 255))
    torch.testing.assert_close(images[1, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(images[2], torch.ones(3, 42, 56))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(PredictError, match="broken.png: not a readable image"):
        load_images([gray, broken], width=56, patch=14)


def plane_prediction() -> tuple[Prediction, float]:
    """Two cameras 0.5 apart looking at the plane z = 3 of frame 0; each view's depth is exact."""
    H, W, f = 20, 30, 25.0
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], np.float32)
    ext = np.stack([np.eye(3, 4), np.eye(3, 4)]).astype(np.float32)
    ext[1, 0, 3] = -0.5                                          # camera 1 centre at x = +0.5, same z
    depth = np.full((2, H, W), 3.0, np.float32)
    conf = np.tile(np.linspace(1, 10, H * W, dtype=np.float32).reshape(H, W), (2, 1, 1))
    images = np.zeros((2, H, W, 3), np.uint8)
    images[1] = 200
    return Prediction(images=images, depth=depth, depth_conf=conf, intrinsics=np.stack([K, K]), extrinsics=ext), 3.0


def test_fused_points_lie_on_the_seen_plane_and_keep_the_confident_share():
    pred, z = plane_prediction()
    points, colors = fused_points(pred, keep=0.25)
    assert len(points) == pytest.approx(0.25 * pred.depth.size, abs=2)
    np.testing.assert_allclose(points[:, 2], z, atol=1e-5)
    # camera 1 sees the same plane shifted by its baseline: its points span x up to 0.5 further
    from_view1 = colors[:, 0] == 200
    assert from_view1.any() and (~from_view1).any()
    W, f = 30, 25.0
    assert points[from_view1, 0].max() == pytest.approx((W - 1 - W / 2) / f * z + 0.5, abs=1e-5)
    assert points[~from_view1, 0].max() == pytest.approx((W - 1 - W / 2) / f * z, abs=1e-5)
    # the most confident pixels are the last rows (conf grows with the pixel index)
    assert points[:, 1].min() > 0
    with pytest.raises(PredictError, match="keep"):
        fused_points(pred, keep=0)


def test_write_outputs_files_are_readable(tmp_path):
    pred, _ = plane_prediction()
    names = [tmp_path / "left.png", tmp_path / "right.png"]
    summary = write_outputs(pred, names, tmp_path / "out", keep=1.0)
    assert summary == {"views": 2, "height": 20, "width": 30, "points": 1200}
    out = tmp_path / "out"
    np.testing.assert_array_equal(np.load(out / "depth" / "001_right.npy"), pred.depth[1])
    assert cv2.imread(str(out / "depth" / "000_left.png")).shape == (20, 30, 3)
    cams = json.loads((out / "cameras.json").read_text())
    np.testing.assert_allclose(cams["frames"][1]["w2c"], pred.extrinsics[1])
    np.testing.assert_allclose(cams["frames"][0]["K"], pred.intrinsics[0])
    cloud = trimesh.load(out / "points.ply")
    assert len(cloud.vertices) == 1200
    np.testing.assert_allclose(np.asarray(cloud.vertices)[:, 2], 3.0, atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["cameras.json", "depth", "points.ply"]  # no temp files


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(VGGT(VGGTConfig.preset("tiny")), path)
    return path


def test_cli_predict_end_to_end(tmp_path, tiny_checkpoint):
    for i in range(3):
        write_image(tmp_path / f"view{i}.png", np.random.default_rng(i).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    r = cli("predict", str(tmp_path), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "pred"),
            "--device", "cpu")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "pred"
    depth = np.load(out / "depth" / "002_view2.npy")
    assert depth.shape == (42, 56) and np.isfinite(depth).all() and (depth > 0).all()   # tiny: 56 px wide
    cams = json.loads((out / "cameras.json").read_text())
    assert (cams["width"], cams["height"], len(cams["frames"])) == (56, 42, 3)
    R = np.asarray(cams["frames"][1]["w2c"])[:, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
    assert len(trimesh.load(out / "points.ply").vertices) == pytest.approx(0.5 * 3 * 42 * 56, abs=3)


def test_cli_predict_uses_the_shipped_model_by_default(tmp_path):
    shipped = ROOT / "assets" / "vggt_small.safetensors"
    assert shipped.is_file() and (ROOT / "assets" / "vggt_small.md").is_file()
    image = write_image(tmp_path / "a.png", np.random.default_rng(0).integers(0, 255, (84, 126, 3), dtype=np.uint8))
    r = cli("predict", str(image), str(image), "--out", str(tmp_path / "pred"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    cams = json.loads((tmp_path / "pred" / "cameras.json").read_text())
    assert (cams["width"], cams["height"]) == (126, 84)                       # the small model's width


@pytest.mark.parametrize("setup, needle", [
    ("missing_image", "nope.png: no such file or folder"),
    ("bad_checkpoint", "bad.safetensors"),
    ("no_checkpoint", "absent.safetensors: no such checkpoint"),
])
def test_cli_predict_bad_input_one_line_exit_2(tmp_path, tiny_checkpoint, setup, needle):
    image = write_image(tmp_path / "a.png", np.zeros((30, 40, 3), np.uint8))
    args, ckpt = [str(image)], tiny_checkpoint
    if setup == "missing_image":
        args = [str(image), str(tmp_path / "nope.png")]
    elif setup == "bad_checkpoint":
        ckpt = tmp_path / "bad.safetensors"
        ckpt.write_bytes(b"garbage")
    elif setup == "no_checkpoint":
        ckpt = tmp_path / "absent.safetensors"
    r = cli("predict", *args, "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not (tmp_path / "pred").exists()
