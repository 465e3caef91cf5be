"""Clothing for the clothed-human task: garment shells, skirts, hair volumes and shoes on an anny body,
and their colours.

A garment is a shell offset from the body: every body vertex a garment covers moves out along its normal
by the garment's ease and thickness plus a fold field, so the visible surface is the cloth, not the skin
(one watertight surface; where two garments overlap, the outer one wins). Where a garment ends, the
offset drops to zero over about a centimetre: the hem is a step, as on a real scan. Regions are defined
on the rest (A-pose) body, so a garment's extent, folds and print move with the limbs. A skirt or a
dress's lower part is a separate open tube around the hips and legs (it does not follow the legs), with
radial folds. Hair is a volume on the skull above a hairline that runs from the forehead down to the
nape, with strand ridges; shoes are a thicker shell on the feet.

Everything is a function of the outfit record (plain JSON in the mesh index) and the body: the same
record gives the same mesh.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .face_live import HAIR_COLOURS, _noise, _smoothstep, compact, skin_rgb, subdivide
from .human_body import GROUPS, AnnyBody, PosedBody, vertex_normals

TOPS = ("tank", "tshirt", "longsleeve", "jacket", "coat")
BOTTOMS = ("shorts", "capri", "trousers", "skirt", "dress")
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "print")
HAIR_STYLES = ("bald", "short", "medium", "long", "voluminous")
HEM_SOFTNESS = 0.012      # m over which a garment's offset falls to zero at its edge
SKIRT_RING_STEP = 0.02    # m between the skirt tube's rings
SKIRT_SEGMENTS = 96       # vertices per ring


@dataclass
class DressedMesh:
    vertices: np.ndarray   # [N, 3] metres, our frame (+Y up, facing +Z), feet on y = 0, bbox centred in x, z
    faces: np.ndarray      # [F, 3]
    colors: np.ndarray     # [N, 3] sRGB in [0, 1]
    offset: np.ndarray     # [3] the translation that grounded and centred it (posed body + offset = mesh frame)


# ------------------------------------------------------------------------------------------ sampling

def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], float)
    return str(rng.choice(names, p=p / p.sum()))


def _colour(rng: np.random.Generator, palette: dict) -> list[float]:
    """An sRGB garment colour from a palette record: hue anywhere (or near ``hues``), saturation and value
    in ranges."""
    import colorsys
    hue = float(rng.random()) if not palette.get("hues") else (float(rng.choice(palette["hues"])) + rng.normal(0, 0.03)) % 1
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(*palette["saturation"]), rng.uniform(*palette["value"]))
    return [round(float(c), 4) for c in rgb]


def sample_garment(rng: np.random.Generator, palette: dict, patterns: dict[str, float]) -> dict:
    """Colours, print and fold field of one garment."""
    return {"color": _colour(rng, palette), "color2": _colour(rng, palette), "pattern": _pick(rng, patterns),
            "period": round(float(rng.uniform(0.02, 0.09)), 4), "fold_seed": int(rng.integers(2**31))}


def sample_outfit(rng: np.random.Generator, style: dict) -> dict:
    """One outfit (plain JSON) from a domain's clothing ``style``: which top and bottom, their extents,
    ease, fold amplitude, colours and prints, the hair and the shoes."""
    top, bottom = _pick(rng, style["tops"]), _pick(rng, style["bottoms"])
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 4)  # noqa: E731
    ease = style["ease"]
    sleeve = {"tank": 0.0, "tshirt": u(0.25, 0.45), "longsleeve": u(0.9, 1.0), "jacket": u(0.92, 1.0),
              "coat": u(0.95, 1.02)}[top]
    if bottom == "dress":
        sleeve = min(sleeve, u(0.0, 0.5))
    # hem of the top in leg lengths below the hip joint (negative: above it)
    hem = {"tank": u(-0.12, 0.0), "tshirt": u(-0.1, 0.05), "longsleeve": u(-0.1, 0.05), "jacket": u(0.0, 0.12),
           "coat": u(0.3, 0.55)}[top]
    length = {"shorts": u(0.3, 0.5), "capri": u(0.65, 0.8), "trousers": u(0.97, 1.03), "skirt": 0.0,
              "dress": 0.0}[bottom]
    outfit = {
        "top": top, "bottom": bottom, "sleeve": sleeve, "top_hem": hem, "leg_length": length,
        "neckline": u(0.0, 0.09), "ease_top": u(*ease) * (2.0 if top in ("jacket", "coat") else 1.0),
        "ease_bottom": u(*ease), "thickness": u(0.002, 0.006) * (2.5 if top in ("jacket", "coat") else 1.0),
        "folds": u(*style["folds"]), "top_garment": sample_garment(rng, style["palette"], style["patterns"]),
        "bottom_garment": sample_garment(rng, style["palette"], style["patterns"]),
        "shoe_color": _colour(rng, {"saturation": (0.0, 0.4), "value": (0.05, 0.9)}),
        "shoe_height": u(0.004, 0.012),
        "hair": _pick(rng, style["hair"]), "hair_color": _pick(rng, {k: 1.0 for k in HAIR_COLOURS}),
        "hair_seed": int(rng.integers(2**31)), "skin_tone": u(0.0, 1.0), "skin_seed": int(rng.integers(2**31)),
    }
    if bottom in ("skirt", "dress"):
        outfit |= {"skirt_length": u(*style["skirt_length"]), "skirt_flare": u(0.05, 0.45),
                   "skirt_folds": int(rng.integers(7, 16)), "skirt_fold_depth": u(0.005, 0.025),
                   "legwear": _colour(rng, {"saturation": (0.0, 0.3), "value": (0.05, 0.5)})
                   if rng.random() < 0.4 else None}
        if bottom == "dress":
            outfit["bottom_garment"] = outfit["top_garment"]
    return outfit


# ------------------------------------------------------------------------------------------ regions

@dataclass
class Regions:
    """Per-vertex coordinates on the rest body that garments are cut by."""
    group: np.ndarray       # [V] dominant body-part group (index into GROUPS)
    arm_s: np.ndarray       # [V] along the arm: 0 at the shoulder joint, 1 at the wrist (arm vertices; else nan)
    drop: np.ndarray        # [V] below the hip joint in leg lengths (torso and leg vertices; 1 at the ankle)
    above_waist: np.ndarray  # [V] metres above the waist (spine03)
    rest: np.ndarray        # [V, 3] rest positions (folds and prints are functions of them)
    foot: np.ndarray        # [V] 1 on the feet (anny's foot segments)
    face: np.ndarray        # [V] 1 on the eyes and the mouth cavity (never covered by hair)


def body_regions(body: AnnyBody, pb: PosedBody) -> Regions:
    rest, j = pb.rest, pb.rest_joints
    group = body.dominant_group()
    arm_s = np.full(len(rest), np.nan)
    for side in "LR":
        sel = group == GROUPS.index(f"arm_{side}")
        a, b = j[f"upperarm01.{side}"], j[f"wrist.{side}"]
        arm_s[sel] = (rest[sel] - a) @ (b - a) / float((b - a) @ (b - a))
    leg_len = float(np.mean([np.linalg.norm(j[f"foot.{s}"] - j[f"upperleg01.{s}"]) for s in "LR"]))
    hip_y = float(np.mean([j[f"upperleg01.{s}"][1] for s in "LR"]))
    drop = (hip_y - rest[:, 1]) / leg_len
    for side in "LR":   # along the leg's own axis (a leg of the rest pose is not vertical)
        sel = group == GROUPS.index(f"leg_{side}")
        a, b = j[f"upperleg01.{side}"], j[f"foot.{side}"]
        drop[sel] = (rest[sel] - a) @ (b - a) / float((b - a) @ (b - a))
    flags = np.zeros((len(rest), 2))
    foot = body.label_faces("foot.L", "foot.R")
    face = body.label_faces("eye_front.L", "eye_front.R", "eye_cavity.L", "eye_cavity.R", "mouth_cavity")
    for k, mask in enumerate((foot, face)):
        flags[np.unique(body.faces[mask]), k] = 1.0
    return Regions(group=group, arm_s=arm_s, drop=drop, above_waist=rest[:, 1] - j["spine03"][1], rest=rest,
                   foot=flags[:, 0], face=flags[:, 1])


def _edge(x: np.ndarray, limit: float, scale: float) -> np.ndarray:
    """1 well inside ``x <= limit``, 0 beyond it, falling over HEM_SOFTNESS metres (``scale``: metres per
    unit of x)."""
    return _smoothstep((limit - x) * scale / HEM_SOFTNESS + 0.5)


def coverage(r: Regions, outfit: dict, pb: PosedBody) -> dict[str, np.ndarray]:
    """Per garment, how much of each vertex it covers (0..1)."""
    j = pb.rest_joints
    arm_len = float(np.linalg.norm(j["wrist.L"] - j["upperarm01.L"]))
    leg_len = float(np.linalg.norm(j["foot.L"] - j["upperleg01.L"]))
    g = lambda name: r.group == GROUPS.index(name)  # noqa: E731
    torso, arm = g("torso"), g("arm_L") | g("arm_R")
    leg = g("leg_L") | g("leg_R")
    drop = np.nan_to_num(r.drop, nan=0.0)
    # top: the torso down to its hem (which may reach onto the legs: a coat), the arms down to the sleeve
    top = np.zeros(len(r.group))
    top[torso | leg] = _edge(drop[torso | leg], outfit["top_hem"], leg_len)
    top[arm] = _edge(r.arm_s[arm], outfit["sleeve"], arm_len) if outfit["sleeve"] > 0 else 0.0
    # the neckline: a scoop at the front of the chest below the neck joint
    neck = j["neck01"]
    scoop = (r.rest[:, 1] - (neck[1] - outfit["neckline"])) / 0.01
    front = (r.rest[:, 2] > neck[2]) & (np.abs(r.rest[:, 0]) < 0.09)
    top[torso & front] *= _smoothstep(0.5 - scoop[torso & front])
    top[torso & ~front] *= _smoothstep(0.5 - (r.rest[torso & ~front, 1] - neck[1] - 0.01) / 0.01)
    # bottom: below the waist, down each leg to its length
    bottom = np.zeros(len(r.group))
    if outfit["bottom"] not in ("skirt", "dress"):
        below = _smoothstep(0.5 - r.above_waist / HEM_SOFTNESS)
        bottom[torso] = below[torso]
        bottom[leg] = _edge(drop[leg], outfit["leg_length"], leg_len)
    else:
        bottom[torso] = _smoothstep(0.5 - r.above_waist / HEM_SOFTNESS)[torso]   # under the skirt's waistband
    shoes = np.clip(r.foot + (drop > 1.0) * 1.0, 0, 1) * leg
    return {"top": top, "bottom": bottom, "shoes": shoes}


def _folds(p: np.ndarray, seed: int) -> np.ndarray:
    """A fold field in about [-1, 1]: ridges (1 − |noise|) over a softer undulation, as cloth creases."""
    ridges = 1.0 - 2.0 * np.abs(np.tanh(_noise(p, seed, (0.04, 0.12), waves=10)))
    return 0.6 * ridges + 0.4 * np.tanh(_noise(p, seed + 1, (0.12, 0.35), waves=6))


def hair_amount(r: Regions, pb: PosedBody, style: str) -> np.ndarray:
    """Hair thickness (metres) per vertex: zero below the hairline, which runs from the forehead (above
    the eyes) down to the nape (lower for longer hair); tapers in over 2 cm."""
    if style == "bald":
        return np.zeros(len(r.group))
    j = pb.rest_joints
    volume = {"short": 0.008, "medium": 0.018, "long": 0.025, "voluminous": 0.045}[style]
    nape = {"short": 0.02, "medium": -0.02, "long": -0.09, "voluminous": -0.07}[style]
    eye_y, eye_z = j["eye.L"][1], j["eye.L"][2]
    head_y, head_z = j["head"][1], j["head"][2]
    front_y, back_y = eye_y + 0.05, head_y + nape
    z_front, z_back = eye_z - 0.01, head_z - 0.06
    t = np.clip((r.rest[:, 2] - z_back) / (z_front - z_back), 0.0, 1.0)
    line = back_y + (front_y - back_y) * t
    head = (r.group == GROUPS.index("head")) | (r.group == GROUPS.index("neck"))
    if style in ("short", "medium"):
        head &= r.group == GROUPS.index("head")
    amount = volume * _smoothstep((r.rest[:, 1] - line) / 0.02) * head * (1.0 - r.face)
    return amount


# ------------------------------------------------------------------------------------------ colours

def _pattern(p: np.ndarray, garment: dict) -> np.ndarray:
    """Weight of the second colour per point (0..1) for the garment's print."""
    period, kind = garment["period"], garment["pattern"]
    wave = lambda x: _smoothstep((np.sin(2 * np.pi * x / period) + 0.2) * 4)  # noqa: E731
    if kind == "solid":
        return np.zeros(len(p))
    if kind == "hstripes":
        return wave(p[:, 1])
    if kind == "vstripes":
        return wave(np.arctan2(p[:, 0], p[:, 2]) * 0.15)
    if kind == "checks":
        return 0.5 * (wave(p[:, 1]) + wave(p[:, 0] + p[:, 2]))
    return _smoothstep((_noise(p, garment["fold_seed"] + 7, (period, 3 * period)) - 0.3) * 3)


def _cloth(p: np.ndarray, garment: dict) -> np.ndarray:
    """The garment's two colours mixed by its print at points ``p`` (the print evaluated once)."""
    w = _pattern(p, garment)[:, None]
    return np.asarray(garment["color"])[None] * (1 - w) + np.asarray(garment["color2"])[None] * w


def paint(r: Regions, cover: dict, hair: np.ndarray, outfit: dict, folds: dict) -> np.ndarray:
    """sRGB per vertex: skin, then shoes, bottom, top and hair over it; cloth darkened in its fold
    valleys (scans have their shading baked in)."""
    p = r.rest
    skin = skin_rgb(outfit["skin_tone"])[None] * (1 + 0.04 * _noise(p, outfit["skin_seed"], (0.01, 0.05)))[:, None]
    rgb = skin.copy()
    if outfit.get("legwear"):
        legs = (r.group == GROUPS.index("leg_L")) | (r.group == GROUPS.index("leg_R"))
        rgb[legs] = np.asarray(outfit["legwear"])
    for name, key in (("bottom", "bottom_garment"), ("top", "top_garment")):
        g = outfit[key]
        cloth = _cloth(p, g)
        cloth *= (1 + 0.05 * _noise(p, g["fold_seed"] + 3, (0.003, 0.01)))[:, None]   # weave
        cloth *= (1 - 0.25 * np.clip(-folds[name], 0, 1))[:, None]
        rgb = rgb * (1 - cover[name])[:, None] + cloth * cover[name][:, None]
    rgb = rgb * (1 - cover["shoes"])[:, None] + np.asarray(outfit["shoe_color"])[None] * cover["shoes"][:, None]
    if hair.any():
        strands = 1 + 0.15 * _noise(p * np.array([4.0, 0.5, 4.0]), outfit["hair_seed"], (0.01, 0.03))
        tone = np.asarray(HAIR_COLOURS[outfit["hair_color"]])[None] * strands[:, None]
        w = np.clip(hair / 0.004, 0, 1)[:, None]
        rgb = rgb * (1 - w) + tone * w
    rgb[r.face > 0.5] *= 0.25   # eyes and mouth: dark
    return np.clip(rgb, 0, 1)


# ------------------------------------------------------------------------------------------ skirt

def skirt_tube(vertices: np.ndarray, group: np.ndarray, pb: PosedBody, outfit: dict) -> tuple[np.ndarray, np.ndarray]:
    """An open tube from the waist down to the hem around the (dressed, posed) hips and legs: each ring
    just encloses the body's slab at its height, never narrower than the ring above, flared, with radial
    folds deepening toward the hem."""
    j = pb.joints
    legs = np.isin(group, [GROUPS.index(g) for g in ("torso", "leg_L", "leg_R")])
    top_y = float(j["spine03"][1])
    hip_y = float(np.mean([j[f"upperleg01.{s}"][1] for s in "LR"]))
    ankle_y = float(np.mean([j[f"foot.{s}"][1] for s in "LR"]))
    hem_y = hip_y - outfit["skirt_length"] * (hip_y - ankle_y)
    levels = np.arange(top_y, hem_y - 1e-9, -SKIRT_RING_STEP)
    theta = np.linspace(0, 2 * np.pi, SKIRT_SEGMENTS, endpoint=False)
    dirs = np.stack([np.cos(theta), np.sin(theta)], 1)          # in the x-z plane
    centre = None
    rings, radius = [], np.zeros(SKIRT_SEGMENTS)
    rng = np.random.default_rng(outfit["bottom_garment"]["fold_seed"])
    phase = rng.uniform(0, 2 * np.pi)
    for k, y in enumerate(levels):
        slab = vertices[legs & (np.abs(vertices[:, 1] - y) < SKIRT_RING_STEP)][:, [0, 2]]
        if centre is None:
            centre = slab.mean(0) if len(slab) else np.zeros(2)
        reach = (slab - centre) @ dirs.T if len(slab) else np.zeros((1, SKIRT_SEGMENTS))
        need = reach.max(0) + outfit["ease_bottom"] + 0.01
        radius = np.maximum(radius + outfit["skirt_flare"] * SKIRT_RING_STEP, need)
        depth = outfit["skirt_fold_depth"] * (k / max(len(levels) - 1, 1))
        r = radius + depth * np.sin(outfit["skirt_folds"] * theta + phase + 0.3 * np.sin(3 * theta))
        rings.append(np.stack([centre[0] + r * dirs[:, 0], np.full(SKIRT_SEGMENTS, y), centre[1] + r * dirs[:, 1]], 1))
    v = np.concatenate(rings)
    faces = []
    n = SKIRT_SEGMENTS
    for k in range(len(rings) - 1):
        a = k * n + np.arange(n)
        b = k * n + (np.arange(n) + 1) % n
        faces += [np.stack([a, a + n, b], 1), np.stack([b, a + n, b + n], 1)]
    return v, np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)


# ------------------------------------------------------------------------------------------ dressing

def dress(body: AnnyBody, pb: PosedBody, outfit: dict) -> DressedMesh:
    """The clothed, coloured mesh of a posed body: garments and hair offset along the posed normals,
    the skirt tube added, feet on y = 0 and the bounding box centred in x and z."""
    faces = body.faces[body.keep_faces]
    r = body_regions(body, pb)
    attrs = [pb.vertices, r.rest, np.nan_to_num(r.arm_s, nan=-1.0), r.drop, r.above_waist, r.foot, r.face,
             np.eye(len(GROUPS))[r.group]]
    faces, attrs = compact(faces, *attrs)         # without the tongue's and the eye backs' vertices
    faces, attrs = subdivide(faces, *attrs)      # twice the resolution of prints and hems
    posed, rest, arm_s, drop, above, foot, face, onehot = attrs
    r = Regions(group=onehot.argmax(1), arm_s=np.where(arm_s < -0.5, np.nan, arm_s), drop=drop, above_waist=above,
                rest=rest, foot=foot, face=face)
    cover = coverage(r, outfit, pb)
    folds = {name: _folds(rest, outfit[f"{name}_garment"]["fold_seed"]) for name in ("top", "bottom")}
    amp = outfit["folds"]
    offset = {"top": outfit["ease_top"] + outfit["thickness"] + amp * (1 + folds["top"]),
              "bottom": outfit["ease_bottom"] + outfit["thickness"] + amp * (1 + folds["bottom"]),
              "shoes": np.full(len(rest), outfit["shoe_height"])}
    shift = np.zeros(len(rest))
    for name in ("shoes", "bottom", "top"):
        shift = np.maximum(shift, cover[name] * offset[name])
    hair = hair_amount(r, pb, outfit["hair"])
    strands = 1 + 0.25 * np.abs(_noise(rest * np.array([6.0, 0.7, 6.0]), outfit["hair_seed"], (0.01, 0.03)))
    shift = np.maximum(shift, hair * strands)
    normals = vertex_normals(posed, faces)
    v = posed + normals * shift[:, None]
    colors = paint(r, cover, hair, outfit, folds)
    if outfit["bottom"] in ("skirt", "dress"):
        sv, sf = skirt_tube(v, r.group, pb, outfit)
        skirt_rgb = _cloth(sv, outfit["bottom_garment"])
        faces = np.concatenate([faces, sf + len(v)])
        v, colors = np.concatenate([v, sv]), np.concatenate([colors, np.clip(skirt_rgb, 0, 1)])
    offset = -np.array([0.5 * (v[:, 0].min() + v[:, 0].max()), v[:, 1].min(), 0.5 * (v[:, 2].min() + v[:, 2].max())])
    return DressedMesh(vertices=v + offset, faces=faces.astype(np.int64), colors=colors, offset=offset)


def stature(mesh: DressedMesh) -> float:
    return float(np.ptp(mesh.vertices[:, 1]))


__all__ = ["TOPS", "BOTTOMS", "PATTERNS", "HAIR_STYLES", "DressedMesh", "sample_outfit", "body_regions", "coverage",
           "hair_amount", "dress", "skirt_tube", "stature"]
