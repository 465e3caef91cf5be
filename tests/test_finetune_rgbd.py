"""The generic RGB-D sequence layout: written by write_rgbd_sequence, read back by RGBDSequences in
SynthSequences' exact format (a converted render gives identical tensors), and every kind of bad input
reported as one RGBDError line naming the file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_partitions

from finetune.metrics import unproject
from finetune.rgbd import RGBDError, RGBDSequences, read_sequence, write_rgbd_sequence
from render.dataset import load_partition
from training.batches import make_loader
from training.data import SynthSequences, find_partitions

torch.set_num_threads(1)

HW = (28, 42)  # multiples of 14, non-square
K = np.array([[40.0, 0, 20.5], [0, 42.0, 13.5], [0, 0, 1]])


def look_at(centre, target, down=(0, 1, 0)) -> np.ndarray:
    """OpenCV world-to-camera 4x4 of a camera at ``centre`` looking at ``target`` (y towards ``down``)."""
    centre = np.asarray(centre, np.float64)
    z = np.asarray(target, np.float64) - centre
    z /= np.linalg.norm(z)
    y = np.asarray(down, np.float64) - np.dot(down, z) * z
    y /= np.linalg.norm(y)
    R = np.stack([np.cross(y, z), y, z])  # rows: camera axes in world coordinates
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ centre
    return w2c


def floor_depth(w2c: np.ndarray, half_side: float = 0.8) -> np.ndarray:
    """z-depth of the square |x|, |y| < half_side of the plane z = 0 (0 elsewhere)."""
    v, u = np.mgrid[0:HW[0], 0:HW[1]].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    R, t = w2c[:3, :3], w2c[:3, 3]
    centre, dirs = -R.T @ t, rays @ R                       # world ray directions R^T r
    depth = -centre[2] / dirs[..., 2]                       # rays have z = 1 in the camera: lambda = depth
    hit = centre[:2] + depth[..., None] * dirs[..., :2]
    inside = (depth > 0) & (np.abs(hit) < half_side).all(axis=-1)
    return np.where(inside, depth, 0.0)


def floor_scene(frames: int = 2, seed: int = 0):
    """A textured square on the floor seen from ``frames`` cameras about 2 units above it."""
    rng = np.random.default_rng(seed)
    w2c = np.stack([look_at([0.15 * i, -0.1 * i, 2.0 + 0.1 * i], [0.05 * i, 0, 0]) for i in range(frames)])
    depths = np.stack([floor_depth(e) for e in w2c])
    images = rng.integers(0, 256, size=(frames, *HW, 3), dtype=np.uint8)
    return images, depths, w2c


@pytest.fixture
def scene():
    return floor_scene()


def only_item(root, **kwargs) -> dict:
    ds = RGBDSequences(root, num_frames=kwargs.pop("num_frames", 2), **kwargs)
    assert len(ds) == 1
    return ds[0]


# ----------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("depth_format", ["png", "npy"])
def test_written_sequence_reads_back(tmp_path, scene, depth_format):
    images, depths, w2c = scene
    folder = write_rgbd_sequence(tmp_path, "face01", images, depths, K, w2c, label="live", depth_format=depth_format)
    assert folder == tmp_path / "face01" and (folder / "frames.json").is_file()
    seq = only_item(tmp_path, normalize=False)
    ids = seq["ids"].numpy()
    assert sorted(ids) == [0, 1]
    np.testing.assert_array_equal(seq["images"].numpy(), images[ids].transpose(0, 3, 1, 2) / np.float32(255))
    np.testing.assert_array_equal(seq["intrinsics"].numpy(), np.tile(K, (2, 1, 1)).astype(np.float32))
    np.testing.assert_allclose(seq["extrinsics"].numpy(), w2c[ids, :3], atol=1e-6)
    got = seq["depths"].numpy()
    assert np.array_equal(got > 0, depths[ids] > 0) and (depths > 0).mean() > 0.3
    if depth_format == "npy":
        np.testing.assert_array_equal(got, depths[ids].astype(np.float32))
    else:                                           # 16-bit millimetres: within half a unit (float32 slack)
        assert np.abs(got - depths[ids]).max() <= 0.5 / 1000 + 1e-6
    assert seq["seq_name"] == "face01" and seq["label"].item() == 1 and seq["label"].dtype == torch.int64


def test_world_points_of_both_views_agree_after_normalisation(tmp_path, scene):
    images, depths, w2c = scene
    write_rgbd_sequence(tmp_path, "s", images, depths, K, w2c)
    seq = only_item(tmp_path)
    np.testing.assert_allclose(seq["extrinsics"][0].numpy(), np.eye(3, 4), atol=1e-6)   # camera 0 is the world
    masks, world = seq["point_masks"].numpy(), seq["world_points"].numpy().astype(np.float64)
    assert np.linalg.norm(world[masks], axis=-1).mean() == pytest.approx(1.0, rel=1e-5)   # unit mean distance
    # Both views see one plane: fit it to view 0's points, view 1's lie on it (up to PNG quantisation).
    p0, p1 = world[0][masks[0]], world[1][masks[1]]
    centre = p0.mean(axis=0)
    normal = np.linalg.svd(p0 - centre)[2][2]
    assert np.abs((p0 - centre) @ normal).max() < 1e-3 and np.abs((p1 - centre) @ normal).max() < 1e-3
    # ... and the normalised cameras, depths and points are consistent with one another.
    for i in range(2):
        again = unproject(seq["depths"][i].numpy(), seq["intrinsics"][i].numpy(), seq["extrinsics"][i].numpy())
        np.testing.assert_allclose(again, world[i][masks[i]], atol=1e-5)


def test_labels_and_batches(tmp_path, scene):
    images, depths, w2c = scene
    for name, label in (("a_live", "live"), ("b_spoof", "spoof"), ("c_unknown", None)):
        write_rgbd_sequence(tmp_path, name, images, depths, K, w2c, label=label)
    ds = RGBDSequences(tmp_path, num_frames=2)
    assert ds.labels == [1, 0, -1]
    assert [ds[i]["label"].item() for i in range(3)] == [1, 0, -1]
    batch = next(iter(make_loader(ds, batch_size=3, shuffle=False)))
    assert batch["label"].tolist() == [1, 0, -1] and batch["images"].shape == (3, 2, 3, *HW)
    assert batch["seq_name"] == ["a_live", "b_spoof", "c_unknown"]


def test_frame_choice_is_deterministic_per_seed_and_index(tmp_path):
    images, depths, w2c = floor_scene(frames=6)
    for name in ("s0", "s1"):
        write_rgbd_sequence(tmp_path, name, images, depths, K, w2c, depth_format="npy")
    picks = lambda seed: [RGBDSequences(tmp_path, num_frames=3, seed=seed)[i]["ids"].tolist() for i in range(2)]
    first = picks(0)
    assert picks(0) == first and all(len(set(ids)) == 3 for ids in first)
    assert first[0] != first[1]                              # the index takes part in the draw ...
    assert any(picks(seed) != first for seed in (1, 2, 3))   # ... and so does the seed
    seq = RGBDSequences(tmp_path, num_frames=3)[1]
    np.testing.assert_allclose(seq["images"].numpy(), images[first[1]].transpose(0, 3, 1, 2) / 255, atol=1e-7)


def test_converted_render_gives_synth_sequences_tensors(tmp_path):
    """A rendered partition written in this layout (npy depth: lossless) and read at another resolution
    gives exactly the tensors SynthSequences gives: same frame choice, resizing and normalisation."""
    job = write_partitions(tmp_path / "synth", partitions=1, samples=2, views=3, hw=(42, 56))
    partition = load_partition(job.partition_dir(0))
    for i, s in enumerate(partition.samples):
        write_rgbd_sequence(tmp_path / "rgbd", f"s{i:04d}", s.images, s.depths, s.intrinsics, s.extrinsics,
                            depth_format="npy")
    for kwargs in ({"resolution": (28, 42)}, {"resolution": None, "seed": 3}):
        synth = SynthSequences(find_partitions(tmp_path / "synth"), num_frames=2, **kwargs)
        ours = RGBDSequences(tmp_path / "rgbd", num_frames=2, **kwargs)
        for index in range(2):
            a, b = synth[index], ours[index]
            assert set(b) == set(a) | {"label"}
            for key in set(a) - {"seq_name"}:
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_frames_of_different_sizes_are_resized_one_by_one(tmp_path, scene):
    images, depths, w2c = scene
    write_rgbd_sequence(tmp_path / "small", "s", images, depths, K, w2c)
    big_k = K * [[2], [2], [1]] + [[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]   # the same camera at twice the size
    big_images = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
    big_depths = np.repeat(np.repeat(depths, 2, axis=1), 2, axis=2)
    write_rgbd_sequence(tmp_path / "big", "s", big_images, big_depths, big_k, w2c)
    meta = json.loads((tmp_path / "small/s/frames.json").read_text())
    big = json.loads((tmp_path / "big/s/frames.json").read_text())["frames"][1]
    meta["frames"][1] = {**big, "rgb": "../../big/s/" + big["rgb"], "depth": "../../big/s/" + big["depth"]}
    (tmp_path / "small/s/frames.json").write_text(json.dumps(meta))
    seq = only_item(tmp_path / "small", resolution=HW, normalize=False)
    frame = list(seq["ids"].numpy()).index(1)
    np.testing.assert_allclose(seq["intrinsics"][frame].numpy(), K, atol=1e-5)   # back to the small camera
    assert np.abs(seq["depths"][frame].numpy() - depths[1]).max() <= 0.5 / 1000 + 1e-6
    with pytest.raises(RGBDError, match="pass a resolution") as e:
        only_item(tmp_path / "small")
    assert "56x84" in str(e.value) and "28x42" in str(e.value) and "rgb/00" in str(e.value)


def test_exr_depth(tmp_path, scene):
    OpenEXR = pytest.importorskip("OpenEXR")
    images, depths, w2c = scene
    folder = write_rgbd_sequence(tmp_path, "s", images, depths, K, w2c, depth_format="npy")
    meta = json.loads((folder / "frames.json").read_text())
    for i, frame in enumerate(meta["frames"]):
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        OpenEXR.File(header, {"R": np.zeros(HW, np.float32), "depth.Z": depths[i].astype(np.float32)}
                     ).write(str(folder / f"depth/{i:03d}.exr"))
        frame["depth"] = f"depth/{i:03d}.exr"
    (folder / "frames.json").write_text(json.dumps(meta))
    seq = only_item(tmp_path, normalize=False)
    np.testing.assert_array_equal(seq["depths"].numpy(), depths[seq["ids"].numpy()].astype(np.float32))
    (folder / "depth/001.exr").write_bytes(b"not an exr")
    with pytest.raises(RGBDError, match="001.exr: unreadable EXR"):
        only_item(tmp_path)


# ----------------------------------------------------------------------------------- bad input
def assert_one_line_error(excinfo, file: Path, *words: str):
    message = str(excinfo.value)
    assert "\n" not in message and str(file) in message, message
    for word in words:
        assert word in message, message
    assert excinfo.value.__cause__ is None and (excinfo.value.__context__ is None
                                                or excinfo.value.__suppress_context__), "chained from deep inside"


@pytest.fixture
def good(tmp_path, scene):
    images, depths, w2c = scene
    return write_rgbd_sequence(tmp_path / "root", "seq", images, depths, K, w2c, label="spoof")


def edit_frames(folder: Path, change) -> None:
    meta = json.loads((folder / "frames.json").read_text())
    change(meta)
    (folder / "frames.json").write_text(json.dumps(meta))


def test_missing_root_empty_root_and_missing_frames_json(tmp_path, good):
    with pytest.raises(RGBDError) as e:
        RGBDSequences(tmp_path / "nowhere", num_frames=1)
    assert_one_line_error(e, tmp_path / "nowhere", "not a folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RGBDError) as e:
        RGBDSequences(tmp_path / "empty", num_frames=1)
    assert_one_line_error(e, tmp_path / "empty", "no sequences")
    (good.parent / "not_a_sequence").mkdir()
    with pytest.raises(RGBDError) as e:
        RGBDSequences(good.parent, num_frames=1)
    assert_one_line_error(e, good.parent / "not_a_sequence" / "frames.json", "missing")
    shutil.rmtree(good.parent / "not_a_sequence")
    (good.parent / ".seq.tmp-123-4").mkdir()                  # an interrupted writer's temporary: skipped
    assert len(RGBDSequences(good.parent, num_frames=1)) == 1
    assert len(RGBDSequences(good, num_frames=1)) == 1      # a sequence folder itself is a root too


@pytest.mark.parametrize("change, words", [
    (lambda m: m.update(frames=[]), ["frames"]),
    (lambda m: m.update(label="fake"), ["label"]),
    (lambda m: m.update(depth_scale=-1), ["depth_scale"]),
    (lambda m: m["frames"][1].pop("w2c"), ["frame 1", "missing w2c"]),
    (lambda m: m["frames"][1].update(K=[[40, 0, 20], [0, 40, 14]]), ["frame 1", "K must be 3x3", "(2, 3)"]),
    (lambda m: m["frames"][0].update(K=[[40, 1, 20], [0, 40, 14], [0, 0, 1]]), ["frame 0", "skew"]),
    (lambda m: m["frames"][0].update(K=[[40, 0, 20], [0, "x", 14], [0, 0, 1]]), ["frame 0", "K"]),
    (lambda m: m["frames"][0].update(w2c=np.eye(3).tolist()), ["frame 0", "w2c must be 3x4 or 4x4"]),
    (lambda m: m["frames"][0].update(w2c=(2 * np.eye(3, 4)).tolist()), ["frame 0", "not a rotation"]),
], ids=["no_frames", "label", "depth_scale", "no_w2c", "K_shape", "K_skew", "K_text", "w2c_shape", "w2c_scaled"])
def test_bad_frames_json(good, change, words):
    edit_frames(good, change)
    with pytest.raises(RGBDError) as e:
        RGBDSequences(good.parent, num_frames=1)
    assert_one_line_error(e, good / "frames.json", *words)


def test_unsupported_depth_format(good):
    shutil.copy(good / "depth/000.png", good / "depth/000.tiff")
    edit_frames(good, lambda m: m["frames"][0].update(depth="depth/000.tiff"))
    with pytest.raises(RGBDError) as e:
        RGBDSequences(good.parent, num_frames=1)
    assert_one_line_error(e, good / "depth/000.tiff", ".png, .npy, .exr")


def test_corrupt_frames_json_and_too_few_frames(good):
    with pytest.raises(RGBDError) as e:
        RGBDSequences(good.parent, num_frames=3)
    assert_one_line_error(e, good / "frames.json", "has 2 frames", "num_frames=3")
    (good / "frames.json").write_text('{"frames": [')
    with pytest.raises(RGBDError) as e:
        RGBDSequences(good.parent, num_frames=1)
    assert_one_line_error(e, good / "frames.json", "unreadable")


def test_missing_files_are_found_when_the_dataset_is_built(good):
    (good / "rgb/001.png").unlink()
    with pytest.raises(RGBDError) as e:
        RGBDSequences(good.parent, num_frames=1)
    assert_one_line_error(e, good / "rgb/001.png", "missing")
    (good / "depth/000.png").unlink()
    edit_frames(good, lambda m: m["frames"].pop())
    with pytest.raises(RGBDError) as e:
        RGBDSequences(good.parent, num_frames=1)
    assert_one_line_error(e, good / "depth/000.png", "missing")


@pytest.mark.parametrize("file, content, words", [
    ("rgb/001.png", b"\x89PNG garbage", ["not an image"]),
    ("depth/001.png", b"garbage", ["not a PNG"]),
    ("depth/001.png", "8bit", ["16-bit single-channel", "uint8"]),
    ("depth/001.npy", b"garbage", ["unreadable array"]),
    ("depth/001.npy", "3d", ["2-D array"]),
    ("depth/001.npy", "small", ["depth is 14x21", "001.png is 28x42"]),
])
def test_unreadable_pixels_are_reported_when_loaded(good, file, content, words):
    path = good / file
    if path.suffix == ".npy":
        (good / "depth/001.png").unlink()
        edit_frames(good, lambda m: m["frames"][1].update(depth="depth/001.npy"))
    if content == "8bit":
        import cv2
        cv2.imwrite(str(path), np.full(HW, 7, np.uint8))
    elif content == "3d":
        np.save(path, np.zeros((*HW, 3), np.float32))
    elif content == "small":
        np.save(path, np.ones((14, 21), np.float32))
    else:
        path.write_bytes(content)
    ds = RGBDSequences(good.parent, num_frames=2)               # pixels are not read yet
    with pytest.raises(RGBDError) as e:
        ds[0]
    assert_one_line_error(e, path, *words)


def test_size_not_a_patch_multiple_without_resolution(tmp_path):
    images, depths, w2c = floor_scene()
    folder = write_rgbd_sequence(tmp_path, "s", images[:, :27], depths[:, :27], K, w2c)
    with pytest.raises(RGBDError) as e:
        only_item(tmp_path)
    assert_one_line_error(e, folder / "rgb", "27x42", "multiple of the patch size 14")
    assert only_item(tmp_path, resolution=14)["images"].shape == (2, 3, 14, 14)


def test_writer_refuses_what_it_cannot_store(tmp_path, scene):
    images, depths, w2c = scene
    with pytest.raises(ValueError, match="depth_format='npy'"):
        write_rgbd_sequence(tmp_path, "far", images, depths * 40, K, w2c)          # 80 m in millimetres
    far = write_rgbd_sequence(tmp_path, "far_ok", images, depths * 40, K, w2c, depth_scale=100.0)
    assert read_sequence(far).depth_scale == 100.0
    with pytest.raises(ValueError, match="K must be"):
        write_rgbd_sequence(tmp_path, "k", images, depths, K[:2], w2c)
    with pytest.raises(ValueError, match="label"):
        write_rgbd_sequence(tmp_path, "l", images, depths, K, w2c, label="real")
    floats = write_rgbd_sequence(tmp_path / "floats", "s", images / 255.0, depths, K, w2c)   # float in [0, 1]
    seq = only_item(floats.parent, normalize=False)
    expected = images[seq["ids"].numpy()].transpose(0, 3, 1, 2) / np.float32(255)
    np.testing.assert_array_equal(seq["images"].numpy(), expected)
