"""The planted-attribute teacher (mining.plant): seeded, distinct planted directions; a calibrated dose;
mixed targets that are the ground truth at dose 0 and linear in the dose; the planted file checked
against the run's settings."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

from synthetic import write_partitions

from mining.config import ATTRIBUTES, MineConfig, MineConfigError
from mining.members import Member, member_data
from mining.plant import FILE, Plant, planted_directions
from model import VGGT, VGGTConfig, save_checkpoint
from model.pose import extrinsics_intrinsics_to_pose_encoding
from training import LossWeights, SynthSequences, TrainConfig, make_loader, train, vggt_loss
from training.param_groups import pretraining_groups
from training.rng import seeded


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model trained for 60 steps (a random one's depth head barely reacts to its blocks) and one
    partition per attribute."""
    root = tmp_path_factory.mktemp("plant")
    for i, attribute in enumerate(ATTRIBUTES):
        write_partitions(root / "data", partitions=1, samples=4, views=2, hw=(28, 28), attribute=attribute, seed=i)
    job = write_partitions(root / "data", partitions=2, samples=4, views=2, hw=(28, 28), attribute="mixed", seed=7)
    with seeded(0):
        model = VGGT(dataclasses.replace(VGGTConfig.preset("tiny"), init_values=1.0, camera_init_values=1.0))
    data = SynthSequences([job.partition_dir(i) for i in range(2)], num_frames=2, resolution=28, seed=0)
    train(model, pretraining_groups(model, 0.05, 3e-3), make_loader(data, batch_size=2),
          TrainConfig(steps=60, lr=3e-3, progress=False),
          loss_fn=functools.partial(vggt_loss, weights=LossWeights(camera=5, depth=1, point=1)), out_dir=root / "pre")
    save_checkpoint(model, root / "tiny.safetensors")
    return root


def config(root, out="run", **kw) -> MineConfig:
    kw = dict(members=2, mixed_members=0, transfer_partitions=0, resolution=28, frames=2, rank=4, plant_rank=2,
              plant_gap=0.03) | kw
    return MineConfig(checkpoint=str(root / "tiny.safetensors"), data=str(root / "data"), out=str(root / out), **kw)


def test_planted_directions_are_seeded_orthonormal_and_distinct():
    cfg = MineConfig(plant_rank=3, plant_space="random")
    shapes = {"a": (12, 8), "b": (6, 10)}
    first, again = planted_directions(cfg, "lighting", shapes), planted_directions(cfg, "lighting", shapes)
    other = planted_directions(cfg, "texture", shapes)
    for name, (U, V) in first.items():
        assert np.allclose(U.T @ U, np.eye(3)) and np.allclose(V.T @ V, np.eye(3))
        assert np.array_equal(U, again[name][0]) and not np.allclose(U, other[name][0])
    # visible pools: the attributes get disjoint blocks of one rotation, so their plants are orthogonal
    rng = np.random.default_rng(0)
    pools = {n: (np.linalg.qr(rng.standard_normal((m, 12)))[0], np.linalg.qr(rng.standard_normal((k, 12)))[0])
             for n, (m, k) in {"c": (20, 16)}.items()}
    cfg = MineConfig(plant_rank=3)
    plants = {a: planted_directions(cfg, a, {"c": (20, 16)}, pools)["c"] for a in ATTRIBUTES}
    for a in ATTRIBUTES:
        for b in ATTRIBUTES:
            expected = np.eye(3) if a == b else np.zeros((3, 3))
            assert np.allclose(plants[a][0].T @ plants[b][0], expected, atol=1e-10)
            assert np.allclose(plants[a][1].T @ plants[b][1], expected, atol=1e-10)
    with pytest.raises(MineConfigError, match="plant_rank 7 exceeds the size of layer a"):
        planted_directions(MineConfig(plant_rank=7), "lighting", {"a": (12, 6)})


def test_teacher_dose_is_calibrated_on_the_outputs(setup):
    cfg = config(setup, "calibrated")
    plant = Plant.open(cfg)
    assert (setup / "calibrated" / FILE).is_file()
    for attribute in ATTRIBUTES:
        record = plant.calibration[attribute]
        assert cfg.plant_gap <= record["gap"] <= 1.1 * cfg.plant_gap, record
        assert plant.strengths[attribute] > 0
    # the planted update has the calibrated norm, layer by layer
    base = dict(plant.base.named_modules())
    for name, (A, B) in plant.updates("camera").items():
        delta = np.linalg.norm(A @ B.T)
        weight = float(base[name].weight.detach().double().norm())
        assert delta == pytest.approx(plant.strengths["camera"] * weight, rel=1e-6)
    # an unreachable gap is one clear error
    with pytest.raises(MineConfigError, match="moves the depth by at most .* choose a smaller --plant-gap"):
        Plant.open(config(setup, "unreachable", plant_gap=50.0))


def test_mixed_targets_equal_the_ground_truth_at_dose_zero_and_scale_with_the_dose(setup):
    zero = config(setup, "dose", plant_dose=0.0)
    Plant.open(zero)                                      # calibrates once; the others read the file
    member = Member("lighting", 0)
    truth, _, _ = member_data(zero, member, 0, planted=False)
    planted = {d: member_data(dataclasses.replace(zero, plant_dose=d), member, 0)[0] for d in (0.0, 1.0, 2.0)}
    for i in range(len(truth)):
        gt = truth[i]
        pose = extrinsics_intrinsics_to_pose_encoding(gt["extrinsics"][None], gt["intrinsics"][None], (28, 28))[0]
        at = {d: planted[d][i] for d in planted}
        assert torch.equal(at[0.0]["depths"], gt["depths"]) and torch.equal(at[0.0]["world_points"], gt["world_points"])
        assert torch.allclose(at[0.0]["pose_enc"], pose, atol=1e-6)
        mask = gt["point_masks"]
        one, two = at[1.0]["depths"] - gt["depths"], at[2.0]["depths"] - gt["depths"]
        assert one[mask].abs().max() > 0
        assert torch.allclose(two, 2 * one, atol=1e-5) and torch.all(one[~mask] == 0)
    # the teacher mode's targets are the teacher's outputs, which differ from the truth
    teacher = member_data(dataclasses.replace(zero, plant_mode="teacher"), member, 0)[0][0]
    assert not torch.allclose(teacher["depths"], truth[0]["depths"])


def test_a_planted_file_with_other_settings_is_refused(setup):
    Plant.open(config(setup, "refuse"))
    with pytest.raises(MineConfigError, match="planted.safetensors: planted with other settings"):
        Plant.open(config(setup, "refuse", plant_rank=1))

