"""Bodies of the clothed-human task (finetune/tasks/human_body.py): anny's full-body model shaped to a
stature and posed by limb directions, in our frame (metres, up +Y, facing +Z, the subject's left on +X).

anny's full-body model is built once per process (the very first build on a machine takes about
2.5 minutes and fills anny's cache; then a few seconds).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("anny")

from finetune.tasks.human_body import (POSE_FAMILIES, anny_to_frame, load_anny_body, posed_body,  # noqa: E402
                                       sample_phenotype, sample_pose, solve_height)

RANGES = {"gender": (0.0, 1.0), "age": (0.5, 0.9), "muscle": (0.0, 1.0), "weight": (0.2, 0.8),
          "proportions": (0.0, 1.0)}
STATURE = {"male": (1.76, 0.07), "female": (1.63, 0.06), "clip": (1.5, 1.95)}
NEUTRAL = dict(arm_flexion_L=0.0, arm_flexion_R=0.0, elbow_L=0.0, elbow_R=0.0, hip_abduction_L=4.0,
               hip_abduction_R=4.0, hip_flexion_L=0.0, hip_flexion_R=0.0, knee_L=0.0, knee_R=0.0, head_yaw=0.0,
               head_pitch=0.0, torso_yaw=0.0)


@pytest.fixture(scope="module")
def body():
    return load_anny_body()


def _subject(body, seed: int) -> dict:
    ph = sample_phenotype(np.random.default_rng(seed), RANGES, STATURE)
    ph["height"] = solve_height(body, {**ph, "height": 0.5}, ph["stature"])
    return ph


def _angle_deg(a, b) -> float:
    a, b = np.asarray(a) / np.linalg.norm(a), np.asarray(b) / np.linalg.norm(b)
    return math.degrees(math.acos(float(np.clip(a @ b, -1, 1))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stature_is_solved(body, seed):
    ph = _subject(body, seed)
    pb = posed_body(body, ph, {"family": "a_pose", "arm_abduction_L": 40.0, "arm_abduction_R": 40.0, **NEUTRAL})
    assert 1.5 <= ph["stature"] <= 1.95
    if 0.0 < ph["height"] < 1.0:  # not clipped
        assert np.ptp(pb.rest[:, 1]) == pytest.approx(ph["stature"], abs=5e-3)


def test_frame_up_front_left(body):
    pb = posed_body(body, _subject(body, 0), {"family": "a_pose", "arm_abduction_L": 40.0,
                                              "arm_abduction_R": 40.0, **NEUTRAL})
    j = pb.joints
    assert j["head"][1] > j["root"][1] > j["foot.L"][1]                        # up is +Y
    assert j["toe3-1.L"][2] > j["foot.L"][2] and j["toe3-1.R"][2] > j["foot.R"][2]  # toes point to +Z
    assert j["eye.L"][0] > j["eye.R"][0] and j["wrist.L"][0] > 0 > j["wrist.R"][0]  # the subject's left on +X
    assert np.allclose(anny_to_frame(np.array([0.0, -1.0, 0.0])), [0, 0, 1])     # anny's front (-Y) is our +Z


@pytest.mark.parametrize("abduction", [20.0, 45.0])
def test_upper_arms_point_where_asked(body, abduction):
    pose = {"family": "a_pose", "arm_abduction_L": abduction, "arm_abduction_R": abduction, **NEUTRAL}
    j = posed_body(body, _subject(body, 1), pose).joints
    for side, sign in (("L", 1), ("R", -1)):
        upper = j[f"lowerarm01.{side}"] - j[f"upperarm01.{side}"]
        want = np.array([sign * math.sin(math.radians(abduction)), -math.cos(math.radians(abduction)), 0.0])
        assert _angle_deg(upper, want) < 2.0
        fore = j[f"wrist.{side}"] - j[f"lowerarm01.{side}"]
        assert _angle_deg(fore, want) < 2.0  # elbow 0: a straight arm


def test_knee_and_elbow_bend(body):
    pose = {"family": "relaxed", "arm_abduction_L": 20.0, "arm_abduction_R": 20.0,
            **dict(NEUTRAL, elbow_L=60.0, knee_R=30.0)}
    j = posed_body(body, _subject(body, 2), pose).joints
    arm = _angle_deg(j["lowerarm01.L"] - j["upperarm01.L"], j["wrist.L"] - j["lowerarm01.L"])
    leg = _angle_deg(j["lowerleg01.R"] - j["upperleg01.R"], j["foot.R"] - j["lowerleg01.R"])
    assert arm == pytest.approx(60.0, abs=2.0) and leg == pytest.approx(30.0, abs=2.0)
    # the forearm swings forward (+Z), the shin backward (-Z)
    assert (j["wrist.L"] - j["lowerarm01.L"])[2] > 0 > (j["foot.R"] - j["lowerleg01.R"])[2]


def test_walking_stride_puts_one_foot_forward(body):
    rng = np.random.default_rng(3)
    pose = sample_pose(rng, {"walking": 1.0})
    front = "L" if pose["hip_flexion_L"] > pose["hip_flexion_R"] else "R"
    back = "R" if front == "L" else "L"
    j = posed_body(body, _subject(body, 3), pose).joints
    assert j[f"foot.{front}"][2] - j[f"foot.{back}"][2] > 0.3


def test_sampling_is_deterministic_and_covers_the_families(body):
    a = [sample_pose(np.random.default_rng(s), dict.fromkeys(POSE_FAMILIES, 1.0)) for s in range(30)]
    b = [sample_pose(np.random.default_rng(s), dict.fromkeys(POSE_FAMILIES, 1.0)) for s in range(30)]
    assert a == b and {p["family"] for p in a} == set(POSE_FAMILIES)
    ph = _subject(body, 4)
    v1 = posed_body(body, ph, a[0]).vertices
    v2 = posed_body(body, ph, a[0]).vertices
    assert np.array_equal(v1, v2)
