"""User meshes for the mesh mode (no ``bpy``): finding and loading the files, placing them in the world,
and the mesh-scene specs of a partition (docs/meshes.md).

* ``find_meshes(source)`` — the mesh files of ``--meshes``: a folder (searched recursively, sorted by
  relative path), one mesh file, or a ``.txt`` list of them. Partition p renders the p-th.
* ``load_mesh(path)`` — the file through trimesh (OBJ+MTL, PLY, GLB/glTF, OFF), scenes flattened with
  their node transforms, as ``LoadedMesh``: parts of triangles in the file's own coordinates with what
  colours them (an image texture through UVs, per-corner colours, or a flat colour).
* ``mesh_asset(path, units, up, front)`` — the ``MeshAsset`` a spec stores: sha256, unit scale, axis
  rotation and the world bounds the rigs aim at.
* ``sample_mesh_spec(asset, partition, sample, seed, views, rig, lighting)`` — one sample's
  ``MeshSceneSpec``: the rig's cameras and studio lighting drawn from (seed, partition, sample).

Colours are linear RGB everywhere after loading: 8-bit colours of PLY/OBJ files and every texture image are
sRGB-encoded (what viewers and Blender's importers assume), glTF's colour factors and COLOR_0 are linear
by the glTF specification.
"""
from __future__ import annotations

import colorsys
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import rigs
from .files import sha256
from .generator._util import count, log_uniform, vec
from .generator.config import Count, _Checked
from .spec import Light, LightingSpec, MeshAsset, MeshSceneSpec

SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".off")
LIST_SUFFIXES = (".txt", ".lst")
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
AUTO_MM_ABOVE = 10.0  # --units auto: a bounding box longer than this (in file units) is taken as millimetres
AXES = {f"{sign}{name}": np.eye(3)[i] * (1.0 if sign == "+" else -1.0) for i, name in enumerate("xyz") for sign in "+-"}
NEUTRAL = (0.5, 0.5, 0.5)  # linear grey of meshes without any colour (OFF files)
SHARP_ANGLE_DEG = 30.0  # edges folding more than this are shaded sharp (Blender's auto-smooth default)
_MESH_STREAM = 6  # keeps mesh-mode random streams apart from the generator's (its attribute codes are 1-5)


class MeshError(ValueError):
    """A mesh that cannot be used; the message is one line naming the file."""


# ------------------------------------------------------------------------------------- discovery
def find_meshes(source: str | Path) -> tuple[Path, list[Path]]:
    """(root, mesh files) of ``--meshes``: a folder's mesh files at any depth, sorted by their path
    relative to it (hidden files and folders skipped), a single mesh file, or a ``.txt``/``.lst`` list
    (one path per line, relative to the list's folder; ``#`` starts a comment). Paths are absolute but
    keep symbolic links, so the header's relative names stay those under ``root``."""
    source = Path(source)
    if not source.exists():
        raise MeshError(f"--meshes {source}: no such file or folder")
    if source.is_dir():
        root = source.absolute()
        found = [p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(root).parts)]
        if not found:
            raise MeshError(f"--meshes {source}: no mesh files ({' '.join(SUFFIXES)}) in this folder")
        return root, sorted(found, key=lambda p: p.relative_to(root).as_posix())
    if source.suffix.lower() in SUFFIXES:
        return source.parent.absolute(), [source.absolute()]
    if source.suffix.lower() in LIST_SUFFIXES:
        return source.parent.absolute(), _read_list(source)
    raise MeshError(f"--meshes {source}: not a folder, a mesh file ({' '.join(SUFFIXES)}) or a .txt list of them")


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MeshError(f"--meshes {path}: cannot read the list ({e})") from None
    files = []
    for number, line in enumerate(lines, 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        f = Path(entry) if Path(entry).is_absolute() else path.parent.absolute() / entry
        if not f.is_file():
            raise MeshError(f"{path}:{number}: {entry}: no such file")
        if f.suffix.lower() not in SUFFIXES:
            raise MeshError(f"{path}:{number}: {entry}: not a mesh file ({' '.join(SUFFIXES)})")
        files.append(f)
    if not files:
        raise MeshError(f"--meshes {path}: the list names no mesh files")
    return files


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX), or absolute where it lies outside: the name a partition
    header records, so that a moved data set resumes where its files are unchanged."""
    rel = os.path.relpath(path, root)
    return Path(path).as_posix() if rel.startswith("..") else Path(rel).as_posix()


# --------------------------------------------------------------------------------------- loading
@dataclass
class MeshPart:
    """Triangles of one material, in the file's coordinates. ``uv`` [N,2] (OpenGL convention: v up) goes
    with ``image`` (uint8 [H,W,3], row 0 at the top, sRGB); ``colors`` [T,3,3] are linear per-corner
    colours; ``factor`` (linear RGB) multiplies whichever of them is there, or is the colour alone."""
    vertices: np.ndarray  # [N,3] float64
    faces: np.ndarray  # [T,3] int64
    uv: np.ndarray | None = None
    image: np.ndarray | None = None
    colors: np.ndarray | None = None
    factor: tuple = NEUTRAL


@dataclass
class LoadedMesh:
    path: Path
    parts: list[MeshPart]

    @property
    def triangles(self) -> int:
        return sum(len(p.faces) for p in self.parts)

    def geometry(self) -> tuple[np.ndarray, np.ndarray]:
        """All parts' vertices [N,3] and triangles [T,3] (file coordinates), parts in order."""
        offsets = np.cumsum([0] + [len(p.vertices) for p in self.parts])
        return (np.concatenate([p.vertices for p in self.parts]),
                np.concatenate([p.faces + o for p, o in zip(self.parts, offsets)]))

    @property
    def appearance(self) -> str:
        if any(p.image is not None for p in self.parts):
            return "texture"
        if any(p.colors is not None for p in self.parts):
            return "vertex-colors"
        return "neutral" if all(p.factor == NEUTRAL for p in self.parts) else "color"


def load_mesh(path: str | Path) -> LoadedMesh:
    """Read a mesh file with trimesh (no processing: vertices, faces and UVs as the file has them) and
    flatten its scene graph. Raises MeshError naming the file: unreadable, no triangles, non-finite
    coordinates."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"{path}: no such file")
    try:
        scene = trimesh.load(str(path), force="scene", process=False)
        parts = []
        linear = path.suffix.lower() in (".glb", ".gltf")
        for node in sorted(scene.graph.nodes_geometry, key=str):  # a set: sorted for a stable part order
            transform, name = scene.graph[node]
            geom = scene.geometry[name]
            if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
                parts.append(_part(geom, transform, linear))
    except Exception as e:  # noqa: BLE001  trimesh raises anything on a malformed file
        raise MeshError(f"{path}: cannot read it as a mesh ({_one_line(e)})") from None
    if not parts:
        raise MeshError(f"{path}: no triangles (an empty mesh or a point cloud)")
    if not all(p.faces.min() >= 0 and p.faces.max() < len(p.vertices) for p in parts):
        raise MeshError(f"{path}: has faces naming vertices it does not have")
    if not all(np.isfinite(p.vertices).all() for p in parts):
        raise MeshError(f"{path}: has non-finite vertex coordinates")
    return LoadedMesh(path=path, parts=parts)


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split()) or "no details"
    return f"{type(e).__name__}: {text[:200]}"


def _part(geom, transform: np.ndarray, linear_colors: bool) -> MeshPart:
    """One trimesh geometry as a part, its scene-graph transform applied."""
    from trimesh.visual import ColorVisuals, TextureVisuals

    vertices = np.asarray(geom.vertices, np.float64) @ transform[:3, :3].T + transform[:3, 3]
    faces = np.asarray(geom.faces, np.int64)
    part = MeshPart(vertices=vertices, faces=faces)
    visual = geom.visual
    if isinstance(visual, TextureVisuals):
        part.image, part.factor = _material_colour(visual.material)
        uv = visual.uv
        if part.image is not None and uv is not None and len(uv) == len(vertices):
            part.uv = np.asarray(uv, np.float64)
        else:
            part.image = None
        extra = visual.vertex_attributes.get("color")  # glTF COLOR_0 beside a material
        if extra is not None and len(extra) == len(vertices):
            part.colors = _corner_colors(_unit_colors(extra), faces, True)
    elif isinstance(visual, ColorVisuals) and visual.kind in ("vertex", "face"):
        if visual.kind == "vertex":
            part.colors = _corner_colors(visual.vertex_colors / 255.0, faces, linear_colors)
        else:
            per_face = visual.face_colors[:, :3] / 255.0
            per_face = per_face if linear_colors else srgb_to_linear(per_face)
            part.colors = np.repeat(per_face[:, None], 3, axis=1)
        part.factor = (1.0, 1.0, 1.0)
    return part


def _material_colour(material) -> tuple[np.ndarray | None, tuple]:
    """(texture image, linear factor) of a trimesh material. glTF: the texture times the base colour
    factor. OBJ: ``map_Kd`` replaces ``Kd`` (Blender's importer does the same; exporters write Kd 0.8 or
    0.4 beside a texture), and ``Kd`` alone is taken as linear, as Blender's importer takes it."""
    from trimesh.visual.material import PBRMaterial, SimpleMaterial

    if isinstance(material, PBRMaterial):
        factor = material.baseColorFactor
        factor = (1.0, 1.0, 1.0) if factor is None else vec(np.asarray(factor[:3]) / 255.0)
        return _image_array(material.baseColorTexture), factor
    if isinstance(material, SimpleMaterial):
        image = _image_array(material.image)
        if image is not None:
            return image, (1.0, 1.0, 1.0)
        return None, vec(np.asarray(material.diffuse[:3]) / 255.0)
    return None, NEUTRAL


def _image_array(image) -> np.ndarray | None:
    if image is None:
        return None
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), np.uint8))  # alpha is not used


def _unit_colors(colors) -> np.ndarray:
    """Colours of any accessor type as floats in [0, 1]."""
    colors = np.asarray(colors)
    if np.issubdtype(colors.dtype, np.integer):
        colors = colors / float(np.iinfo(colors.dtype).max)
    return np.asarray(colors, np.float64)


def _corner_colors(colors: np.ndarray, faces: np.ndarray, linear: bool) -> np.ndarray:
    rgb = np.asarray(colors, np.float64)[:, :3]
    return (rgb if linear else srgb_to_linear(rgb))[faces]


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The IEC 61966-2-1 decoding curve (inverse of ``render.files.linear_to_srgb8``'s)."""
    c = np.clip(np.asarray(c, np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def merge_coincident(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices at exactly the same position made one, faces re-indexed. Loaders split vertices along
    UV seams and between parts; merged, smooth shading runs across the seams as on the scanned surface."""
    unique, inverse = np.unique(vertices, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)[faces]


def corner_normals(vertices: np.ndarray, faces: np.ndarray, sharp_deg: float = SHARP_ANGLE_DEG) -> np.ndarray:
    """Smooth-shading normals [T,3,3] per triangle corner: the corner-angle-weighted mean of the normals
    of the triangles around the vertex that fold less than ``sharp_deg`` against this one. Close to
    Blender's smooth shading with edges sharper than ``sharp_deg`` marked sharp (which the backend uses);
    for renderers without Blender. Expects merged vertices (``merge_coincident``)."""
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face_n /= np.maximum(np.linalg.norm(face_n, axis=-1, keepdims=True), 1e-30)
    edges = [tri[:, (k + 1) % 3] - tri[:, k] for k in range(3)]
    angle = np.stack([_angle(edges[k], -edges[(k + 2) % 3]) for k in range(3)], -1)  # [T,3]
    corner_vertex = faces.ravel()
    order = np.argsort(corner_vertex, kind="stable")
    _, starts, sizes = np.unique(corner_vertex[order], return_index=True, return_counts=True)
    group_size = np.repeat(sizes, sizes)  # for each sorted corner: how many corners share its vertex
    a = np.repeat(np.arange(len(order)), group_size)  # every ordered pair of corners of one vertex
    within = np.arange(len(a)) - np.repeat(np.cumsum(group_size) - group_size, group_size)  # 0 .. size-1
    b = np.repeat(np.repeat(starts, sizes), group_size) + within
    ca, cb = order[a], order[b]
    ta, tb = ca // 3, cb // 3
    keep = np.einsum("ij,ij->i", face_n[ta], face_n[tb]) >= math.cos(math.radians(sharp_deg)) - 1e-9
    out = np.zeros((len(corner_vertex), 3))
    np.add.at(out, ca[keep], angle.ravel()[cb[keep], None] * face_n[tb[keep]])
    norm = np.linalg.norm(out, axis=-1, keepdims=True)
    out = np.where(norm > 1e-12, out / np.maximum(norm, 1e-12), face_n[np.arange(len(out)) // 3])
    return out.reshape(-1, 3, 3)


def _angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), np.einsum("ij,ij->i", u, v))


# ------------------------------------------------------------------------------------ placement
def axis_rotation(up: str, front: str) -> np.ndarray:
    """The rotation [3,3] taking the file's ``up`` axis to world +z and its ``front`` axis to world -y
    (x = y cross z keeps it proper). The defaults +y/+z (OBJ, glTF, PLY from most scanners) give
    (x, y, z) -> (x, -z, y), the conversion Blender's glTF importer makes."""
    for option, axis in (("--up", up), ("--front", front)):
        if axis not in AXES:
            raise MeshError(f"{option} {axis!r}: choose one of {', '.join(AXES)}")
    if abs(float(AXES[up] @ AXES[front])) > 0.5:
        raise MeshError(f"--up {up} --front {front}: the two axes must be perpendicular")
    z, y = AXES[up], -AXES[front]  # the file directions that become world +z and world +y
    return np.stack([np.cross(y, z), y, z])  # rows: the file direction of each world axis


def unit_scale(units: str, extent: float) -> tuple[str, float]:
    """(units, metres per file unit); ``auto`` is mm when the bounding box's longest side is over
    ``AUTO_MM_ABOVE`` file units (faces and scanners' output in mm), else m. cm is never guessed."""
    if units == "auto":
        units = "mm" if extent > AUTO_MM_ABOVE else "m"
    if units not in UNITS:
        raise MeshError(f"--units {units!r}: choose one of auto, {', '.join(UNITS)}")
    return units, UNITS[units]


def to_world(asset: MeshAsset, vertices: np.ndarray) -> np.ndarray:
    """File coordinates [N,3] -> world metres, as the renderers place the mesh."""
    return asset.scale * (np.asarray(vertices, np.float64) @ np.asarray(asset.rotation).T)


_ASSETS: dict = {}  # (path, size, mtime, units, up, front) -> MeshAsset: loads and hashes once per process


def mesh_asset(path: str | Path, units: str = "auto", up: str = "+y", front: str = "+z") -> MeshAsset:
    """The ``MeshAsset`` of a mesh file: loads it (MeshError if it cannot be used), hashes it, converts
    its units and axes and measures its world bounds. Cached per process while the file is unchanged."""
    path = Path(path).absolute()
    rotation = axis_rotation(up, front)
    try:
        stat = path.stat()
    except OSError as e:
        raise MeshError(f"{path}: cannot read it ({e.strerror})") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns, units, up, front)
    if key not in _ASSETS:
        loaded = load_mesh(path)
        vertices, faces = loaded.geometry()
        used = vertices[np.unique(faces)]  # vertices no triangle uses do not count for the bounds
        name, scale = unit_scale(units, float(np.ptp(used, axis=0).max()))
        world = scale * (used @ rotation.T)
        lo, hi = world.min(0), world.max(0)
        center = (lo + hi) / 2
        radius = float(np.linalg.norm(world - center, axis=-1).max())
        if not radius > 0:
            raise MeshError(f"{path}: all its vertices are at one point")
        _ASSETS[key] = MeshAsset(path=str(path), sha256=sha256(path), units=name, scale=scale, up=up,
                                 front=front, rotation=tuple(vec(r) for r in rotation), center=vec(center),
                                 extent=vec(hi - lo), radius=radius, triangles=loaded.triangles,
                                 appearance=loaded.appearance)
    return _ASSETS[key]


def load_for_render(asset: MeshAsset) -> LoadedMesh:
    """The mesh of ``asset`` for a renderer, refusing a file that changed since the spec was drawn."""
    path = Path(asset.path)
    if not path.is_file():
        raise MeshError(f"{path}: no such file (the scene's mesh)")
    if sha256(path) != asset.sha256:
        raise MeshError(f"{path}: changed since its partition was started (sha256 differs); "
                        "restore it or render into another --out")
    return load_mesh(path)


# ------------------------------------------------------------------------------------- lighting
Range = tuple[float, float]


@dataclass(frozen=True)
class StudioLighting(_Checked):
    """Studio-style lights around the mesh, redrawn every sample. Distances are in bounding radii of the
    mesh; each light's power is set from the irradiance it gives at the mesh centre, so the exposure does
    not depend on the mesh's size or the light's distance."""
    lights: Count = (2, 4)  # how many
    p_area: float = 0.7  # an area light (a square softbox facing the centre), else a point light
    irradiance: Range = (0.3, 2.0)  # W/m² at the centre, per light, log-U
    key_azimuth_deg: float = 60.0  # the first light stands within this azimuth of the front; others anywhere
    elevation_deg: Range = (-10.0, 60.0)  # above the centre's horizontal plane, U
    distance: Range = (3.0, 6.0)  # from the centre, in bounding radii, U (> 1: outside the mesh)
    area_size: Range = (0.3, 1.0)  # softbox side, times its distance, U
    point_radius: Range = (0.02, 0.1)  # point light radius (shadow softness), times its distance, U
    temperature_k: Range = (2700.0, 7500.0)  # colour temperature, U (tungsten to overcast daylight)
    background_value: Range = (0.03, 0.5)  # world background: HSV value (linear), U; hue uniform
    background_saturation: Range = (0.0, 0.25)  # and saturation, U

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive("irradiance")
        if self.lights[1] < 1:
            raise ValueError(f"lights: {list(self.lights)} must allow at least one light")
        if self.distance[0] <= 1.0:
            raise ValueError(f"distance: {list(self.distance)} must be > 1 (bounding radii: outside the mesh)")
        if not 1667.0 <= self.temperature_k[0] <= self.temperature_k[1] <= 25000.0:
            raise ValueError(f"temperature_k: {list(self.temperature_k)} must lie in [1667, 25000]")


def sample_studio_lighting(rng: np.random.Generator, center, radius: float,
                           cfg: StudioLighting = StudioLighting()) -> LightingSpec:
    """Lights of varied direction, colour temperature and power, aimed at ``center``, and a world
    background colour (strength 1: it is also the ambient light)."""
    center = np.asarray(center, float)
    front = math.atan2(rigs.FRONT[1], rigs.FRONT[0])
    lights = []
    for i in range(count(rng, cfg.lights)):
        area = rng.random() < cfg.p_area
        spread = math.radians(cfg.key_azimuth_deg) if i == 0 else math.pi
        azimuth = front + rng.uniform(-spread, spread)
        toward = rigs._direction(azimuth, math.radians(rng.uniform(*cfg.elevation_deg)))
        distance = rng.uniform(*cfg.distance) * radius
        color = kelvin_to_rgb(rng.uniform(*cfg.temperature_k))
        irradiance = log_uniform(rng, cfg.irradiance) / luminance(color)
        size = rng.uniform(*(cfg.area_size if area else cfg.point_radius)) * distance
        # Blender's watts: a point light gives P / (4 pi d²) W/m² at d, a one-sided area light about
        # P / (pi d²) on its axis (far field)
        power = irradiance * distance ** 2 * (math.pi if area else 4 * math.pi)
        lights.append(Light(kind="area" if area else "point", position=vec(center + distance * toward),
                            direction=vec(-toward), color=vec(color), power=float(power), size=float(size)))
    background = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*cfg.background_saturation),
                                     rng.uniform(*cfg.background_value))
    return LightingSpec(lights=tuple(lights), sky_color=vec(background), sky_strength=1.0)


def kelvin_to_rgb(kelvin: float) -> np.ndarray:
    """Linear sRGB of a black body at ``kelvin`` (1667-25000 K), brightest channel 1: the Planckian
    locus in CIE xy by Kim et al.'s cubic approximation, then XYZ (Y = 1) to linear sRGB (D65)."""
    t = float(kelvin)
    if t <= 4000.0:
        x = -0.2661239e9 / t ** 3 - 0.2343589e6 / t ** 2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t ** 3 + 2.1070379e6 / t ** 2 + 0.2226347e3 / t + 0.240390
    if t <= 2222.0:
        y = -1.1063814 * x ** 3 - 1.34811020 * x ** 2 + 2.18555832 * x - 0.20219683
    elif t <= 4000.0:
        y = -0.9549476 * x ** 3 - 1.37418593 * x ** 2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x ** 3 - 5.87338670 * x ** 2 + 3.75112997 * x - 0.37001483
    xyz = np.array([x / y, 1.0, (1.0 - x - y) / y])
    rgb = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]) @ xyz
    rgb = np.clip(rgb, 0.0, None)
    return rgb / rgb.max()


def luminance(rgb) -> float:
    """Relative luminance Y of linear sRGB."""
    return float(np.dot([0.2126, 0.7152, 0.0722], rgb))


# ------------------------------------------------------------------------------------------ specs
def mesh_rng(seed: int, partition: int, sample: int, purpose: str) -> np.random.Generator:
    """Independent stream per (seed, mesh index, sample, purpose): camera and lighting draws do not
    shift each other, so changing a rig setting keeps every sample's lights."""
    code = {"camera": 0, "lighting": 1}[purpose]
    return np.random.default_rng(np.random.SeedSequence([seed, _MESH_STREAM, partition, sample, code]))


def sample_mesh_spec(asset: MeshAsset, partition: int, sample: int, seed: int, views: int, rig: rigs.RigConfig,
                     lighting: StudioLighting = StudioLighting(), aspect: float = 1.0) -> MeshSceneSpec:
    """Sample ``sample`` of the partition of mesh ``partition``: a fresh rig placement and fresh
    lighting around the unchanged mesh. ``aspect`` = image height / width."""
    camera = rigs.place_cameras(rig, mesh_rng(seed, partition, sample, "camera"), asset.center, asset.radius,
                                views, aspect)
    light = sample_studio_lighting(mesh_rng(seed, partition, sample, "lighting"), asset.center, asset.radius, lighting)
    return MeshSceneSpec(mesh=asset, lighting=light, camera=camera)
