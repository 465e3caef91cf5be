"""The two real clothed-human scan data sets, in their published layouts: finding, checking, splitting and
listing their scans for the render mesh mode (render/meshes.py), plus small fake scans in the same layouts.

    datasets = find_human_datasets("data/humans")          # {"thuman2.1": [Scan...], "2k2k": [Scan...]}
    splits = split_subjects(datasets[THUMAN], seed=0)      # {"train": [...], "val": [...], "test": [...]}
    write_mesh_list("data/humans/train.txt", splits["train"])   # cli.py render --meshes data/humans/train.txt

Layouts:

* THuman 2.1 (2,500 scans): ``ROOT/<id>/<id>.obj`` + ``material0.mtl`` + ``material0.jpeg``; the .obj's
  ``mtllib`` line names the .mtl, the .mtl's ``map_Kd`` line names the texture. Metres, +Y up, facing +Z.
  Folders without an .obj (SMPL-X fits and the like) are not scans.
* 2K2K (2,050 scans): ``ROOT/<id>.ply`` or ``ROOT/<id>/<id>.ply`` (any depth); per-vertex red/green/blue
  or a ``comment TextureFile <image>`` next to the .ply. Millimetres or metres: the mesh mode's
  ``--units auto`` tells them apart, so nothing about units is recorded here.

Checks read headers and material lines only, never the meshes (a THuman .obj is tens of MB). They mirror
what the mesh mode's loader (trimesh) reads, so a scan that passes has colours it will find; every problem
is a one-line :class:`HumanScanError` naming the file or folder.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import write_bytes, write_text

THUMAN, TWO_K2K = "thuman2.1", "2k2k"
SPLITS = ("train", "val", "test")
PLY_HEADER_LIMIT = 1 << 16  # a PLY header longer than this is not a header (binary data follows it)
PLY_COLOURS = ("red", "green", "blue")  # the only vertex colour names trimesh (the mesh mode's loader) reads
FIXTURE_TEXTURE = 64  # side of the fixtures' procedural texture, in pixels

# Independent random streams of the fixtures: a subject's draws depend on (seed, data set, its number) only,
# so asking for more subjects never changes the earlier ones.
_STREAM = {THUMAN: 1, TWO_K2K: 2}


class HumanScanError(ValueError):
    """A missing or malformed scan data set; the message is one line naming the file or folder."""


@dataclass(frozen=True)
class Scan:
    path: Path  # the mesh file (absolute)
    subject: str  # the scan id: its folder's name for THuman, the file's stem for 2K2K
    dataset: str  # THUMAN or TWO_K2K


# ------------------------------------------------------------------------------------------ THuman 2.1
def find_thuman(root: str | Path) -> list[Scan]:
    """The scans of a THuman 2.1 folder, sorted by subject: each subfolder holding an .obj is one scan
    (exactly one .obj), and its .mtl and texture must exist."""
    root = _folder(root)
    scans = []
    for folder in _subfolders(root):
        objs = _objs(folder)
        if not objs:
            continue  # not a scan: SMPL-X fits, renders, notes
        if len(objs) > 1:
            raise HumanScanError(f"{folder}: {len(objs)} .obj files ({', '.join(p.name for p in objs)}); "
                                 "a THuman scan folder holds exactly one")
        _check_obj_materials(objs[0])
        scans.append(Scan(objs[0], folder.name, THUMAN))
    if not scans:
        raise HumanScanError(f"{root}: no THuman 2.1 scans (<id>/<id>.obj folders) found")
    return scans  # _subfolders is sorted by name, and the subject is the folder's name


def _check_obj_materials(obj: Path) -> None:
    """The .obj names an .mtl that exists, which names texture images that exist. Names are resolved the
    way trimesh reads them: the rest of the line, relative to the file that names them."""
    # Lazily: OBJ writers put mtllib before the geometry, so only a broken .obj is read to its end.
    mtllib = next(_keyword_lines(obj, "mtllib"), None)
    if mtllib is None:
        raise HumanScanError(f"{obj}: no mtllib line (a THuman scan names its .mtl, which names its texture)")
    mtl = obj.parent / mtllib
    if not mtllib or not mtl.is_file():
        raise HumanScanError(f"{obj}: mtllib names {mtllib!r}, but {mtl} does not exist")
    textures = list(_keyword_lines(mtl, "map_kd"))
    if not textures:
        raise HumanScanError(f"{mtl}: no map_Kd line (THuman scans are textured)")
    for name in textures:
        image = mtl.parent / name
        if not name or not image.is_file():
            raise HumanScanError(f"{mtl}: map_Kd names {name!r}, but {image} does not exist")


def _keyword_lines(path: Path, keyword: str):
    """The rest of each line of ``path`` whose first word is ``keyword`` (any case), lazily."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split(None, 1)
                if words and words[0].lower() == keyword:
                    yield words[1].strip() if len(words) > 1 else ""
    except OSError as e:
        raise HumanScanError(f"{path}: cannot read it ({e.strerror})") from None


# ------------------------------------------------------------------------------------------------ 2K2K
def find_2k2k(root: str | Path) -> list[Scan]:
    """The scans of a 2K2K folder, sorted by subject: every .ply at any depth (hidden ones skipped), its
    header declaring faces and either red/green/blue vertex colours or a texture image that exists."""
    root = _folder(root)
    scans, seen = [], {}
    for ply in _files_below(root, ".ply"):
        _check_ply_header(ply)
        if ply.stem in seen:  # splits go by subject: one scan per id
            raise HumanScanError(f"{ply}: subject {ply.stem} also in {seen[ply.stem]}")
        seen[ply.stem] = ply
        scans.append(Scan(ply, ply.stem, TWO_K2K))
    if not scans:
        raise HumanScanError(f"{root}: no 2K2K scans (<id>.ply or <id>/<id>.ply) found")
    return sorted(scans, key=lambda s: s.subject)


def _check_ply_header(ply: Path) -> None:
    header = _ply_header(ply)
    elements: dict[str, tuple[int, list[str]]] = {}  # name -> (count, property names)
    current, texture = None, None
    for line in header[1:]:
        words = line.split()
        if words[:1] == ["element"] and len(words) == 3:
            current = words[1]
            elements[current] = (_count(ply, words[2]), [])
        elif words[:1] == ["property"] and current is not None and len(words) >= 3:
            elements[current][1].append(words[-1])
        elif words[:1] == ["comment"] and "texturefile" in line.lower():  # as trimesh finds it
            texture = line[line.lower().index("texturefile") + len("texturefile"):].strip()
    if elements.get("face", (0,))[0] < 1:
        raise HumanScanError(f"{ply}: the PLY header declares no faces (a point cloud, not a scan)")
    vertex_properties = elements.get("vertex", (0, []))[1]
    if all(c in vertex_properties for c in PLY_COLOURS):
        return
    if texture is not None:
        image = ply.parent / texture
        if not texture or not image.is_file():
            raise HumanScanError(f"{ply}: comment TextureFile names {texture!r}, but {image} does not exist")
        return
    if any(f"diffuse_{c}" in vertex_properties for c in PLY_COLOURS):  # trimesh would render these grey
        raise HumanScanError(f"{ply}: vertex colours are named diffuse_red/green/blue, which the mesh loader "
                             "(trimesh) ignores; rename them red/green/blue")
    raise HumanScanError(f"{ply}: neither red/green/blue vertex colours nor a 'comment TextureFile' image")


def _ply_header(ply: Path) -> list[str]:
    """The header's lines, ``ply`` first and ``end_header`` excluded."""
    try:
        with open(ply, "rb") as f:
            head = f.read(PLY_HEADER_LIMIT)
    except OSError as e:
        raise HumanScanError(f"{ply}: cannot read it ({e.strerror})") from None
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    if lines[0].strip() != "ply":
        raise HumanScanError(f"{ply}: not a PLY file (it does not start with 'ply')")
    end = next((i for i, line in enumerate(lines) if line.strip() == "end_header"), None)
    if end is None:
        raise HumanScanError(f"{ply}: no end_header in its first {PLY_HEADER_LIMIT} bytes")
    return [line.strip() for line in lines[:end]]


def _count(ply: Path, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HumanScanError(f"{ply}: element count {text!r} is not a number") from None


# ---------------------------------------------------------------------------------------- both of them
def find_human_datasets(root: str | Path) -> dict[str, list[Scan]]:
    """The scans under ``--data ROOT``: a THuman 2.1 folder, a 2K2K folder, or a folder holding them as
    subfolders whose names contain "thuman" / "2k2k" (any case; names with "smpl" are fits, skipped)."""
    given = root
    root = _folder(root, "--data ")
    named = {THUMAN: [], TWO_K2K: []}
    for folder in _subfolders(root):
        name = folder.name.lower()
        if "thuman" in name and "smpl" not in name:
            named[THUMAN].append(folder)
        elif "2k2k" in name:
            named[TWO_K2K].append(folder)
    # A parent of both data sets is told apart from a data set by those names: its 2K2K plys would
    # otherwise make the parent itself look like a 2K2K folder.
    candidates = named if any(named.values()) else {THUMAN: [root], TWO_K2K: [root]}
    found = {}
    for dataset, folders in candidates.items():
        folders = [f for f in folders if _looks_like(dataset, f)]
        if len(folders) > 1:
            raise HumanScanError(f"--data {given}: {len(folders)} {dataset} folders "
                                 f"({', '.join(f.name for f in folders)}); point --data at one")
        if folders:
            found[dataset] = (find_thuman if dataset == THUMAN else find_2k2k)(folders[0])
    if not found:
        raise HumanScanError(f"--data {given}: neither THuman 2.1 (<id>/<id>.obj + material0.jpeg) "
                             "nor 2K2K (<id>.ply) scans found")
    return found


def _looks_like(dataset: str, folder: Path) -> bool:
    """Whether ``folder`` holds the data set's mesh files at all; the finders check them."""
    if dataset == THUMAN:
        return any(_objs(sub) for sub in _subfolders(folder))
    return bool(_files_below(folder, ".ply"))


def _folder(root: str | Path, option: str = "") -> Path:
    path = Path(root)
    if not path.is_dir():
        raise HumanScanError(f"{option}{root}: no such folder")
    return path.absolute()


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _objs(folder: Path) -> list[Path]:
    """The .obj files in ``folder``; hidden ones are skipped (an interrupted atomic write leaves one)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".obj" and p.is_file()
                  and not p.name.startswith("."))


def _files_below(root: Path, suffix: str) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() == suffix and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


# ------------------------------------------------------------------------------------ splits and lists
def split_subjects(scans, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[Scan]]:
    """train/val/test by subject (a subject's scans share a split): a permutation of the sorted subjects
    drawn from ``seed``, cut at the rounded cumulative fractions; a split rounded to nothing takes one
    subject from the largest, so all three are non-empty."""
    scans = list(scans)
    subjects = sorted({s.subject for s in scans})
    n = len(subjects)
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or not all(math.isfinite(f) and f > 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise HumanScanError(f"fractions must be three numbers > 0 (train, val, test) summing to 1, "
                             f"got {tuple(fractions)!r}")
    if n < 3:
        raise HumanScanError(f"{n} subject(s): three splits need at least 3")
    bounds = np.round(np.cumsum(fr) * n).astype(int)
    bounds[-1] = n  # the fractions' sum may round to n - 1 or n + 1
    counts = np.diff(bounds, prepend=0)
    while counts.min() < 1:
        counts[counts.argmax()] -= 1
        counts[counts.argmin()] += 1
    order = [subjects[i] for i in np.random.default_rng(seed).permutation(n)]
    split_of = {s: SPLITS[int(np.searchsorted(np.cumsum(counts), rank, side="right"))]
                for rank, s in enumerate(order)}
    out = {name: [] for name in SPLITS}
    for scan in sorted(scans, key=lambda s: (s.subject, str(s.path))):
        out[split_of[scan.subject]].append(scan)
    return out


def write_mesh_list(path: str | Path, scans, comment: str = "") -> Path:
    """A ``--meshes LIST.txt`` for the mesh mode: a ``#`` comment line, then one mesh a line relative to
    the list's folder (the list and the data move together)."""
    path = Path(path)
    scans = list(scans)
    if not scans:
        raise HumanScanError(f"{path}: no scans to list (the mesh mode refuses an empty list)")
    folder = path.parent.absolute()
    lines = [f"# {' '.join(comment.split()) or f'{len(scans)} human scans'}"]
    for scan in scans:
        rel = Path(os.path.relpath(Path(scan.path).absolute(), folder)).as_posix()
        if "#" in rel or "\n" in rel:  # the list format ends an entry at '#'
            raise HumanScanError(f"{scan.path}: a '#' or line break in the path cannot go in a mesh list")
        lines.append(rel)
    write_text(path, "\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------------- fixtures
def write_thuman_fixture(root: str | Path, subjects: int = 3, seed: int = 0) -> list[Path]:
    """Fake THuman 2.1 scans ``ROOT/<id>/<id>.obj`` + material0.mtl + material0.jpeg (ids 0000, 0001...):
    small UV-textured humanoids in metres. Returns the .obj paths; the same arguments give the same bytes."""
    root = Path(root)
    paths = []
    for i in range(subjects):
        subject = f"{i:04d}"
        vertices, faces, uv, texture = _humanoid(np.random.default_rng([seed, _STREAM[THUMAN], i]))
        folder = root / subject
        # Fixtures need no fsync; the OBJ, written last, marks a complete scan.
        write_bytes(folder / "material0.jpeg", _jpeg_bytes(texture), durable=False)
        write_text(folder / "material0.mtl", _mtl_text("material0.jpeg"), durable=False)
        write_text(folder / f"{subject}.obj", _obj_text(vertices, faces, uv, "material0.mtl"), durable=False)
        paths.append((folder / f"{subject}.obj").absolute())
    return paths


def write_2k2k_fixture(root: str | Path, subjects: int = 3, seed: int = 0) -> list[Path]:
    """Fake 2K2K scans ``ROOT/<id>.ply`` (ids 00000, 00001...): small vertex-coloured humanoids in
    MILLIMETRES, binary little-endian, so that they exercise the mesh mode's unit detection."""
    root = Path(root)
    paths = []
    for i in range(subjects):
        vertices, faces, uv, texture = _humanoid(np.random.default_rng([seed, _STREAM[TWO_K2K], i]))
        # The vertex colours are the texture under each vertex's UV: the same clothes as the THuman fakes.
        rows = np.clip(((1 - uv[:, 1]) * FIXTURE_TEXTURE).astype(int), 0, FIXTURE_TEXTURE - 1)
        cols = np.clip((uv[:, 0] * FIXTURE_TEXTURE).astype(int), 0, FIXTURE_TEXTURE - 1)
        path = root / f"{i:05d}.ply"
        write_bytes(path, _ply_bytes(vertices * 1000.0, faces, texture[rows, cols]), durable=False)
        paths.append(path.absolute())
    return paths


def _humanoid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(vertices [N,3] metres, faces [T,3], uv [N,2], texture [64,64,3] uint8) of a capsule-and-sphere
    person: +Y up, facing +Z (a nose and feet point that way), feet on y = 0, 1.5-1.9 m tall, ~2k triangles."""
    import trimesh

    j = lambda: rng.uniform(0.9, 1.1)  # noqa: E731  one body proportion's jitter
    hip, shoulder, neck = 0.48 * j(), 0.81 * j(), 0.87
    width, leg_r, arm_r, head_r = 0.095 * j(), 0.05 * j(), 0.032 * j(), 0.065 * j()
    head_y = neck + head_r
    parts = [
        _limb((-width * 0.55, 0.04, 0), (-width * 0.55, hip, 0), leg_r),  # legs
        _limb((width * 0.55, 0.04, 0), (width * 0.55, hip, 0), leg_r),
        _limb((0, hip, 0), (0, shoulder, 0), width, depth=0.6),  # torso, flatter front to back
        _limb((-width - arm_r, shoulder, 0), (-width - 0.09, hip + 0.02, 0), arm_r),  # arms, in an A-pose
        _limb((width + arm_r, shoulder, 0), (width + 0.09, hip + 0.02, 0), arm_r),
        _limb((0, shoulder, 0), (0, neck, 0), 0.035),
        trimesh.creation.icosphere(2, radius=head_r).apply_translation((0, head_y, 0)),
        trimesh.creation.icosphere(1, radius=0.015).apply_translation((0, head_y, head_r * 0.95)),  # nose
        trimesh.creation.box((0.08, 0.05, 0.22)).apply_translation((-width * 0.55, 0.025, 0.05)),  # feet
        trimesh.creation.box((0.08, 0.05, 0.22)).apply_translation((width * 0.55, 0.025, 0.05)),
    ]
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
    vertices = np.concatenate([p.vertices for p in parts])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    vertices[:, 1] -= vertices[:, 1].min()
    vertices *= rng.uniform(1.55, 1.85) / vertices[:, 1].max()  # the height, feet staying on y = 0
    # Cylindrical UVs: u around the body, v up it, so the texture's rows are the clothes from feet to head.
    uv = np.stack([np.arctan2(vertices[:, 0], vertices[:, 2]) / (2 * np.pi) + 0.5,
                   vertices[:, 1] / vertices[:, 1].max()], axis=1)
    return vertices, faces.astype(np.int64), uv, _clothes_texture(rng, hip / (head_y + head_r))


def _limb(p0, p1, radius: float, depth: float = 1.0):
    """A capsule from ``p0`` to ``p1`` (its hemispheres' centres), squashed to ``depth`` front to back (z).
    trimesh makes it along z centred on the origin (whatever its docstring says): turned, then moved."""
    import trimesh

    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    axis, middle = p1 - p0, (p0 + p1) / 2
    mesh = trimesh.creation.capsule(height=float(np.linalg.norm(axis)), radius=radius, count=[16, 8])
    mesh.apply_transform(trimesh.geometry.align_vectors([0, 0, 1], axis / np.linalg.norm(axis)))
    mesh.apply_translation(middle)
    # Squashed after turning: align_vectors picks its own roll, so a squash before it could end up sideways.
    return mesh.apply_transform(trimesh.transformations.scale_matrix(depth, middle, [0, 0, 1]))


def _clothes_texture(rng: np.random.Generator, hip_v: float) -> np.ndarray:
    """64x64 RGB, row 0 at the top (v = 1): skin above the neck, a striped shirt, trousers, dark shoes."""
    size = FIXTURE_TEXTURE
    skin = rng.uniform([150, 100, 70], [240, 190, 160])
    shirt, trousers = rng.uniform(30, 230, 3), rng.uniform(20, 160, 3)
    v = 1 - (np.arange(size) + 0.5) / size  # each row's v
    rows = np.where(v > 0.87, 0, np.where(v > hip_v, 1, np.where(v > 0.04, 2, 3)))
    image = np.stack([skin, shirt, trousers, np.full(3, 25.0)])[rows][:, None].repeat(size, 1)
    stripes = (np.arange(size) // 4) % 2 == 1  # horizontal stripes on the shirt
    image[(rows == 1) & stripes] *= 0.6
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _jpeg_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)  # fixed settings: the same bytes each time
    return buf.getvalue()


def _obj_text(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, mtl_name: str) -> str:
    """OBJ with one material, UVs indexed like the positions (THuman's writer's layout)."""
    lines = ["# AttrSpace fake THuman 2.1 scan: metres, +Y up, facing +Z", f"mtllib {mtl_name}", "usemtl material0"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uv]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in faces + 1]
    return "\n".join(lines) + "\n"


def _mtl_text(texture_name: str) -> str:
    return (f"newmtl material0\nKa 1.000000 1.000000 1.000000\nKd 1.000000 1.000000 1.000000\n"
            f"Ks 0.000000 0.000000 0.000000\nd 1.000000\nillum 1\nmap_Kd {texture_name}\n")


def _ply_bytes(vertices: np.ndarray, faces: np.ndarray, rgb: np.ndarray) -> bytes:
    """Binary little-endian PLY: float32 xyz, uchar red/green/blue, int32 triangles."""
    header = ("ply\nformat binary_little_endian 1.0\n"
              "comment AttrSpace fake 2K2K scan: millimetres, +Y up, facing +Z\n"
              f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    vert = np.zeros(len(vertices), dtype=[("p", "<f4", 3), ("c", "u1", 3)])
    vert["p"], vert["c"] = vertices, rgb
    face = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<i4", 3)])
    face["n"], face["i"] = 3, faces
    return header.encode("ascii") + vert.tobytes() + face.tobytes()


__all__ = ["THUMAN", "TWO_K2K", "SPLITS", "HumanScanError", "Scan", "find_thuman", "find_2k2k",
           "find_human_datasets", "split_subjects", "write_mesh_list", "write_thuman_fixture",
           "write_2k2k_fixture"]
