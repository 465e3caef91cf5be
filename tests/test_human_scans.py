"""The clothed-human scan data sets (finetune/tasks/human_scans.py): finding and checking THuman 2.1 and 2K2K
in their published layouts, subject splits, mesh lists, and the fake scans that stand in for them here."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from finetune.tasks.human_scans import (THUMAN, TWO_K2K, HumanScanError, Scan, find_2k2k, find_human_datasets,
                                        find_thuman, split_subjects, write_2k2k_fixture, write_mesh_list,
                                        write_thuman_fixture)
from render.meshes import find_meshes, load_mesh, mesh_asset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A parent folder as the data sets are published: THuman2.1/, its SMPL-X fits beside it, 2K2K/."""
    parent = tmp_path_factory.mktemp("humans")
    thuman = write_thuman_fixture(parent / "THuman2.1", subjects=3, seed=0)
    k2k = write_2k2k_fixture(parent / "2K2K", subjects=3, seed=0)
    fits = parent / "THuman2.1_smplx" / "0000"  # fits, not scans: no .obj
    fits.mkdir(parents=True)
    (fits / "smplx_param.pkl").write_bytes(b"not a scan")
    return parent, thuman, k2k


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------- finding
def test_finders_find_the_fixtures_sorted(data):
    parent, thuman, k2k = data
    found = find_thuman(parent / "THuman2.1")
    assert [s.subject for s in found] == ["0000", "0001", "0002"]
    assert [s.path for s in found] == thuman and all(s.path.is_absolute() for s in found)
    assert {s.dataset for s in found} == {THUMAN}
    found = find_2k2k(parent / "2K2K")
    assert [s.subject for s in found] == ["00000", "00001", "00002"]
    assert [s.path for s in found] == k2k and {s.dataset for s in found} == {TWO_K2K}


def test_find_human_datasets_takes_either_root_or_their_parent(data):
    parent, thuman, k2k = data
    both = find_human_datasets(parent)  # the SMPL-X folder's name says "THuman" too: it must be skipped
    assert set(both) == {THUMAN, TWO_K2K}
    assert [s.path for s in both[THUMAN]] == thuman and [s.path for s in both[TWO_K2K]] == k2k
    assert find_human_datasets(parent / "THuman2.1") == {THUMAN: find_thuman(parent / "THuman2.1")}
    assert find_human_datasets(parent / "2K2K") == {TWO_K2K: find_2k2k(parent / "2K2K")}


def test_2k2k_nested_and_flat_layouts_mix(data, tmp_path):
    root = _copy(data[0] / "2K2K", tmp_path / "2k2k_release")
    (root / "00001").mkdir()
    (root / "00001.ply").rename(root / "00001" / "00001.ply")
    found = find_2k2k(root)
    assert [s.subject for s in found] == ["00000", "00001", "00002"]
    assert found[1].path == (root / "00001" / "00001.ply").absolute()


def test_thuman_skips_folders_without_an_obj_and_takes_any_obj_name(data, tmp_path):
    root = _copy(data[0] / "THuman2.1", tmp_path / "thuman")
    (root / "0003_smplx").mkdir()
    (root / "0003_smplx" / "param.json").write_text("{}")
    (root / "0001" / "0001.obj").rename(root / "0001" / "mesh.obj")
    found = find_thuman(root)
    assert [s.subject for s in found] == ["0000", "0001", "0002"]
    assert found[1].path.name == "mesh.obj"


# --------------------------------------------------------------------------- the mesh mode takes them
def test_fixtures_load_with_texture_or_colours_and_the_right_units(data):
    _, thuman, k2k = data
    for path in thuman:
        mesh = load_mesh(path)
        assert mesh.appearance == "texture" and 500 < mesh.triangles < 5000
        assert all(p.image is not None and p.image.shape == (64, 64, 3) for p in mesh.parts)
        assert all(p.uv is not None and len(p.uv) == len(p.vertices) for p in mesh.parts)
    for path in k2k:
        mesh = load_mesh(path)
        assert mesh.appearance == "vertex-colors"
        assert all(p.colors is not None and np.ptp(p.colors) > 0.1 for p in mesh.parts)  # not one flat colour
    heights = []
    for path, units in [(p, "m") for p in thuman] + [(p, "mm") for p in k2k]:
        asset = mesh_asset(path, units="auto")
        assert asset.units == units, path
        height = asset.extent[2]  # world z is the file's +Y
        feet = asset.center[2] - height / 2
        assert 1.5 <= height <= 1.9 and abs(feet) < 1e-3, (path, height, feet)
        assert asset.extent[0] < 0.8 * height and asset.extent[1] < 0.5 * height  # upright, not lying down
        heights.append(height)
    assert len(set(np.round(heights, 3))) == len(heights)  # the seed varies the people


def test_fixtures_face_plus_z(data):
    """The nose and the toes stick out towards +Z: more of the body lies in front of the torso's axis."""
    _, thuman, _ = data
    vertices, _ = load_mesh(thuman[0]).geometry()
    assert vertices[:, 2].max() > 2 * -vertices[:, 2].min()


# ---------------------------------------------------------------------------------- broken layouts
def _ply(path: Path, vertex_props=("red", "green", "blue"), face=True, comments=()) -> Path:
    lines = ["ply", "format ascii 1.0", *(f"comment {c}" for c in comments), "element vertex 3",
             "property float x", "property float y", "property float z",
             *(f"property uchar {p}" for p in vertex_props)]
    if face:
        lines += ["element face 1", "property list uchar int vertex_indices"]
    rest = " 200" * len(vertex_props)
    lines += ["end_header", f"0 0 0{rest}", f"1 0 0{rest}", f"0 1 0{rest}"] + (["3 0 1 2"] if face else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _raises(find, root, *paths):
    with pytest.raises(HumanScanError) as e:
        find(root)
    message = str(e.value)
    assert "\n" not in message
    for p in paths:
        assert str(Path(p).absolute()) in message, message
    return message


def test_thuman_missing_texture(data, tmp_path):
    root = _copy(data[0] / "THuman2.1", tmp_path / "t")
    (root / "0001" / "material0.jpeg").unlink()
    assert "map_Kd" in _raises(find_thuman, root, root / "0001" / "material0.jpeg")


def test_thuman_mtllib_names_a_missing_file(data, tmp_path):
    root = _copy(data[0] / "THuman2.1", tmp_path / "t")
    obj = root / "0002" / "0002.obj"
    obj.write_text(obj.read_text().replace("mtllib material0.mtl", "mtllib gone.mtl"))
    assert "gone.mtl" in _raises(find_thuman, root, obj)


def test_thuman_obj_without_mtllib(data, tmp_path):
    root = _copy(data[0] / "THuman2.1", tmp_path / "t")
    obj = root / "0000" / "0000.obj"
    obj.write_text(obj.read_text().replace("mtllib material0.mtl\n", ""))
    assert "no mtllib" in _raises(find_thuman, root, obj)


def test_thuman_two_objs_in_one_folder(data, tmp_path):
    root = _copy(data[0] / "THuman2.1", tmp_path / "t")
    shutil.copy(root / "0000" / "0000.obj", root / "0000" / "0000_copy.obj")
    assert "exactly one" in _raises(find_thuman, root, root / "0000")


def test_2k2k_ply_without_faces(data, tmp_path):
    root = _copy(data[0] / "2K2K", tmp_path / "k")
    bad = _ply(root / "00009.ply", face=False)
    assert "no faces" in _raises(find_2k2k, root, bad)


def test_2k2k_ply_without_colours_or_texture(tmp_path):
    bad = _ply(tmp_path / "k" / "00004" / "00004.ply", vertex_props=())
    assert "TextureFile" in _raises(find_2k2k, tmp_path / "k", bad)
    diffuse = _ply(tmp_path / "d" / "00005.ply", vertex_props=("diffuse_red", "diffuse_green", "diffuse_blue"))
    assert "diffuse_red" in _raises(find_2k2k, tmp_path / "d", diffuse)


def test_2k2k_texture_file_must_exist(tmp_path):
    ply = _ply(tmp_path / "k" / "00007.ply", vertex_props=(), comments=("TextureFile 00007.png",))
    _raises(find_2k2k, tmp_path / "k", tmp_path / "k" / "00007.png")
    (tmp_path / "k" / "00007.png").write_bytes(b"an image")  # the header check does not open it
    assert [s.path for s in find_2k2k(tmp_path / "k")] == [ply.absolute()]


def test_not_a_ply_and_duplicate_subjects(data, tmp_path):
    root = _copy(data[0] / "2K2K", tmp_path / "k")
    (root / "00003.ply").write_bytes(b"solid stl\n")
    assert "not a PLY" in _raises(find_2k2k, root, root / "00003.ply")
    (root / "00003.ply").unlink()
    (root / "again").mkdir()
    shutil.copy(root / "00002.ply", root / "again" / "00002.ply")
    _raises(find_2k2k, root, root / "again" / "00002.ply", root / "00002.ply")


def test_empty_folder(tmp_path):
    for find in (find_thuman, find_2k2k):
        _raises(find, tmp_path, tmp_path)
    message = _raises(find_human_datasets, tmp_path, tmp_path)
    assert message.startswith("--data ") and "neither THuman 2.1" in message
    _raises(find_human_datasets, tmp_path / "nowhere", tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------- splits
SCANS = [Scan(Path(f"/data/{i:04d}/{i:04d}.obj"), f"{i:04d}", THUMAN) for i in range(20)]


def _subjects(splits) -> dict[str, list[str]]:
    return {name: [s.subject for s in scans] for name, scans in splits.items()}


def test_split_subjects_disjoint_complete_deterministic():
    a = _subjects(split_subjects(SCANS, seed=0))
    assert list(a) == ["train", "val", "test"]
    assert [len(v) for v in a.values()] == [16, 2, 2]
    assert sorted(sum(a.values(), [])) == [s.subject for s in SCANS]  # disjoint and complete
    assert a == _subjects(split_subjects(list(reversed(SCANS)), seed=0))  # the input order does not matter
    assert a != _subjects(split_subjects(SCANS, seed=1))
    assert a["train"] != [s.subject for s in SCANS[:16]]  # shuffled, not cut in file order
    assert [len(v) for v in split_subjects(SCANS, (0.5, 0.25, 0.25), seed=3).values()] == [10, 5, 5]
    assert [len(v) for v in split_subjects(SCANS[:7], (0.5, 0.25, 0.25)).values()] == [4, 1, 2]


def test_split_subjects_small_and_bad_arguments():
    assert [len(v) for v in split_subjects(SCANS[:3]).values()] == [1, 1, 1]  # rounding would leave val empty
    two_each = SCANS[:4] + [Scan(s.path.with_name("b.obj"), s.subject, THUMAN) for s in SCANS[:4]]
    split = split_subjects(two_each, (0.5, 0.25, 0.25))
    assert all(len({s.subject for s in v}) * 2 == len(v) for v in split.values())  # a subject's scans together
    with pytest.raises(HumanScanError, match="at least 3"):
        split_subjects(SCANS[:2])
    for bad in ((0.8, 0.2, 0.0), (0.5, 0.5), (0.6, 0.3, 0.3)):
        with pytest.raises(HumanScanError, match="fractions"):
            split_subjects(SCANS, bad)


# ------------------------------------------------------------------------------------------ lists
def test_mesh_list_is_read_back_by_the_mesh_mode(data, tmp_path):
    parent = data[0]
    scans = sorted(sum(find_human_datasets(parent).values(), []), key=lambda s: s.subject)
    listed = write_mesh_list(tmp_path / "lists" / "all.txt", scans, comment="all scans")
    text = listed.read_text().splitlines()
    assert text[0] == "# all scans" and len(text) == 1 + len(scans)
    assert all(not Path(line).is_absolute() and line.startswith("../") for line in text[1:])
    root, files = find_meshes(listed)
    assert root == listed.parent.absolute()
    assert [f.resolve() for f in files] == [s.path.resolve() for s in scans]  # find_meshes keeps the "../"
    with pytest.raises(HumanScanError, match="no scans"):
        write_mesh_list(tmp_path / "empty.txt", [])


# -------------------------------------------------------------------------------------- determinism
def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_fixtures_are_byte_identical_for_a_seed(tmp_path):
    for write in (write_thuman_fixture, write_2k2k_fixture):
        a, b, c = (tmp_path / write.__name__ / k for k in "abc")
        write(a, subjects=2, seed=5)
        write(b, subjects=2, seed=5)
        write(c, subjects=2, seed=6)
        assert _tree(a) == _tree(b) and len(_tree(a)) in (2, 6)
        assert _tree(a) != _tree(c)
