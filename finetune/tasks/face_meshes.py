"""The face anti-spoofing task's mesh data: live faces, their spoofs, and one index.

    from finetune.tasks import build_face_meshes, load_face_index
    index = build_face_meshes("data/faces")       # data/faces/faces.json; rerunning resumes / skips
    meshes = load_face_index(index)["meshes"]       # one dict per mesh file

Layout (details and the index format: docs/face_data.md):

    OUT/faces.json
    OUT/{train,val,test}.txt      the split's mesh files, one a line: ``cli.py render --meshes OUT/train.txt``
    OUT/{train,val,test}/<identity>_e<k>_live.ply                      vertex-coloured, binary PLY
    OUT/{train,val,test}/<identity>_e<k>_{print_flat,print_curved,screen}.{obj,mtl,png}

``<identity>`` is ``anny_0000``... (synthetic, from anny) or ``scan_face000`` (pymeshlab's real range
scan, test split only); ``e<k>`` is the k-th expression of the identity. Splits are by identity: an
identity's live and spoof meshes share one split. Everything follows from the arguments: the same
arguments give the same bytes; files already complete are kept, so an interrupted build resumes; an
existing folder built with other arguments is refused with a one-line :class:`FaceMeshError`.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.atomic import remove_stale, write_bytes, write_json, write_text, write_text_if_changed

from . import face_live as live_mod
from . import face_spoofs as spoof_mod
from .face_live import LiveMesh
from .face_spoofs import TexturedMesh

__all__ = ["build_face_meshes", "load_face_index", "FaceMeshError", "KINDS", "SPOOF_KINDS", "INDEX_NAME",
           "DEFAULT_IDENTITIES", "DEFAULT_EXPRESSIONS", "DEFAULT_SPLITS", "write_ply", "write_obj"]

INDEX_NAME = "faces.json"
BUILD_RECORD = ".face_meshes_build.json"   # the arguments, written first: a partial build knows them too
FORMAT_VERSION = 1
KINDS = ("live", "print_flat", "print_curved", "screen")
SPOOF_KINDS = KINDS[1:]
SPLITS = ("train", "val", "test")
DEFAULT_IDENTITIES = 40
DEFAULT_EXPRESSIONS = 2
DEFAULT_SPLITS = (0.7, 0.15, 0.15)
SCAN_IDENTITY = "scan_face000"

# Independent random streams: (seed, stream, ...) -> numpy Generator. An identity's draws depend on its
# own number only, so adding identities never changes the earlier ones.
_IDENTITY, _EXPRESSION, _SPOOF, _SCAN, _SPLIT = range(5)


class FaceMeshError(ValueError):
    """A bad argument or a folder built with other arguments: the message is one line."""


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(s) for s in stream]])


# ------------------------------------------------------------------------------------------- plan

@dataclass
class Unit:
    """One live mesh (an identity with one expression) and its three spoofs: what is generated together,
    since the spoofs photograph the live mesh."""

    identity: str
    source: str                       # "anny" | "scan"
    split: str
    expression_index: int
    identity_params: dict
    expression: dict
    spoofs: dict = field(default_factory=dict)  # spoof kind -> its sampled parameters

    def stem(self, kind: str) -> str:
        return f"{self.identity}_e{self.expression_index}_{kind}"


def assign_splits(n: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Split name per identity number: a seeded permutation cut at the rounded cumulative fractions, so
    the counts are as close to the fractions as whole identities allow."""
    order = _rng(seed, _SPLIT).permutation(n)
    bounds = np.round(np.cumsum(fractions) * n).astype(int)
    out = [""] * n
    for rank, i in enumerate(order):
        out[i] = SPLITS[int(np.searchsorted(bounds, rank, side="right"))] if rank < bounds[-1] else SPLITS[-1]
    return out


def plan_units(identities: int, expressions: int, seed: int, splits: tuple[float, float, float],
               include_scan: bool) -> list[Unit]:
    """Every unit's parameters, drawn without building anny (only its label lists are read)."""
    from anny.models.facial_actions import FACIAL_ACTION_LABELS
    labels = live_mod.face_local_change_labels()
    split_of = assign_splits(identities, splits, seed)
    units = []
    for i in range(identities):
        rng = _rng(seed, _IDENTITY, i)
        ident = live_mod.sample_identity(rng, labels=labels)
        ident["appearance"] = live_mod.sample_appearance(rng, ident["phenotype"]["age"])
        for e in range(expressions):
            expr = live_mod.sample_expression(_rng(seed, _EXPRESSION, i, e), list(FACIAL_ACTION_LABELS))
            units.append(Unit(f"anny_{i:04d}", "anny", split_of[i], e, ident, expr))
    if include_scan:
        look = live_mod.sample_appearance(_rng(seed, _SCAN), 0.6)
        skin_keys = ("skin_tone", "redness", "yellowness", "noise_seed")  # the scan is painted skin only
        ident = {"appearance": {k: look[k] for k in skin_keys}, "file": "pymeshlab:" +
                 "tests/sample_meshes/rangemaps/face000.ply", "target_faces": live_mod.SCAN_TARGET_FACES}
        units.append(Unit(SCAN_IDENTITY, "scan", "test", 0, ident, {}))
    for u in units:
        i = _number(u)
        u.spoofs["print_flat"] = spoof_mod.sample_print(_rng(seed, _SPOOF, i, u.expression_index, 1), curved=False)
        u.spoofs["print_curved"] = spoof_mod.sample_print(_rng(seed, _SPOOF, i, u.expression_index, 2), curved=True)
        u.spoofs["screen"] = spoof_mod.sample_screen(_rng(seed, _SPOOF, i, u.expression_index, 3))
    return units


def _number(u: Unit) -> int:
    """Stream number of a unit's identity: anny_0007 -> 7; the scan gets its own (never an anny number)."""
    return 2**31 - 1 if u.source == "scan" else int(u.identity.split("_")[1])


# ------------------------------------------------------------------------------------------ writers

def ply_bytes(mesh: LiveMesh, comment: str = "AttrSpace face mesh: metres, +Y up, face looking along +Z") -> bytes:
    """Binary little-endian PLY with float32 xyz, uchar rgb per vertex and int32 triangles: the smallest
    common format every mesh reader (trimesh, Blender, Open3D, MeshLab) takes with vertex colours."""
    v = np.asarray(mesh.vertices, dtype="<f4")
    rgb = (np.clip(mesh.colors, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"comment {comment}\n"
              f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {len(mesh.faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    vert = np.zeros(len(v), dtype=[("p", "<f4", 3), ("c", "u1", 3)])
    vert["p"], vert["c"] = v, rgb
    face = np.zeros(len(mesh.faces), dtype=[("n", "u1"), ("i", "<i4", 3)])
    face["n"], face["i"] = 3, mesh.faces
    return header.encode("ascii") + vert.tobytes() + face.tobytes()


def write_ply(path: Path, mesh: LiveMesh) -> None:
    write_bytes(path, ply_bytes(mesh))


def obj_text(mesh: TexturedMesh, mtl_name: str) -> str:
    """Wavefront OBJ with one material; positions to the micrometre, UVs to 1e-6."""
    lines = [f"# AttrSpace face spoof: metres, +Y up, facing +Z", f"mtllib {mtl_name}", "o spoof"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in mesh.uv]
    lines.append("usemtl spoof")
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in (mesh.faces + 1)]
    return "\n".join(lines) + "\n"


def mtl_text(texture_name: str) -> str:
    """A matte material whose diffuse colour is the texture (no specular: paper, or a matte display)."""
    return (f"newmtl spoof\nKa 0.000000 0.000000 0.000000\nKd 1.000000 1.000000 1.000000\n"
            f"Ks 0.000000 0.000000 0.000000\nNs 1.000000\nd 1.000000\nillum 1\nmap_Kd {texture_name}\n")


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG via Pillow at zlib level 6 (OpenCV's default level 1 makes textures ~40% larger)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_obj(folder: Path, stem: str, mesh: TexturedMesh) -> None:
    """``stem``.png, .mtl, then .obj: the OBJ, written last, marks the set complete."""
    write_bytes(folder / f"{stem}.png", png_bytes(mesh.texture))
    write_text(folder / f"{stem}.mtl", mtl_text(f"{stem}.png"))
    write_text(folder / f"{stem}.obj", obj_text(mesh, f"{stem}.mtl"))


def _files(kind: str, stem: str) -> list[str]:
    return [f"{stem}.ply"] if kind == "live" else [f"{stem}.obj", f"{stem}.mtl", f"{stem}.png"]


# ------------------------------------------------------------------------------------------ build

def build_face_meshes(out_dir: str | Path, identities: int = DEFAULT_IDENTITIES, seed: int = 0,
                      splits: tuple[float, float, float] = DEFAULT_SPLITS, include_scan: bool = True,
                      expressions: int = DEFAULT_EXPRESSIONS, progress: bool = True) -> Path:
    """Generate the face meshes into ``out_dir`` and return the path of its index (faces.json).

    ``identities`` anny identities with ``expressions`` expressions each, split by identity in the
    ``splits`` (train, val, test) fractions, plus the real scan in test when ``include_scan``. Each
    live mesh gets a flat print, a curved print and a screen spoof. The defaults (40 x 2 + the scan:
    324 meshes, ~100 MB) took 2.5 minutes on two shared cores once anny's model cache exists (the very
    first anny build on a machine adds about two minutes); a rerun of a finished build takes ~0.2 s."""
    out = Path(out_dir)
    args = _check_arguments(identities, seed, splits, include_scan, expressions)
    _claim_folder(out, args)
    units = plan_units(identities, expressions, seed, tuple(args["splits"]), include_scan)
    entries, identity_table = [], {}
    head = None
    for u in _progress(units, progress):
        folder = out / u.split
        identity_table.setdefault(u.identity, _identity_record(u))
        missing = [k for k in KINDS if not all((folder / f).is_file() for f in _files(k, u.stem(k)))]
        live = None
        if missing:  # a finished unit is indexed from its parameters alone: no anny, no rendering
            if u.source == "anny":
                head = head or live_mod.load_anny_head()
                live = live_mod.anny_live_mesh(head, u.identity_params, u.expression, u.identity_params["appearance"])
            else:
                live = live_mod.scan_live_mesh(u.identity_params["appearance"], u.identity_params["target_faces"])
        for kind in KINDS:
            stem, todo = u.stem(kind), kind in missing
            geometry = None
            if todo:
                _clear(folder, kind, stem)
            if kind == "live":
                if todo:
                    write_ply(folder / f"{stem}.ply", live)
            else:
                make = spoof_mod.screen_mesh if kind == "screen" else spoof_mod.print_mesh
                mesh, geometry = make(u.spoofs[kind], live if todo else None)
                if todo:
                    write_obj(folder, stem, mesh)
            entries.append(_entry(u, kind, geometry))
    index = {"format": "attrspace-face-meshes", "version": FORMAT_VERSION, "arguments": args,
             "units": "metres", "frame": "+Y up, face looking along +Z, live bounding-box centre at the origin",
             "identities": identity_table, "meshes": entries}
    for split in SPLITS:  # mesh lists in the render mesh mode's --meshes LIST.txt format
        names = [m["file"] for m in entries if m["split"] == split]
        write_text_if_changed(out / f"{split}.txt", f"# {split}: {len(names)} face meshes (index: {INDEX_NAME})\n"
                              + "".join(f"{n}\n" for n in names))
    path = out / INDEX_NAME
    write_text_if_changed(path, json.dumps(index, indent=1) + "\n")
    return path


def _check_arguments(identities, seed, splits, include_scan, expressions) -> dict:
    if not isinstance(identities, (int, np.integer)) or identities < 0:
        raise FaceMeshError(f"identities must be a whole number >= 0, got {identities!r}")
    if not isinstance(expressions, (int, np.integer)) or expressions < 1:
        raise FaceMeshError(f"expressions must be a whole number >= 1, got {expressions!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise FaceMeshError(f"seed must be a whole number >= 0, got {seed!r}")
    fr = [float(x) for x in splits]
    if len(fr) != 3 or any(x < 0 or not math.isfinite(x) for x in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise FaceMeshError(f"splits must be three fractions (train, val, test) >= 0 summing to 1, "
                            f"got {tuple(splits)!r}")
    if identities == 0 and not include_scan:
        raise FaceMeshError("nothing to build: identities=0 and include_scan=False")
    return {"identities": int(identities), "expressions": int(expressions), "seed": int(seed), "splits": fr,
            "include_scan": bool(include_scan), "version": FORMAT_VERSION}


def _claim_folder(out: Path, args: dict) -> None:
    """Record the arguments in a new folder; in an existing one, insist that they are the same."""
    for name in (BUILD_RECORD, INDEX_NAME):
        path = out / name
        if path.is_file():
            try:
                recorded = json.loads(path.read_text())
                recorded = recorded.get("arguments", recorded)
            except (OSError, ValueError) as exc:
                raise FaceMeshError(f"{path}: unreadable ({exc.__class__.__name__}); "
                                    "remove it or use another folder") from None
            if recorded != args:
                diff = ", ".join(f"{k}={recorded.get(k)!r} (now {v!r})" for k, v in args.items()
                                 if recorded.get(k) != v)
                raise FaceMeshError(f"{out} was built with other arguments: {diff}; "
                                    "use another folder or the same arguments")
    if not (out / BUILD_RECORD).is_file():
        write_json(out / BUILD_RECORD, {"arguments": args})


def _clear(folder: Path, kind: str, stem: str) -> None:
    for f in _files(kind, stem):
        remove_stale(folder / f)


def _progress(units: list[Unit], enabled: bool):
    if not enabled:
        return units
    from tqdm import tqdm
    return tqdm(units, desc="face meshes", unit="face", smoothing=0.1)


def _identity_record(u: Unit) -> dict:
    rec = {"source": u.source, "split": u.split}
    rec.update({k: v for k, v in u.identity_params.items()})
    return rec


def _entry(u: Unit, kind: str, geometry: dict | None) -> dict:
    """One index row: the mesh's files, labels and the parameters that made it (the identity's bulky
    face-shape and colour parameters are in ``identities``)."""
    stem = u.stem(kind)
    files = [f"{u.split}/{f}" for f in _files(kind, stem)]
    look = u.identity_params["appearance"]
    params = {"expression": u.expression, "skin_tone": look["skin_tone"]}
    if u.source == "anny":
        params["phenotype"] = u.identity_params["phenotype"]
    if kind != "live":
        params[kind] = u.spoofs[kind]
        params["geometry"] = geometry
    return {"file": files[0], "files": files, "identity": u.identity, "expression_index": u.expression_index,
            "split": u.split, "label": "live" if kind == "live" else "spoof", "kind": kind, "source": u.source,
            "live_file": f"{u.split}/{u.stem('live')}.ply", "params": params}


def load_face_index(path: str | Path) -> dict:
    """Read faces.json (a path to it or to its folder); the mesh paths become absolute."""
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FaceMeshError(f"{path}: cannot read the face index ({exc.__class__.__name__}: {exc})") from None
    if index.get("format") != "attrspace-face-meshes":
        raise FaceMeshError(f"{path}: not a face mesh index")
    for m in index["meshes"]:
        m["path"] = str(path.parent / m["file"])
    return index
