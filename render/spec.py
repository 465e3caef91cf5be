"""Scene specifications: plain, seeded dataclasses that round-trip through JSON.

A ``SceneSpec`` is everything the Blender backend needs to render one sample, split into the four
attributes AttrSpace controls — geometry, texture, lighting, camera — so that a partition can redraw
one part and keep the others fixed. Nothing here imports ``bpy``; all units are scene units (the room
is normalised so its longest horizontal side spans [-1, 1]), angles are radians unless a name says
``_deg``, and the world is Z-up (Blender's convention).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path

GENERATOR_VERSION = "attrspace-synth-2"  # 2: wide baselines for mixed
ATTRIBUTES = ("texture", "geometry", "camera", "lighting")
RENDER_ATTRIBUTES = ATTRIBUTES + ("mixed",)

Vec3 = tuple[float, float, float]


# ----------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Heightfield:
    """Displacement of every face of a shape along its normal: a ``grid``² field of uniform random
    heights, upsampled (cubic) to ``resolution``² and tapered to zero at the face borders so that
    adjacent faces stay connected. ``amplitude`` is in scene units."""
    seed: int
    amplitude: float
    grid: int = 5
    resolution: int = 36


@dataclass(frozen=True)
class Shape:
    """One object. ``size`` is the full extent of its un-displaced local bounding box; the mesh is built
    around the origin and placed by ``center`` and XYZ Euler ``rotation``. ``uid`` is stable across
    samples of a partition and doubles as the instance id written to the mask."""
    uid: int
    kind: str  # cube | ellipsoid | cylinder
    role: str  # large | small | stacked | roof | wall | frame | slab | wall_stick | float_stick
    center: Vec3
    size: Vec3
    rotation: Vec3 = (0.0, 0.0, 0.0)
    heightfield: Heightfield | None = None
    wireframe: float = 0.0  # wireframe-modifier thickness; 0 = solid
    glass: bool = False

    def mesh_key(self) -> tuple:
        """What the mesh itself depends on (a change here needs a rebuild, not a transform update)."""
        return (self.kind, self.size, self.heightfield, self.wireframe)


@dataclass(frozen=True)
class Window:
    """A rectangular opening in wall ``wall`` (0: -y, 1: +x, 2: +y, 3: -x), ``center`` = (u, z) along the
    wall, optional glass pane."""
    wall: int
    center: tuple[float, float]
    size: tuple[float, float]
    glass: bool


@dataclass(frozen=True)
class GeometrySpec:
    room: Vec3  # full extents (x, y, z); the floor is at z = -room[2] / 2
    unit: float  # scene units per MegaSynth room unit (the normalisation factor)
    shapes: tuple[Shape, ...] = ()
    window: Window | None = None


# ------------------------------------------------------------------------------------------ texture
PATTERNS = ("noise", "voronoi", "wave", "bricks", "checker", "magic", "gradient", "plain")


@dataclass(frozen=True)
class Material:
    """A procedural PBR material: ``pattern`` mixes ``color_a`` and ``color_b`` (linear RGB); ``bump``
    perturbs shading normals only (never the geometry, so depth and normals do not change).
    ``image`` (a path) replaces the pattern with a user texture, box-projected."""
    pattern: str
    color_a: Vec3
    color_b: Vec3
    scale: float
    detail: float
    roughness: float
    metallic: float
    bump: float
    image: str | None = None


@dataclass(frozen=True)
class Glass:
    ior: float
    tint: Vec3
    roughness: float


@dataclass(frozen=True)
class TextureSpec:
    """A scene's material set. Shapes draw their material by a hash of (``assign_seed``, uid), so a
    geometry change does not need a texture change and vice versa."""
    materials: tuple[Material, ...]
    floor: int
    walls: int
    ceiling: int
    assign_seed: int
    glass: Glass

    def material_index(self, uid: int) -> int:
        # splitmix-style integer hash: stable across Python versions (unlike hash())
        x = (uid * 0x9E3779B97F4A7C15 + self.assign_seed * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
        x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
        return int(x % len(self.materials))


# ----------------------------------------------------------------------------------------- lighting
@dataclass(frozen=True)
class Light:
    """``kind``: area (square, ``size`` side) | sun | point (``size`` radius) | bulb (an emissive
    sphere of radius ``size``). ``direction`` is where area and sun lights point. ``power`` is watts
    for area and point lights, W/m² strength for suns, emission strength for bulbs."""
    kind: str
    position: Vec3
    direction: Vec3
    color: Vec3
    power: float
    size: float


@dataclass(frozen=True)
class LightingSpec:
    lights: tuple[Light, ...]
    sky_color: Vec3  # seen through windows; also a weak ambient term
    sky_strength: float


# ------------------------------------------------------------------------------------------- camera
@dataclass(frozen=True)
class View:
    """A pinhole camera looking from ``position`` at ``look_at``, rolled by ``roll`` about its optical
    axis, with horizontal field of view ``fov_deg`` and the principal point at the image centre."""
    position: Vec3
    look_at: Vec3
    fov_deg: float
    roll: float = 0.0


@dataclass(frozen=True)
class CameraSpec:
    views: tuple[View, ...]
    rig: str  # how the views were laid out (orbit | line | forward | scatter | room)
    baseline: float  # distance between the two farthest camera centres, scene units


# -------------------------------------------------------------------------------------------- scene
@dataclass(frozen=True)
class SceneSpec:
    geometry: GeometrySpec
    texture: TextureSpec
    lighting: LightingSpec
    camera: CameraSpec
    generator: str = GENERATOR_VERSION

    def part(self, attribute: str):
        return getattr(self, attribute)

    def replace(self, **parts) -> "SceneSpec":
        return dataclasses.replace(self, **parts)

    # JSON round trip ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "SceneSpec":
        return from_plain(cls, data)

    @classmethod
    def from_json(cls, text: str) -> "SceneSpec":
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> "SceneSpec":
        return cls.from_json(Path(path).read_text())


# ------------------------------------------------------------------------------------- mesh scenes
MESH_GENERATOR_VERSION = "attrspace-mesh-1"
MESH_UID = 100  # the instance id of a user mesh in the mask (ids >= 100 are objects, as for shapes)


@dataclass(frozen=True)
class MeshAsset:
    """A user-supplied mesh file as a mesh scene places it (render/meshes.py loads it). World
    coordinates are ``scale * rotation @ file coordinates``: metres, Z up (+``up`` of the file becomes
    +z, +``front`` becomes -y, Blender's front view). Nothing is translated, so world coordinates are the
    file's own up to units and axes. ``center``, ``extent`` and ``radius`` (the largest distance of a
    vertex from ``center``) are in world metres; the rigs aim at ``center`` and size their distances by
    ``radius``. ``sha256`` is the file's, checked again when it is rendered."""
    path: str
    sha256: str
    units: str  # m | cm | mm: one file unit ("auto" is resolved before it gets here)
    scale: float  # metres per file unit
    up: str  # +x | -x | +y | -y | +z | -z
    front: str
    rotation: tuple[Vec3, Vec3, Vec3]  # rows of the file-to-world rotation
    center: Vec3
    extent: Vec3
    radius: float
    triangles: int
    appearance: str  # texture | vertex-colors | color | neutral: what the material shows
    roughness: float = 0.6  # Principled BSDF roughness of every part (scans carry no reliable one)
    uid: int = MESH_UID


class _JsonSpec:
    """JSON round trip of a frozen spec dataclass (as ``SceneSpec`` does it)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict):
        return from_plain(cls, data)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path):
        return cls.from_json(Path(path).read_text())


@dataclass(frozen=True)
class MeshSceneSpec(_JsonSpec):
    """One sample of a mesh partition: the mesh (never changes within a partition), studio lights and a
    world background (``lighting.sky_color`` x ``sky_strength``: seen behind the mesh and lighting it
    as ambient), and the views of one rig (``camera.rig`` names it)."""
    mesh: MeshAsset
    lighting: LightingSpec
    camera: CameraSpec
    generator: str = MESH_GENERATOR_VERSION


# ------------------------------------------------------------------------------- transparent scenes
TRANSPARENT_GENERATOR_VERSION = "attrspace-transparent-1"
TABLE_UID = 8  # the instance id of the table in the mask (room parts are 1-6, objects >= 100)
TRANSMISSIVE_KINDS = ("glass", "plastic")
TABLE_OBJECT_KINDS = ("bottle", "glass", "bowl", "vase", "jar", "sphere", "cylinder", "box")


@dataclass(frozen=True)
class Transmissive:
    """A see-through material. ``glass``: Cycles' Glass BSDF (refraction and reflection by Fresnel) of
    colour ``tint``; ``plastic``: a Principled BSDF with base colour ``tint`` and transmission weight
    ``transmission`` (below 1 it is partly diffuse, like frosted or milky plastic). ``roughness`` blurs
    refraction and reflection; ``absorption`` (1/m) adds a Volume Absorption of colour ``tint`` inside
    the object, so thicker glass is more deeply tinted (Beer-Lambert); 0 = none."""
    kind: str  # glass | plastic
    ior: float
    roughness: float
    tint: Vec3
    transmission: float = 1.0
    absorption: float = 0.0


@dataclass(frozen=True)
class TableObject:
    """One object on the table. ``kind``: a vessel (bottle | glass | bowl | vase | jar: a surface of
    revolution about the local z axis, ``profile`` its outer radius (r, z) from the bottom, z = 0, up to
    the rim, ``wall`` its wall thickness and ``bottom`` the thickness of its floor; open at the top) or
    a solid (sphere | cylinder | box, ``size`` its full extents). The mesh is built centred on its local
    bounding box (``size``: full extents, metres) and placed by ``center`` (world) and the XYZ Euler
    ``rotation``. Transparent objects carry ``transmissive``; the others take ``materials[material]``
    of the scene (``heightfield`` displaces opaque solids as in procedural scenes). ``uid`` >= 100 is the
    instance id written to the mask; it is stable across the samples of a partition."""
    uid: int
    kind: str
    center: Vec3
    size: Vec3
    rotation: Vec3 = (0.0, 0.0, 0.0)
    profile: tuple[tuple[float, float], ...] = ()
    wall: float = 0.0
    bottom: float = 0.0
    material: int = 0
    transmissive: Transmissive | None = None
    heightfield: Heightfield | None = None

    @property
    def transparent(self) -> bool:
        return self.transmissive is not None

    def mesh_key(self) -> tuple:
        """What the mesh itself depends on (a change here needs a rebuild, not a transform update)."""
        return (self.kind, self.size, self.profile, self.wall, self.bottom, self.heightfield)


@dataclass(frozen=True)
class Table:
    """``slab``: a top of ``size`` (x, y, thickness) on four square legs of side ``leg`` (inset by
    ``leg``); ``box``: one solid block from the floor to the top. Axis-aligned, centred at ``center``
    (x, y); its top surface is at height ``height`` above the floor (z = 0)."""
    kind: str  # slab | box
    center: tuple[float, float]
    size: Vec3
    height: float
    leg: float
    material: int

    @property
    def top(self) -> float:
        return self.height


@dataclass(frozen=True)
class Room:
    """An axis-aligned room of ``size`` (x, y, z) metres around the vertical axis, floor at z = 0;
    without a ceiling (``ceiling`` False) the world background is seen and lights the room from above.
    ``floor``, ``walls``, ``ceiling_material``: indices into the scene's materials."""
    size: Vec3
    ceiling: bool
    floor: int
    walls: int
    ceiling_material: int


@dataclass(frozen=True)
class TransparentSceneSpec(_JsonSpec):
    """One sample of a transparent-object partition (docs/transparent.md): a table in a room, opaque
    clutter and transparent objects on it, lights and the views of one hand-held trajectory. World:
    metres, Z up, floor at z = 0. ``transparent_ids`` are the uids of the transparent objects (the mask
    ids whose pixels the ``transparent/`` masks mark); it must list exactly those."""
    room: Room
    table: Table
    objects: tuple[TableObject, ...]
    materials: tuple[Material, ...]
    lighting: LightingSpec
    camera: CameraSpec
    transparent_ids: tuple[int, ...]
    generator: str = TRANSPARENT_GENERATOR_VERSION

    def __post_init__(self) -> None:
        want = tuple(sorted(o.uid for o in self.objects if o.transparent))
        if tuple(self.transparent_ids) != want:
            raise ValueError(f"transparent_ids: {list(self.transparent_ids)} are not the transparent objects' "
                             f"uids {list(want)}")


def transparent_ids(spec) -> tuple[int, ...]:
    """The mask ids of see-through surfaces in a scene: a transparent scene's ``transparent_ids``; in a
    procedural scene the glass shapes and the window pane (id 7); none in a mesh scene."""
    if isinstance(spec, TransparentSceneSpec):
        return tuple(spec.transparent_ids)
    if isinstance(spec, SceneSpec):
        ids = sorted(sh.uid for sh in spec.geometry.shapes if sh.glass)
        window = spec.geometry.window
        return tuple(([7] if window is not None and window.glass else []) + ids)
    return ()


def load_scene(path: str | Path) -> "SceneSpec | MeshSceneSpec | TransparentSceneSpec":
    """A sample's ``scene.json``: a procedural ``SceneSpec``, a ``MeshSceneSpec`` (it has ``mesh``) or a
    ``TransparentSceneSpec`` (it has ``table``)."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and "mesh" in data:
        return MeshSceneSpec.from_dict(data)
    if isinstance(data, dict) and "table" in data:
        return TransparentSceneSpec.from_dict(data)
    return SceneSpec.from_dict(data)


@dataclass(frozen=True)
class RenderSettings:
    """How a spec becomes pixels (not part of the scene: the same spec renders at any size)."""
    width: int = 126
    height: int = 126
    spp: int = 16
    denoise: bool = False
    max_bounces: int = 4
    threads: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def from_plain(tp, data, path: str = ""):
    """A value of type ``tp`` (nested frozen dataclasses, tuples, optionals, numbers, strings, booleans)
    from its JSON form (``dataclasses.asdict`` then ``json``), with every type checked. Dataclass fields
    left out take their defaults. Errors are one ValueError naming the key path (``camera.fov_deg: …``)."""
    where = path.rstrip(".")
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ValueError(f"{where or tp.__name__}: expected an object, got {describe(data)}")
        path = f"{where}." if where else ""
        names = [f.name for f in dataclasses.fields(tp)]
        for key in data:
            if key not in names:
                raise ValueError(unknown_key(key, names, path))
        hints = typing.get_type_hints(tp)
        values = {key: from_plain(hints[key], value, f"{path}{key}") for key, value in data.items()}
        try:
            return tp(**values)
        except ValueError as e:  # a config's own range checks
            raise ValueError(f"{path}{e}") from None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        return from_plain(next(a for a in args if a is not type(None)), data, path)
    if origin is tuple:
        if not isinstance(data, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {describe(data)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], v, f"{where}[{i}]") for i, v in enumerate(data))
        if len(data) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {len(data)}")
        return tuple(from_plain(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
    if tp is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        if not math.isfinite(data):
            raise ValueError(f"{where}: expected a finite number, got {data!r}")
        return float(data)
    if tp is int and isinstance(data, int) and not isinstance(data, bool):
        return data
    if tp in (str, bool) and isinstance(data, tp):
        return data
    raise ValueError(f"{where}: expected {_TYPE_NAMES.get(tp, getattr(tp, '__name__', tp))}, got {describe(data)}")


_TYPE_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}


def unknown_key(key, known, path: str = "") -> str:
    """The message for an unknown key at ``path``, suggesting the closest known one."""
    known = [str(k) for k in known]
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        return f"{path}{key}: unknown key (did you mean {path}{close[0]}?)"
    return f"{path}{key}: unknown key" + ("" if path else f"; the keys are {', '.join(known)}")


def describe(value) -> str:
    """A JSON value as an error message shows it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list, tuple)):
        return {dict: "an object", list: "a list", tuple: "a list"}[type(value)]
    return repr(value)


__all__ = [n for n in dir() if not n.startswith("_") and n not in ("annotations", "dataclass", "field")]
