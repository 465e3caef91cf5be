"""The transparent-object task: its metrics on cases with known answers, the built-in data (transparent
scenes, here through the Blender-free ray caster) and ClearPose in its published layout end to end
through the harness and the CLI on a tiny model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import cli
from synthetic import RaycastRenderer

pytest.importorskip("peft")

from finetune.data import TaskDataError  # noqa: E402
from finetune.evaluate import transparent_sequence_metrics  # noqa: E402
from finetune.harness import FinetuneConfig, run_method  # noqa: E402
from finetune.tasks.clearpose import write_clearpose_fixture  # noqa: E402
from finetune.tasks.transparent import (TransparentData, clearpose_splits, clearpose_task_data,  # noqa: E402
                                        prepare_transparent_data)


def _plane_sequence(views: int = 2, hw=(24, 32)) -> dict:
    """A wall at 2 m seen head-on, a 'glass' square in front of it at 1.5 m."""
    H, W = hw
    depth = np.full((views, H, W), 2.0)
    glass = np.zeros((views, H, W), bool)
    glass[:, 8:16, 10:20] = True
    depth[glass] = 1.5
    K = np.array([[30.0, 0, W / 2 - 0.5], [0, 30.0, H / 2 - 0.5], [0, 0, 1]])
    E = np.stack([np.hstack([np.eye(3), [[0.01 * v], [0], [0]]]) for v in range(views)])
    return {"depths": torch.from_numpy(depth).float(), "point_masks": torch.ones(views, H, W, dtype=torch.bool),
            "transparent_masks": torch.from_numpy(glass), "intrinsics": torch.from_numpy(np.stack([K] * views)).float(),
            "extrinsics": torch.from_numpy(E).float()}


def test_metrics_perfect_and_seen_through():
    seq = _plane_sequence()
    gt = seq["depths"].numpy()
    perfect = transparent_sequence_metrics(gt.copy(), seq, 1000.0, 20.0)
    assert perfect["abs_rel"] == pytest.approx(0, abs=1e-6) and perfect["abs_rel_tr"] == pytest.approx(0, abs=1e-6)
    assert perfect["delta1_tr"] == 1.0 and perfect["acc_mean"] == pytest.approx(0, abs=1e-3)
    share = seq["transparent_masks"].float().mean().item()
    assert perfect["transparent_share"] == pytest.approx(share)
    # a prediction that sees through the glass (the wall behind it): wrong only on the glass pixels
    through = np.full_like(gt, 2.0)
    m = transparent_sequence_metrics(through, seq, 1000.0, 1000.0)
    assert m["abs_rel_tr"] == pytest.approx(0.5 / 1.5, rel=1e-4)   # |2 - 1.5| / 1.5
    assert m["delta1_tr"] == 0.0 and m["delta1"] == pytest.approx(1 - share, abs=1e-6)
    assert m["abs_rel"] == pytest.approx(share * 0.5 / 1.5, rel=1e-3)
    assert m["acc_mean"] == pytest.approx(500.0, rel=0.02)          # the glass points are 0.5 m too far
    # no glass in view: the glass numbers are undefined, not zero
    seq["transparent_masks"][:] = False
    none = transparent_sequence_metrics(gt.copy(), seq, 1000.0, 20.0)
    assert math.isnan(none["abs_rel_tr"]) and math.isnan(none["acc_mean"]) and none["abs_rel"] < 1e-6


def test_built_in_data_and_a_run(tmp_path, tiny_checkpoint):
    cfg_data = TransparentData(root=str(tmp_path / "data"), train=2, val=1, test=1, samples=2, views=2,
                               resolution=28, preset="preview")
    data = prepare_transparent_data(cfg_data, renderer=RaycastRenderer, progress=False, say=lambda *_: None)
    assert [len(data.partitions[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    names = [d.name for s in ("train", "val", "test") for d in data.partitions[s]]
    assert names == ["p000", "p001", "p002", "p003"]           # disjoint set-ups across the splits
    ds = data.dataset("test", 2, 28, normalize=False)
    assert ds[0]["transparent_masks"].shape == (2, 28, 28)
    again = prepare_transparent_data(cfg_data, renderer=None, progress=False)  # all there: nothing rendered
    assert again.partitions == data.partitions
    cfg = FinetuneConfig(task="transparent", method="lora", steps=2, lr=1e-3, resolution=28, frames=2,
                         checkpoint=str(tiny_checkpoint), basis=str(tmp_path / "none"), out=str(tmp_path / "runs"),
                         progress=False)
    res = run_method(cfg, data, "lora", say=lambda *_: None)
    test = res["runs"][0]["test"]
    assert test["sequences"] == 2 and 0 < test["abs_rel"] < 5 and "auc" not in test
    assert {"abs_rel_tr", "delta1_tr", "acc_mean", "nc_mean"} <= set(test)


def test_clearpose_splits_follow_the_paper(tmp_path):
    write_clearpose_fixture(tmp_path, scenes=5, frames=24, hw=(42, 56))
    splits = clearpose_splits(tmp_path)
    scene = lambda name: tmp_path / "set1" / name  # noqa: E731
    assert [s for s, _ in splits["train"]] == [scene("scene1"), scene("scene2"), scene("scene3")]
    assert splits["val"] == [(scene("scene4"), "val")]
    assert splits["test"] == [(scene("scene5"), "test_new_background")]
    (tmp_path / "set1" / "scene5" / "metadata.mat").unlink()
    with pytest.raises(TaskDataError, match="test split"):
        clearpose_task_data(tmp_path)


def test_cli_on_clearpose(tmp_path, tiny_checkpoint):
    write_clearpose_fixture(tmp_path / "clearpose", scenes=5, frames=24, hw=(42, 56))
    r = cli("finetune", "transparent", "--method", "lora", "--lr", "1e-3", "--steps", "2", "--data",
            str(tmp_path / "clearpose"), "--checkpoint", str(tiny_checkpoint), "--resolution", "28", "--frames", "2",
            "--basis", str(tmp_path / "none"), "--out", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "runs/transparent/lora-r16/lr0.001/seed0/record.json").read_text())
    assert record["test"]["sequences"] == 1 and record["test"]["abs_rel_tr"] is not None
    assert set(record["test_by_source"]) == {"test_new_background"}
    assert "AbsRel glass" in r.stdout and "| no fine-tuning |" in r.stdout and "| lora |" in r.stdout
    bad = tmp_path / "partial"
    write_clearpose_fixture(bad, scenes=1, frames=24, hw=(42, 56))
    r = cli("finetune", "transparent", "--method", "lora", "--data", str(bad), "--checkpoint", str(tiny_checkpoint),
            "--basis", str(tmp_path / "none"), "--out", str(tmp_path / "runs2"))
    assert r.returncode == 2 and str(bad) in r.stderr and len(r.stderr.strip().splitlines()) == 1
