"""The generator's parameters, one frozen config per attribute, composed by ``GeneratorConfig``.

Conventions of the comments: U(a, b) is uniform, log-U(a, b) log-uniform; a count ``(a, b)`` is an
inclusive integer range drawn uniformly, a ``max_*`` count is drawn as randint(max // 2, max); ``raw``
lengths are MegaSynth room units (a room is 17–30 wide), multiplied by the scene's ``unit`` so that the
room's longer horizontal side spans [-1, 1]; other lengths are scene units; ``p_*`` are probabilities.
The defaults are MegaSynth's published distributions where it gives them (docs/attributes.md).

``GeneratorConfig.override({"lighting": {"p_area_pair": 0.5}})`` and ``load_generator_config(path)``
(a JSON file of such partial overrides) change a few numbers and keep the rest.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..spec import PATTERNS, describe, from_plain, unknown_key

RIGS = ("orbit", "line", "forward", "scatter", "room")  # the camera rigs the generator lays out
Range = tuple[float, float]
Count = tuple[int, int]


class _Checked:
    """Range and probability checks shared by the attribute configs (run on construction)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name}: {value!r} is not a probability in [0, 1]")
            if hints[f.name] in (Range, Count) and value[0] > value[1]:
                raise ValueError(f"{f.name}: {list(value)} is not a range (low > high)")
            if hints[f.name] == Count and value[0] < 0:
                raise ValueError(f"{f.name}: {list(value)}: counts must be >= 0")
            if hints[f.name] is int and value < 0:
                raise ValueError(f"{f.name}: {value!r} must be >= 0")

    def _check_positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name}: {list(getattr(self, name))} must be > 0 (log-uniform)")

    def _check_choice(self, names: str, probabilities: str) -> None:
        n, p = getattr(self, names), getattr(self, probabilities)
        if len(n) != len(p) or not n:
            raise ValueError(f"{probabilities}: {len(p)} probabilities for {len(n)} {names}")
        if min(p) < 0 or abs(sum(p) - 1.0) > 1e-6:
            raise ValueError(f"{probabilities}: {list(p)} must be >= 0 and sum to 1")


@dataclass(frozen=True)
class GeometryConfig(_Checked):
    """The room shell (size, window) and the shapes in it."""
    # room shell: held fixed within a geometry partition
    room_side: Range = (17.0, 30.0)         # raw; U, each horizontal side (x, y)
    room_height: Range = (10.0, 15.0)       # raw; U
    p_window: float = 0.8                   # the room has a window (in one of the 4 walls, U)
    window_width: Range = (3.0, 8.0)        # raw; U, then at most window_max_width × the wall's length
    window_max_width: float = 0.7           # fraction of the wall's length
    window_height: Range = (3.0, 6.0)       # raw; U, then at most window_max_height × the room's height
    window_max_height: float = 0.6          # fraction of the room's height
    window_side_margin: float = 0.05        # scene units kept between the window and the wall's ends
    window_bottom_margin: float = 0.1       # fraction of the room's height kept below the window
    window_top_margin: float = 0.05         # fraction of the room's height kept above the window
    p_window_glass: float = 0.5             # the window has a glass pane
    # boxes on the floor plan; each is filled with primitives
    box_max: float = 0.9                    # a box spans at most this fraction of the room per axis
    max_large: int = 5                      # boxes standing on the floor
    large_size: Range = (4.0, 8.0)          # raw; U per axis
    max_small: int = 8                      # small boxes: every second one stands on a large box
    small_size: Range = (1.5, 3.5)          # raw; U per axis
    max_roof: int = 4                       # boxes hanging from the ceiling
    roof_size: Range = (2.0, 5.0)           # raw; U per axis
    max_wall: int = 6                       # boxes against a wall, at a U height
    wall_size: Range = (1.5, 4.0)           # raw; U per axis
    prims_large: Count = (4, 9)             # primitives per large box
    prims_other: Count = (2, 5)             # primitives per other box
    prim_axes: Range = (0.25, 2.0)          # raw; U per axis, at most the box's size
    primitive_kinds: tuple[str, ...] = ("ellipsoid", "cube", "cylinder")  # drawn uniformly
    rotation: Range = (0.0, math.pi)        # radians; U; per axis for primitives and floating sticks,
                                            # about z only for frames and slabs
    heightfield_p_skip: float = 0.1         # a primitive has no heightfield
    heightfield_max_rel: float = 0.6        # amplitude U(0, this) × the primitive's smallest semi-axis
    heightfield_resolution: int = 36        # heightfield samples per face side
    # frames, slabs, sticks
    p_frames: float = 0.8                   # the scene has wireframe frames
    frames: Count = (1, 3)
    frame_size: Range = (2.0, 6.0)          # raw; U per axis
    frame_thickness: Range = (0.01, 0.03)   # scene units; U; wireframe thickness
    frame_kinds: tuple[str, ...] = ("cube", "cylinder", "ellipsoid")  # drawn uniformly
    frame_base: Range = (0.0, 0.5)          # U; the frame's bottom, as a fraction of the room's height
                                            # above the floor
    p_slabs: float = 0.7                    # the scene has thin upright slabs
    slabs: Count = (1, 2)
    slab_size: Range = (2.0, 8.0)           # raw; U, width and height
    slab_thickness: Range = (0.05, 0.5)     # raw; U
    slab_glass_below: float = 0.25          # raw; slabs thinner than this may be glass ...
    p_slab_glass: float = 0.8               # ... with this probability
    wall_sticks: Count = (5, 16)            # sticks along the walls
    stick_width: Range = (0.1, 0.4)         # raw; U; square cross-section of a wall stick
    p_stick_horizontal: float = 0.5         # a wall stick runs horizontally (else vertically, from the floor)
    stick_length: Range = (3.0, 15.0)       # raw; U, then at most the wall's length (or height)
    p_float_sticks: float = 0.5             # the scene has floating sticks
    float_sticks: Count = (2, 6)
    float_stick_length: Range = (2.0, 8.0)  # raw; U
    float_stick_width: Range = (0.1, 0.3)   # raw; U; square cross-section
    float_stick_base: Range = (0.0, 0.5)    # U; as frame_base
    camera_clearance: float = 0.15          # scene units: no shape comes closer to a camera (or, in
                                            # geometry partitions, to a base camera or bulb)


@dataclass(frozen=True)
class CameraConfig(_Checked):
    """The views of one trajectory (a rig) around a shared target."""
    rigs: tuple[str, ...] = RIGS            # drawn with ...
    rig_p: tuple[float, ...] = (0.3, 0.2, 0.15, 0.15, 0.2)  # ... these probabilities
    p_target_shape: float = 0.6             # the target is the centre of a random solid shape (not a
                                            # wall stick or frame), else ...
    target_box: float = 0.6                 # ... U within this fraction of the room's half-extents
    fov_deg: Range = (45.0, 70.0)           # degrees; U; horizontal field of view
    p_zoom: float = 0.3                     # the field of view changes along the trajectory ...
    zoom_deg: Range = (-5.0, 5.0)           # ... by U(this) per view, clipped to fov_deg
    baseline: Range = (0.005, 1.2)          # scene units; log-U, micro to wide (orbit arc length, line
                                            # length, dolly travel, scatter diameter)
    mixed_baseline: Range = (0.2, 1.2)      # baseline for `mixed` (pretraining): with micro baselines a
                                            # model learns neither cameras nor multi-view depth
    distance: Range = (0.35, 1.2)           # scene units; U; from the target to the trajectory's centre
    azimuth: Range = (-math.pi, math.pi)    # radians; U; direction from the target to the cameras ...
    elevation_deg: Range = (-10.0, 40.0)    # degrees; U; ... and its elevation
    roll_deg: Range = (-10.0, 10.0)         # degrees; U; roll of the whole trajectory, plus ...
    view_roll_deg: Range = (-2.0, 2.0)      # degrees; U; ... this per view
    forward_max: float = 0.8                # a forward rig travels at most this fraction of the distance
    scatter_target_sd: float = 0.02         # scene units; normal sd of a scatter rig's look-at points
    p_room_centre: float = 0.25             # room rig: a view in the middle of the room, U within ...
    room_centre: float = 0.25               # ... this fraction of the half-extents; else near a face:
    room_face: float = 0.85                 # U within this fraction of the half-extents along the face,
    room_inset: Range = (0.1, 0.3)          # scene units; U, in from the face
    room_target_sd: float = 0.05            # scene units; normal sd of a room rig's look-at points
    wall_margin: float = 0.05               # scene units; cameras stay this far inside the room
    min_look: float = 0.05                  # scene units; least distance from a camera to its look-at
    attempts: int = 200                     # trajectories drawn before giving up
    relax_every: int = 50                   # after this many rejected attempts, distance and baseline
    relax: float = 0.5                      # are multiplied by this (crowded rooms)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_choice("rigs", "rig_p")
        unknown = sorted(set(self.rigs) - set(RIGS))
        if unknown:
            raise ValueError(f"rigs: unknown {unknown}; choose from {', '.join(RIGS)}")
        self._check_positive("baseline", "mixed_baseline")
        if self.attempts < 1 or self.relax_every < 1:
            raise ValueError(f"attempts, relax_every: {self.attempts}, {self.relax_every}: must be >= 1")


@dataclass(frozen=True)
class LightingConfig(_Checked):
    """Light count, type, placement, colour and power; the sky. Area-light powers are watts × the
    room's floor area (scene units²), so that irradiance stays comparable across room sizes."""
    p_area_pair: float = 0.4                # MegaSynth's white area pair (ceiling down, floor up), else
                                            # area_count area lights anywhere
    area_pair_power: Range = (2.5, 12.0)    # U × floor area, for the ceiling light ...
    area_pair_floor: float = 0.3            # ... and this fraction of its own U draw for the floor light
    area_pair_size: Range = (0.5, 1.0)      # scene units; U; side of the square
    area_pair_inset: float = 0.02           # scene units below the ceiling / above the floor
    area_count: Count = (1, 3)
    area_position: float = 0.9              # U within this fraction of the room's half-extents ...
    area_aim: float = 0.5                   # ... aimed at a point U within this fraction
    area_power: Range = (0.8, 12.0)         # log-U × floor area
    area_size: Range = (0.1, 0.8)           # scene units; U; side of the square
    area_p_white: float = 0.6               # the light is white, else coloured (see light_saturation)
    p_sun: float = 0.6                      # suns through the window (only if the room has one)
    sun_count: Count = (1, 2)
    sun_aim: float = 0.7                    # aimed at a point U within this fraction of the half-extents
                                            # (height U between the floor and the window's centre)
    sun_min_inward: float = 0.2             # cosine to the wall's inward normal, below which the sun
                                            # shines straight in
    sun_distance: float = 2.0               # scene units outside the window, along the sun's direction
    sun_power: Range = (0.1, 1.0)           # W/m²; U
    sun_size: Range = (0.5, 5.0)            # U; the sun's angular size as Blender takes it
    sun_p_white: float = 0.4
    p_point: float = 0.3                    # the scene has point lights
    point_count: Count = (1, 3)
    point_position: float = 0.85            # U within this fraction of the room's half-extents
    point_power: Range = (0.25, 4.0)        # watts; log-U
    point_size: Range = (0.01, 0.1)         # scene units; U; radius
    point_p_white: float = 0.5
    p_bulb: float = 0.2                     # the scene has emissive bulbs (visible spheres)
    bulb_count: Count = (1, 3)
    bulb_position: float = 0.85             # U within this fraction of the room's half-extents
    bulb_power: Range = (20.0, 200.0)       # emission strength; U
    bulb_size: Range = (0.01, 0.04)         # scene units; U; radius
    bulb_p_white: float = 0.5
    light_saturation: Range = (0.15, 0.8)   # U; HSV saturation of a coloured light (hue U(0, 1), value 1)
    sky_hue: Range = (0.5, 0.65)            # U; HSV hue of the sky (value 1)
    sky_saturation: Range = (0.0, 0.5)      # U
    sky_strength: Range = (0.05, 1.0)       # U

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_positive("area_power", "point_power")


@dataclass(frozen=True)
class TextureConfig(_Checked):
    """The material set: procedural PBR materials, optionally user images, and the glass."""
    materials: Count = (4, 10)              # materials per scene
    p_override: float = 0.5                 # MegaSynth's override: every material gets ...
    override_roughness: Range = (0.001, 0.2)  # ... roughness U(this) and ...
    override_metallic: Range = (0.001, 1.0)   # ... metallic U(this)
    p_specular: float = 0.2                 # a specular scene: every material gets (after the override) ...
    specular_roughness: Range = (0.0, 0.05)   # ... roughness U(this) and ...
    specular_metallic: Range = (0.6, 1.0)     # ... metallic U(this)
    saturation: Range = (0.0, 0.9)          # U; HSV saturation of both colours (hue U(0, 1))
    value_a: Range = (0.1, 0.95)            # U; HSV value of color_a
    value_b: Range = (0.05, 0.95)           # U; HSV value of color_b
    p_own_hue: float = 0.5                  # color_b has its own hue, else color_a's
    roughness: Range = (0.05, 0.95)         # U
    p_metallic: float = 0.2                 # a material is metallic, with metallic U(metallic), else 0
    metallic: Range = (0.3, 1.0)
    p_image: float = 0.5                    # a material uses a random image of texture_dir (if given)
    patterns: tuple[str, ...] = PATTERNS    # procedural patterns (those the Blender backend builds) ...
    pattern_p: tuple[float, ...] = (0.18, 0.16, 0.14, 0.14, 0.12, 0.1, 0.08, 0.08)  # ... and their probabilities
    scale: Range = (2.0, 40.0)              # log-U; pattern scale
    detail: Range = (0.0, 4.0)              # U; pattern detail (noise octaves)
    p_bump: float = 0.6                     # a material has a bump map, of strength ...
    bump: Range = (0.05, 0.6)               # ... U(this); shading normals only
    glass_ior: Range = (1.4, 1.6)           # U; window panes and glass slabs
    glass_tint_loss: Range = (0.0, 0.15)    # U per channel; tint = 1 - this
    glass_roughness: Range = (0.0, 0.05)    # U
    texture_dir: str | None = None          # folder of texture images to mix in (common.images.IMAGE_SUFFIXES)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_choice("patterns", "pattern_p")
        unknown = sorted(set(self.patterns) - set(PATTERNS))
        if unknown:
            raise ValueError(f"patterns: unknown {unknown}; the renderer knows {', '.join(PATTERNS)}")
        self._check_positive("scale")


@dataclass(frozen=True)
class JitterConfig(_Checked):
    """Size of the per-sample perturbation of the attributes a partition holds fixed, at ``--jitter 1``:
    every value moves by U(-size, size) × jitter (``_rel``: relative; ``_deg``: degrees)."""
    geometry_center: float = 0.005          # scene units per axis, shape centres
    geometry_rotation_deg: float = 1.0      # per axis, shape rotations
    texture_color: float = 0.02             # per channel of both colours
    texture_roughness: float = 0.02
    texture_metallic: float = 0.02          # metallic materials only
    texture_scale_rel: float = 0.02         # pattern scale
    texture_bump: float = 0.02              # bumped materials only
    lighting_power_rel: float = 0.05
    lighting_color: float = 0.02            # per channel
    lighting_position: float = 0.02         # scene units per axis
    lighting_direction_deg: float = 2.0     # rotation per axis
    camera_position: float = 0.01           # scene units per axis
    camera_look_at: float = 0.01            # scene units per axis
    camera_fov_deg: float = 0.5
    camera_roll_deg: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"{f.name}: {getattr(self, f.name)!r} must be >= 0")

    def table(self) -> dict[str, dict[str, float]]:
        """{attribute: {quantity: size}}, e.g. ``table()["camera"]["fov_deg"]``."""
        out: dict[str, dict[str, float]] = {}
        for f in dataclasses.fields(self):
            attribute, quantity = f.name.split("_", 1)
            out.setdefault(attribute, {})[quantity] = getattr(self, f.name)
        return out


SECTIONS = {"geometry": GeometryConfig, "camera": CameraConfig, "lighting": LightingConfig,
            "texture": TextureConfig, "jitter": JitterConfig}
# The flat GeneratorConfig of generator attrspace-synth-2 before its split by attribute; partition
# headers written then store these names at the top level of ``generator_config``.
LEGACY_FIELDS = {
    "geometry": ("max_large", "max_small", "max_roof", "max_wall", "prims_large", "prims_other", "prim_axes",
                 "heightfield_p_skip", "heightfield_max_rel", "heightfield_resolution", "frames", "p_frames",
                 "slabs", "p_slabs", "wall_sticks", "float_sticks", "p_float_sticks", "p_window",
                 "p_window_glass", "camera_clearance"),
    "camera": ("fov_deg", "baseline", "mixed_baseline"),
    "texture": ("materials", "texture_dir"),
}
_LEGACY = {name: section for section, names in LEGACY_FIELDS.items() for name in names}


class Sectioned:
    """Mixin of a frozen dataclass of config sections (GeneratorConfig, the transparent scenes'
    TransparentConfig): the plain-dict round trip and partial overrides."""

    def to_dict(self) -> dict:
        """{section: {field: value}}; JSON-serialisable (tuples become lists in JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        return from_plain(cls, data)

    def override(self, partial: dict):
        """A copy with the values of a partial nested dict, e.g. ``{"lighting": {"p_area_pair": 0.5}}``;
        ValueError naming the key path of an unknown key or a bad value."""
        return self.from_dict(_merge(self.to_dict(), partial, ""))


@dataclass(frozen=True)
class GeneratorConfig(Sectioned):
    """All of the generator's parameters, by attribute (see each config for its fields)."""
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    lighting: LightingConfig = field(default_factory=LightingConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    jitter: JitterConfig = field(default_factory=JitterConfig)

    @classmethod
    def light(cls) -> "GeneratorConfig":
        """Few, coarse shapes: for tests and quick previews."""
        return cls(geometry=GeometryConfig(max_large=2, max_small=2, max_roof=1, max_wall=1, prims_large=(2, 3),
                                           prims_other=(1, 2), heightfield_resolution=10, wall_sticks=(2, 3),
                                           float_sticks=(1, 2)))

    @classmethod
    def from_dict(cls, data: dict) -> "GeneratorConfig":
        """Inverse of ``to_dict``; missing fields take their defaults. Also reads the flat form of
        partition headers written before the split by attribute (``LEGACY_FIELDS``). Raises
        ValueError naming the key path of an unknown key or a value of the wrong type or length."""
        if not isinstance(data, dict):
            raise ValueError(f"expected an object of sections ({', '.join(SECTIONS)}), got {describe(data)}")
        if data and not set(data) & set(SECTIONS) and set(data) <= set(_LEGACY):
            nested: dict = {}
            for name, value in data.items():
                nested.setdefault(_LEGACY[name], {})[name] = value
            data = nested
        return from_plain(cls, data)


def load_overrides(source: str | Path, base: Sectioned, inline: bool = False):
    """``base`` overridden by the JSON object in the file ``source`` (with ``inline``, ``source`` may also
    be the object itself, as text starting with ``{``). Raises ValueError("PATH: ...") for an unreadable
    file, bad JSON, an unknown key, a wrong type or length (no "PATH: " for inline text)."""
    text = str(source)
    literal = inline and text.lstrip().startswith("{")
    where = "" if literal else f"{text}: "
    try:
        data = json.loads(text if literal else Path(text).read_text())
    except OSError as e:
        raise ValueError(f"{where}cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}not valid JSON ({e})") from None
    try:
        return base.override(data)
    except ValueError as e:
        raise ValueError(f"{where}{e}") from None


def load_generator_config(path: str | Path, base: GeneratorConfig = GeneratorConfig()) -> GeneratorConfig:
    """``base`` overridden by a JSON file of partial overrides, e.g. ``{"camera": {"fov_deg": [30, 90]}}``."""
    return load_overrides(path, base)


# ------------------------------------------------------------------------------- dict conversion
def _merge(base: dict, partial, path: str) -> dict:
    if not isinstance(partial, dict):
        if not path:
            raise ValueError(f"expected an object of sections ({', '.join(base)}), got {describe(partial)}")
        raise ValueError(f"{path.rstrip('.')}: expected an object, got {describe(partial)}")
    out = dict(base)
    for key, value in partial.items():
        if key not in base:
            raise ValueError(_unknown(key, base, path))
        out[key] = _merge(base[key], value, f"{path}{key}.") if isinstance(base[key], dict) else value
    return out


def _unknown(key, known, path: str) -> str:
    if not path and key in _LEGACY:  # a setting of the flat config before the split by attribute
        return f"{key}: unknown key (did you mean {_LEGACY[key]}.{key}?)"
    return unknown_key(key, known, path)
