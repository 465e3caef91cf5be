"""ClearPose in its published layout (finetune/tasks/clearpose.py): the synthetic fixture reads back
exactly, the camera convention is right (world points land on the known geometry and agree between
views), depth is depth_true's and not the sensor's, transparent masks follow the labels, frame choice is
deterministic, and every kind of bad input is one ClearPoseError line naming the file."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch

from finetune.tasks.clearpose import (FIXTURE_OPAQUE_ID, FIXTURE_TRANSPARENT_ID, METADATA_FILE, PAPER_SPLITS,
                                      TRANSPARENT_IDS, ClearPoseError, ClearPoseSequences, check_camera_convention,
                                      find_clearpose_scenes, paper_split_scenes, read_clearpose_metadata,
                                      read_clearpose_scene, write_clearpose_fixture)
from finetune.rgbd import RGBDError
from training.batches import make_loader

torch.set_num_threads(1)

FRAMES = 8
SYNTH_KEYS = {"images", "depths", "extrinsics", "intrinsics", "cam_points", "world_points", "point_masks", "ids",
              "seq_name"}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("clearpose")
    return root, write_clearpose_fixture(root, scenes=2, frames=FRAMES, seed=0)


@pytest.fixture
def copy(fixture, tmp_path):
    """A private copy of the fixture to break."""
    root, truth = fixture
    shutil.copytree(root, tmp_path / "data")
    return tmp_path / "data", [dataclasses.replace(t, path=tmp_path / "data" / t.path.relative_to(root))
                               for t in truth]


def png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


# ----------------------------------------------------------------------------------- layout and read-back
def test_fixture_is_the_published_layout(fixture):
    root, truth = fixture
    scene = truth[0].path
    assert scene == root / "set1" / "scene1"
    for kind, dtype, channels in [("color", np.uint8, 3), ("depth", np.uint16, 1), ("depth_true", np.uint16, 1),
                                  ("normal_true", np.uint8, 3), ("label", np.uint8, 1)]:
        image = png(scene / f"000000-{kind}.png")
        assert image.dtype == dtype and (image.ndim == 2 if channels == 1 else image.shape[2] == channels), kind
    meta = scipy.io.loadmat(str(scene / METADATA_FILE))
    assert sorted(k for k in meta if not k.startswith("__")) == [f"{i:06d}" for i in range(FRAMES)]
    entry = meta["000000"]
    assert entry.shape == (1, 1)
    # The authors' loaders' access patterns work on it: by name through [0][0], and by position.
    assert entry["intrinsic_matrix"][0][0].shape == (3, 3)
    assert entry["factor_depth"][0][0].item() == 1000 and entry["factor_depth"][0][0].dtype == np.uint16
    assert entry[0, 0][3].shape == (3, 3) and entry[0, 0][0] is not None      # cls_indexes, ..., intrinsics
    assert entry["rotation_translation_matrix"][0][0].shape == (3, 4)
    ids = entry["cls_indexes"][0][0]
    assert ids.dtype == np.uint8 and ids.shape[1] == 1
    assert entry["poses"][0][0].shape == (3, 4, len(ids))


def test_metadata_reads_back(fixture):
    _, truth = fixture
    for t in truth:
        frames = read_clearpose_metadata(t.path / METADATA_FILE)
        assert [f.name for f in frames] == t.frame_names
        for i, f in enumerate(frames):
            np.testing.assert_allclose(f.K, t.K)
            np.testing.assert_allclose(f.w2c, t.w2c[i][:3], atol=1e-12)   # inverted from the stored c2w
            np.testing.assert_allclose(f.stored_pose, t.c2w[i][:3])
            assert f.factor_depth == 1000.0
            label = png(t.path / f"{f.name}-label.png")
            assert set(f.object_ids) == set(np.unique(label).tolist()) - {0}
            assert f.object_poses.shape == (len(f.object_ids), 3, 4)
    scene = read_clearpose_scene(truth[0].path)
    assert scene.name == "set1/scene1" and len(scene.frames) == FRAMES


def test_depth_scale_and_units(fixture):
    _, truth = fixture
    t = truth[0]
    ds = ClearPoseSequences(t.path, num_frames=2, stride=1, normalize=False)
    item = ds[0]
    ids = item["ids"].numpy()
    for s, i in enumerate(ids):
        expected = png(t.path / f"{t.frame_names[i]}-depth_true.png").astype(np.float64) / 1000.0
        np.testing.assert_allclose(item["depths"][s].numpy(), expected, atol=1e-6)
    assert 0.2 < item["depths"][item["point_masks"]].median() < 1.0      # metres, not millimetres
    np.testing.assert_allclose(item["extrinsics"].numpy(), t.w2c[ids][:, :3], atol=1e-6)


def test_camera_convention_check(fixture, copy):
    _, truth = fixture
    result = check_camera_convention(truth[0].path)
    assert result["c2w"] < 1e-6 < 0.01 < result["w2c"]
    # A file storing world-to-camera poses instead is recognised as such.
    root, truth = copy
    path = truth[0].path / METADATA_FILE
    meta = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    for name, i in zip(truth[0].frame_names, range(FRAMES)):
        meta[name]["rotation_translation_matrix"][0, 0] = truth[0].w2c[i][:3]
    scipy.io.savemat(str(path), meta)
    flipped = check_camera_convention(truth[0].path)
    assert flipped["w2c"] < 1e-6 < 0.01 < flipped["c2w"]


# ----------------------------------------------------------------------------------- geometry
def test_world_points_land_on_the_known_geometry(fixture):
    """Unnormalised world points are in ClearPose's world frame: the table's on z = 0, the glass
    sphere's on its sphere, in every frame (0.5 mm depth rounding)."""
    _, truth = fixture
    t = truth[0]
    item = ClearPoseSequences(t.path, num_frames=4, stride=2, normalize=False)[0]
    points, masks, labels = item["world_points"].double(), item["point_masks"], item["object_labels"]
    table = masks & (labels == 0)
    glass = masks & (labels == FIXTURE_TRANSPARENT_ID)
    assert table.sum() > 200 and glass.sum() > 50
    assert points[table][:, 2].abs().max() < 2e-3
    obj = t.objects[FIXTURE_TRANSPARENT_ID]
    radii = (points[glass] - torch.from_numpy(obj["centre"])).norm(dim=-1)
    assert (radii - obj["radius"]).abs().max() < 2e-3


def plane_residual(points: torch.Tensor, reference: torch.Tensor) -> float:
    """RMS distance of ``points`` [N,3] to the plane fitted to ``reference`` [M,3]."""
    centre = reference.mean(0)
    normal = torch.linalg.svd(reference - centre).Vh[-1]
    return float(((points - centre) @ normal).pow(2).mean().sqrt())


@pytest.mark.parametrize("convention, consistent", [("c2w", True), ("w2c", False)])
def test_views_agree_after_normalisation(fixture, convention, consistent):
    """The table seen by frames 1..3 lies on the plane through frame 0's view of it after
    normalisation (camera 0 = world, unit mean distance); reading the poses the other way round breaks
    it, so this proves the convention."""
    root, _ = fixture
    ds = ClearPoseSequences(root, num_frames=4, stride=2, pose_convention=convention)
    for index in (0, len(ds) - 1):
        item = ds[index]
        np.testing.assert_allclose(item["extrinsics"][0].numpy(), np.eye(4)[:3], atol=1e-6)
        points, table = item["world_points"].double(), item["point_masks"] & (item["object_labels"] == 0)
        reference = points[0][table[0]]
        residual = max(plane_residual(points[s][table[s]], reference) for s in range(1, 4))
        if consistent:
            assert residual < 3e-3
        else:
            assert residual > 3e-2


# ----------------------------------------------------------------------------------- depth, masks, extras
def test_depth_is_depth_true_not_the_sensor(fixture, copy):
    root, truth = copy
    t = truth[0]
    before = ClearPoseSequences(t.path, num_frames=3, stride=1, normalize=False, raw_depth=True)[0]
    ids = before["ids"].numpy()
    glass = before["transparent_masks"]
    raw = np.stack([png(t.path / f"{t.frame_names[i]}-depth.png") for i in ids]).astype(np.float64) / 1000
    np.testing.assert_allclose(before["raw_depths"].numpy(), raw, atol=1e-6)
    # On the glass the sensor saw through it (or nothing): there raw and true differ, elsewhere they agree.
    differs = (before["raw_depths"] - before["depths"]).abs() > 1e-3
    assert glass.sum() > 30 and bool(differs[glass].all()) and not bool(differs[~glass].any())
    # Wiping the raw depth files changes nothing in the target.
    for i in ids:
        cv2.imwrite(str(t.path / f"{t.frame_names[i]}-depth.png"), np.full_like(raw[0], 777, dtype=np.uint16))
    after = ClearPoseSequences(t.path, num_frames=3, stride=1, normalize=False)[0]
    assert torch.equal(after["depths"], before["depths"]) and torch.equal(after["world_points"], before["world_points"])
    # Normalised, raw depths are scaled like the target (equal where the sensor was right).
    normed = ClearPoseSequences(t.path, num_frames=3, stride=1, raw_depth=True)[0]
    same = ~normed["transparent_masks"] & normed["point_masks"]
    assert float(normed["raw_depths"][same].mul(1000).sub(777).abs().max()) > 1   # really rescaled
    scale = float(before["depths"][before["point_masks"]].sum() / normed["depths"][normed["point_masks"]].sum())
    np.testing.assert_allclose(normed["raw_depths"][same].numpy() * scale, np.full(int(same.sum()), 0.777), rtol=1e-5)


def test_transparent_masks_follow_the_labels(fixture):
    _, truth = fixture
    t = truth[1]
    ds = ClearPoseSequences(t.path, num_frames=4, stride=2)
    item = ds[0]
    labels = np.stack([png(t.path / f"{t.frame_names[i]}-label.png") for i in item["ids"].numpy()])
    assert (labels == FIXTURE_OPAQUE_ID).any() and (labels == FIXTURE_TRANSPARENT_ID).any() and (labels == 0).any()
    np.testing.assert_array_equal(item["object_labels"].numpy(), labels)
    assert item["transparent_masks"].dtype == torch.bool
    np.testing.assert_array_equal(item["transparent_masks"].numpy(), np.isin(labels, list(TRANSPARENT_IDS)))
    np.testing.assert_array_equal(item["transparent_masks"].numpy(), labels == FIXTURE_TRANSPARENT_ID)
    other = ClearPoseSequences(t.path, num_frames=4, stride=2, transparent_ids={FIXTURE_OPAQUE_ID})[0]
    np.testing.assert_array_equal(other["transparent_masks"].numpy(), labels == FIXTURE_OPAQUE_ID)


def test_synth_format_and_resizing(fixture):
    root, _ = fixture
    ds = ClearPoseSequences(root, num_frames=3, stride=2, resolution=(28, 42))
    item = ds[1]
    assert SYNTH_KEYS | {"transparent_masks", "object_labels"} == set(item)
    S = 3
    assert item["images"].shape == (S, 3, 28, 42) and item["images"].dtype == torch.float32
    assert item["depths"].shape == (S, 28, 42) and item["world_points"].shape == (S, 28, 42, 3)
    assert item["extrinsics"].shape == (S, 3, 4) and item["intrinsics"].shape == (S, 3, 3)
    assert item["transparent_masks"].shape == (S, 28, 42)
    assert set(np.unique(item["object_labels"].numpy())) <= {0, FIXTURE_TRANSPARENT_ID, FIXTURE_OPAQUE_ID}
    native = ClearPoseSequences(root, num_frames=3, stride=2)[1]
    np.testing.assert_allclose(item["intrinsics"][:, 0, 0].numpy(), native["intrinsics"][:, 0, 0].numpy() * 42 / 56,
                               rtol=1e-6)
    batch = next(iter(make_loader(ds, batch_size=2, shuffle=False)))
    assert batch["transparent_masks"].shape == (2, S, 28, 42) and len(batch["seq_name"]) == 2


def test_native_size_must_be_a_patch_multiple(tmp_path):
    write_clearpose_fixture(tmp_path, scenes=1, frames=3, hw=(30, 40))
    with pytest.raises(ClearPoseError) as e:
        ClearPoseSequences(tmp_path, num_frames=2, stride=1)
    assert "000000-color.png" in str(e.value) and "resolution" in str(e.value)
    assert ClearPoseSequences(tmp_path, num_frames=2, stride=1, resolution=(28, 42))[0]["depths"].shape == (2, 28, 42)


# ----------------------------------------------------------------------------------- frame choice
def test_frame_choice_is_deterministic_windows(fixture):
    root, truth = fixture
    stride, S = 2, 3
    ds = ClearPoseSequences(root, num_frames=S, stride=stride, seed=3)
    block = S * stride
    per_scene = (FRAMES - (S - 1) * stride - 1) // block + 1
    assert len(ds) == 2 * per_scene
    assert ds.sample_dirs == [truth[0].path] * per_scene + [truth[1].path] * per_scene
    assert ds.scene_names == ["set1/scene1"] * per_scene + ["set1/scene2"] * per_scene
    again = ClearPoseSequences(root, num_frames=S, stride=stride, seed=3)
    draws = {}
    for index in range(len(ds)):
        ids = ds.frame_ids(index)
        assert np.array_equal(np.diff(ids), np.full(S - 1, stride))          # a clip, temporal order
        start = ds.windows[index][1]
        assert start <= ids[0] < start + stride and ids[-1] < FRAMES
        item, twin = ds[index], again[index]
        assert torch.equal(item["ids"], torch.from_numpy(ids)) and torch.equal(item["images"], twin["images"])
        scene = ds.scenes[ds.windows[index][0]]
        assert item["seq_name"] == f"{scene.name}/{scene.frames[ids[0]].name}"
        draws[index] = ids
    # Other seeds move the windows' jitter (for some item), never the window itself.
    others = [ClearPoseSequences(root, num_frames=S, stride=stride, seed=s) for s in range(4)]
    assert any(not np.array_equal(o.frame_ids(i), draws[i]) for o in others for i in draws)
    with pytest.raises(IndexError):
        ds.frame_ids(len(ds))


def test_too_few_frames(fixture):
    root, truth = fixture
    with pytest.raises(ClearPoseError) as e:
        ClearPoseSequences(root, num_frames=4, stride=3)   # needs 10 frames, scenes have 8
    assert str(truth[0].path / METADATA_FILE) in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------------- finding scenes and splits
def test_find_scenes(fixture, tmp_path):
    root, truth = fixture
    paths = [t.path for t in truth]
    assert find_clearpose_scenes(root) == paths
    assert find_clearpose_scenes(root / "set1") == paths
    assert find_clearpose_scenes(truth[1].path) == [truth[1].path]
    # natural order, and non-scene folders (model/) skipped
    for name in ("set2/scene10", "set2/scene9", "set10/scene1"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / METADATA_FILE).write_bytes(b"")
    (tmp_path / "model" / "beaker_1").mkdir(parents=True)
    assert [p.relative_to(tmp_path).as_posix() for p in find_clearpose_scenes(tmp_path)] == \
        ["set2/scene9", "set2/scene10", "set10/scene1"]


def test_paper_splits(tmp_path):
    for set_name, scene in [("set1", 1), ("set1", 2), ("set2", 3), ("set2", 1), ("set3", 11), ("set3", 4)]:
        (tmp_path / set_name / f"scene{scene}").mkdir(parents=True)
        (tmp_path / set_name / f"scene{scene}" / METADATA_FILE).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in paper_split_scenes(tmp_path, "test_heavy_occlusion")] == \
        ["set2/scene1", "set2/scene3", "set3/scene4", "set3/scene11"]   # every scene of set2 and set3
    with pytest.raises(ClearPoseError) as e:
        paper_split_scenes(tmp_path, "train")
    assert str(tmp_path / "set1" / "scene3" / METADATA_FILE) in str(e.value)
    with pytest.raises(ValueError):
        paper_split_scenes(tmp_path, "validation")
    assert set(PAPER_SPLITS["train"]) == {"set1", "set4", "set5", "set6", "set7"}


# ----------------------------------------------------------------------------------- malformed input
def assert_one_line(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert isinstance(error.value, ClearPoseError) and isinstance(error.value, RGBDError)
    assert "\n" not in message and str(path) in message, message
    assert error.value.__suppress_context__ or error.value.__cause__ is None


def test_missing_metadata(copy):
    root, truth = copy
    (truth[1].path / METADATA_FILE).unlink()
    with pytest.raises(ClearPoseError) as e:
        ClearPoseSequences(root, num_frames=2)
    assert_one_line(e, truth[1].path / METADATA_FILE)
    with pytest.raises(ClearPoseError) as e:
        read_clearpose_scene(truth[1].path)
    assert_one_line(e, truth[1].path / METADATA_FILE)


@pytest.mark.parametrize("kind", ["color", "depth_true", "label"])
def test_missing_frame_file(copy, kind):
    root, truth = copy
    path = truth[0].path / f"000005-{kind}.png"
    path.unlink()
    with pytest.raises(ClearPoseError) as e:
        ClearPoseSequences(root, num_frames=2, stride=1)
    assert_one_line(e, path)


def test_missing_raw_depth_only_matters_when_asked(copy):
    root, truth = copy
    path = truth[0].path / "000002-depth.png"
    path.unlink()
    assert len(ClearPoseSequences(root, num_frames=2, stride=1)) > 0
    with pytest.raises(ClearPoseError) as e:
        ClearPoseSequences(root, num_frames=2, stride=1, raw_depth=True)
    assert_one_line(e, path)


def _rename(entry, old, new):
    fields = {n: entry[n][0, 0] for n in entry.dtype.names}
    fields[new] = fields.pop(old)
    return fields


def _set(name, value):
    def mutate(entry):
        fields = {n: entry[n][0, 0] for n in entry.dtype.names}
        fields[name] = value
        return fields
    return mutate


MUTATIONS = {
    "no intrinsics": (lambda e: _rename(e, "intrinsic_matrix", "intrinsics"), "intrinsic_matrix"),
    "no camera pose": (lambda e: _rename(e, "rotation_translation_matrix", "pose"), "rotation_translation_matrix"),
    "no factor_depth": (lambda e: _rename(e, "factor_depth", "depth_factor"), "factor_depth"),
    "K shape": (_set("intrinsic_matrix", np.eye(4)), "K must be 3x3"),
    "pose shape": (_set("rotation_translation_matrix", np.eye(3)), "must be 3x4"),
    "not a rotation": (_set("rotation_translation_matrix", np.hstack([2 * np.eye(3), np.ones((3, 1))])),
                       "not a rotation"),
    "zero factor": (_set("factor_depth", np.array([[0]], np.uint16)), "factor_depth"),
    "text factor": (_set("factor_depth", "mm"), "factor_depth"),
    "poses count": (_set("poses", np.zeros((3, 4, 7))), "poses"),
    "not a struct": (lambda e: np.arange(3.0), "not a 1x1 struct"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_malformed_metadata(copy, case):
    root, truth = copy
    path = truth[0].path / METADATA_FILE
    meta = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    mutate, expected = MUTATIONS[case]
    meta["000003"] = mutate(meta["000003"])
    scipy.io.savemat(str(path), meta)
    with pytest.raises(ClearPoseError) as e:
        ClearPoseSequences(root, num_frames=2)
    assert_one_line(e, path)
    assert "frame 000003" in str(e.value) and expected in str(e.value), str(e.value)


def test_unreadable_and_empty_metadata(copy):
    root, truth = copy
    path = truth[0].path / METADATA_FILE
    path.write_bytes(b"this is not a MATLAB file at all" * 8)
    with pytest.raises(ClearPoseError) as e:
        read_clearpose_metadata(path)
    assert_one_line(e, path)
    scipy.io.savemat(str(path), {})
    with pytest.raises(ClearPoseError) as e:
        read_clearpose_metadata(path)
    assert_one_line(e, path)
    assert "no frame entries" in str(e.value)


def test_no_scenes(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(ClearPoseError) as e:
        ClearPoseSequences(tmp_path, num_frames=2)
    assert_one_line(e, tmp_path)
    with pytest.raises(ClearPoseError) as e:
        find_clearpose_scenes(tmp_path / "absent")
    assert_one_line(e, tmp_path / "absent")
    with pytest.raises(ClearPoseError):
        ClearPoseSequences([], num_frames=2)


def test_bad_pixels_at_load(copy):
    root, truth = copy
    t = truth[0]
    ds = ClearPoseSequences(t.path, num_frames=2, stride=1)
    path = t.path / f"{t.frame_names[int(ds.frame_ids(0)[1])]}-depth_true.png"
    cv2.imwrite(str(path), np.zeros((42, 56), np.uint8))            # an 8-bit depth
    with pytest.raises(ClearPoseError) as e:
        ds[0]
    assert_one_line(e, path)
    assert "16-bit" in str(e.value)
    cv2.imwrite(str(path), np.zeros((40, 56), np.uint16))           # the wrong size
    with pytest.raises(ClearPoseError) as e:
        ds[0]
    assert_one_line(e, path)


def test_intrinsics_of_another_resolution(copy):
    """The K of the 1280x720 stream with the 640x480 images would put the principal point off the image."""
    root, truth = copy
    path = truth[0].path / METADATA_FILE
    meta = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    for name in truth[0].frame_names:
        meta[name] = _set("intrinsic_matrix", np.array([[902.2, 0, 662.3], [0, 902.4, 372.2], [0, 0, 1]]))(meta[name])
    scipy.io.savemat(str(path), meta)
    ds = ClearPoseSequences(truth[0].path, num_frames=2, stride=1)
    with pytest.raises(ClearPoseError) as e:
        ds[0]
    assert_one_line(e, path)
    assert "principal point" in str(e.value)
