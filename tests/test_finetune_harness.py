"""The fine-tuning harness on a tiny model and Blender-free mesh partitions: every method prepares, trains
only its own parameters and changes the prediction; a run is recorded, skipped when finished, and the
comparison table starts with the no-fine-tuning row; evaluation is exact on a perfect prediction; the
parameter accounting reproduces the paper's at VGGT-1B shapes; bad input is one line and exit code 2."""
from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch

from conftest import cli
from synthetic import write_mesh_partitions, write_test_meshes

peft = pytest.importorskip("peft")

from finetune.data import TaskData  # noqa: E402
from finetune.evaluate import sequence_metrics  # noqa: E402
from finetune.harness import FinetuneConfig, compare, run_method  # noqa: E402
from finetune.methods import METHODS, MethodContext, prepare  # noqa: E402
from mining.config import DEFAULT_TARGETS  # noqa: E402
from model import VGGT, VGGTConfig, save_checkpoint  # noqa: E402
from training.rng import seeded  # noqa: E402


def tiny(layer_scale: float | None = None):
    """The tiny random VGGT; ``layer_scale`` = 1 lets the aggregator's layers move the depth (at the default
    LayerScale of 0.01 a random tiny model's depth barely depends on them)."""
    cfg = VGGTConfig.preset("tiny")
    if layer_scale is not None:
        cfg = dataclasses.replace(cfg, init_values=layer_scale)
    with seeded(0):
        return VGGT(cfg)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """Three splits of micro-baseline renders of small meshes; ellipsoids count as live, boxes as spoofs."""
    root = tmp_path_factory.mktemp("finetune")
    save_checkpoint(tiny(), root / "tiny.safetensors")
    meshes = write_test_meshes(root / "meshes")
    chosen = {"ply": 1, "obj": 1, "off": 0, "glb": 0}
    partitions, info = {}, {}
    for seed, split in enumerate(("train", "val", "test")):
        for fmt, label in chosen.items():
            job = write_mesh_partitions(root / "render" / split / fmt, meshes[fmt], rig="micro-baseline", samples=2,
                                        views=2, hw=(28, 28), seed=seed, name="m")
            for p in job.partition_ids():
                d = job.partition_dir(p)
                partitions.setdefault(split, []).append(d)
                info[d] = {"label": label, "kind": fmt, "identity": fmt, "source": "scan" if fmt == "obj" else "anny"}
    return root, TaskData(name="face", partitions=partitions, info=info)


def config(root, **kw):
    base = dict(steps=3, resolution=28, frames=2, checkpoint=str(root / "tiny.safetensors"), basis=str(root / "none"),
                out=str(root / "runs"), progress=False, calibration_batches=2)
    return FinetuneConfig(**(base | kw))


@pytest.mark.parametrize("method", [m for m in METHODS if m != "ours"])
def test_every_method_trains_only_its_own_parameters(method, tmp_path):
    model = tiny(layer_scale=1.0)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.fullmatch(DEFAULT_TARGETS, n)]
    x = torch.rand(2, 2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)["depth"].clone()
    ctx = MethodContext(method=method, targets=names, rank=4, steps=10, workdir=tmp_path,
                        calibration=lambda: [{"images": torch.rand(1, 2, 3, 28, 28)} for _ in range(2)])
    adapted = prepare(method, model, ctx)
    assert adapted.trainable == sum(p.numel() for p in adapted.params) > 0
    with torch.no_grad():                       # every method starts from the base model's function
        assert torch.allclose(adapted.model(x)["depth"], before, atol=1e-4)
    frozen = {n: p.detach().clone() for n, p in adapted.model.named_parameters()
              if all(p is not q for q in adapted.params)}
    # Adam: the tiny random model's gradients are ~1e-6, and Adam's steps do not scale with them
    opt = torch.optim.Adam(adapted.params, lr=0.05)
    for p in adapted.model.parameters():
        p.requires_grad_(any(p is q for q in adapted.params))
    for step in range(2):
        loss = (adapted.model(x)["depth"] - 2.0).pow(2).mean()
        if adapted.regulariser is not None:
            loss = loss + adapted.regulariser()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if adapted.after_step is not None:
            adapted.after_step(step)
    with torch.no_grad():
        assert float((adapted.model(x)["depth"] - before).abs().max()) > 1e-5   # float32 noise: ~1e-7
    for n, p in adapted.model.named_parameters():
        if n in frozen and "lora_E" not in n and "ranknum" not in n:
            assert torch.equal(p, frozen[n]), f"{method}: {n} changed but is not trainable"
    adapted.save(tmp_path / "adapter")
    assert any((tmp_path / "adapter").iterdir())


def test_run_is_recorded_skipped_when_done_and_compared(task):
    root, data = task
    cfg = config(root, lr=1e-3)
    res = run_method(cfg, data, "lora", say=lambda *_: None)
    rec = res["runs"][0]
    assert rec["status"] == "finished" and rec["trainable"] == 16 * 4 * (4 * 64 * 2 + 64 * 4 + 64 * 4)
    for split in ("val", "test"):
        assert 0 <= rec[split]["abs_rel"] < 1 and 0 <= rec[split]["delta1"] <= 1
        assert rec[split]["acc_mean"] >= 0 and rec[split]["sequences"] == 8
        assert 0 <= rec[split]["auc"] <= 1
    assert rec["test"]["threshold_from"] == "validation (EER)"
    assert set(rec["test_by_source"]) == {"anny", "scan"}
    record = root / "runs/face/lora-r16/lr0.001/seed0/record.json"
    stamp = record.stat().st_mtime_ns
    run_method(cfg, data, "lora", say=lambda *_: None)
    assert record.stat().st_mtime_ns == stamp          # finished: not trained again
    assert (root / "runs/face/lora-r16/lr0.001/seed0/adapter/adapter_model.safetensors").is_file()

    table = compare(cfg, data, ["lora", "psv"], say=lambda *_: None)
    names = [r["method"] for r in table["rows"]]
    assert names == ["no fine-tuning", "constant depth (control)", "lora", "psv"]
    md = (root / "runs/face/compare.md").read_text()
    assert md.splitlines()[2].startswith("| no fine-tuning | 0 |")
    assert (root / "runs/face/compare.csv").read_text().count("\n") == 5
    assert (root / "runs/face/metrics_vs_params.png").stat().st_size > 1000
    grid = json.loads((root / "runs/face/psv-d64/lr_grid.json").read_text())
    assert grid["chosen"] == 1e-3 and grid["tried"][0]["lr"] == 1e-3


def test_a_record_from_another_base_model_or_settings_is_refused(task, tmp_path):
    """A finished run is reused only on the base model (sha256) and settings that made it."""
    from finetune.harness import FinetuneError

    root, data = task
    other = tmp_path / "other.safetensors"
    save_checkpoint(tiny(layer_scale=0.5), other)
    cfg = config(root, lr=1e-3, out=str(tmp_path / "runs"))
    run_method(cfg, data, "psv", say=lambda *_: None)
    record = tmp_path / "runs/face/psv-d64/lr0.001/seed0/record.json"
    stored = json.loads(record.read_text())
    assert len(stored["checkpoint_sha256"]) == 64 and stored["settings"]["steps"] == 3
    with pytest.raises(FinetuneError, match=r"record\.json: made on another base model \(sha256 " + stored["checkpoint_sha256"][:12]):
        run_method(dataclasses.replace(cfg, checkpoint=str(other)), data, "psv", say=lambda *_: None)
    with pytest.raises(FinetuneError, match=r"made with other settings \(steps: 3 -> 4\)"):
        run_method(dataclasses.replace(cfg, steps=4), data, "psv", say=lambda *_: None)
    legacy = {k: v for k, v in stored.items() if k != "checkpoint_sha256"}   # a record from before the sha256
    record.write_text(json.dumps(legacy))
    with pytest.raises(FinetuneError, match="made before runs recorded their base model's sha256"):
        run_method(cfg, data, "psv", say=lambda *_: None)


def test_evaluation_of_a_perfect_prediction(task):
    _, data = task
    ds = data.dataset("test", frames=2, resolution=28, normalize=False)
    seq = ds[0]
    m = sequence_metrics(seq["depths"].numpy() * 3.0, seq, 1000.0, 20.0)   # any scale: median-aligned
    assert m["abs_rel"] < 1e-6 and m["delta1"] == 1.0
    assert m["acc_mean"] < 1e-4 and m["comp_mean"] < 1e-4 and m["nc_mean"] > 0.999      # mm; float32 depths
    assert m["relief"] == pytest.approx(m["relief_gt"], rel=1e-6)
    flat = sequence_metrics(np.ones(seq["depths"].shape), seq, 1000.0, 20.0)
    assert flat["abs_rel"] > m["abs_rel"] and flat["acc_mean"] > 0
    assert flat["relief"] == 0.0       # a constant depth map is a plane: no round-off score to rank by


def test_paper_parameter_accounting_at_vggt_1b():
    from finetune.params import method_counts, paper_accounting

    cfg = VGGTConfig.preset("vggt-1b")
    paper = paper_accounting(cfg)
    assert round(paper["lora"] / 1e6, 1) == 16.3 and round(paper["full"] / 1e6, 1) == 853.6
    assert paper["lora_aggregator"] == 12_582_912 and paper["lora_depth_head"] == 1_426_464
    counts = method_counts(cfg, rank=16, dim=16, methods=("ours", "lora", "full"))
    assert counts["ours"] == 192 * 16 * 16 and counts["lora"] == 12_582_912


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    r = cli("finetune", "face", "--basis", str(tmp_path / "missing.safetensors"))
    assert r.returncode == 2 and "python cli.py mine" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("finetune", "face", "--method", "lora", "--data", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "nowhere" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("finetune", "face", "--method", "nonsense")
    assert r.returncode == 2 and "nonsense" in r.stderr
    other = tmp_path / "other.safetensors"               # a basis for another model
    from finetune.bases import random_basis
    random_basis(tiny(), other, 4)
    r = cli("finetune", "face", "--basis", str(other))
    assert r.returncode == 2 and str(other) in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_on_user_rgbd_data(task, tmp_path):
    """`finetune --data DIR` with the RGB-D layout of docs/rgbd.md: the renders converted, labels kept."""
    from finetune.rgbd import write_rgbd_sequence
    from render.dataset import load_partition

    root, data = task
    for split, folders in data.partitions.items():
        for d in folders:
            label = "live" if data.info[d]["label"] == 1 else "spoof"
            for k, s in enumerate(load_partition(d).samples):
                write_rgbd_sequence(tmp_path / "mine" / split, f"{d.parent.parent.name}_{k}", s.images, s.depths,
                                    s.intrinsics, s.extrinsics, label=label, depth_format="npy")
    r = cli("finetune", "face", "--method", "lora", "--lr", "1e-3", "--steps", "2", "--data", str(tmp_path / "mine"),
            "--checkpoint", str(root / "tiny.safetensors"), "--resolution", "28", "--frames", "2",
            "--basis", str(tmp_path / "none"), "--out", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "runs/face/lora-r16/lr0.001/seed0/record.json").read_text())
    assert record["test"]["sequences"] == 8 and 0 <= record["test"]["auc"] <= 1
    assert "| no fine-tuning |" in r.stdout and "| lora |" in r.stdout


def test_lr_grid_extends_past_a_best_end(tmp_path, monkeypatch):
    """A best rate at the grid's end is not trusted: the grid grows along the 1-3-10 ladder (twice at most)."""
    import finetune.harness as h

    calls = []

    def fake_run(cfg, data, method, lr, seed, say=print):
        calls.append((lr, seed))
        return {"status": "finished", "val": {"abs_rel": abs(math.log10(lr) - math.log10(0.05))}, "trainable": 1}

    monkeypatch.setattr(h, "run_one", fake_run)
    cfg = FinetuneConfig(out=str(tmp_path), seeds=2, checkpoint="x", basis="none")
    res = h.run_method(cfg, None, "ours", say=lambda *_: None)
    assert [t["lr"] for t in res["grid"]] == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    assert res["lr"] == 3e-2 and calls[-2:] == [(3e-2, 0), (3e-2, 1)]
    grid = json.loads((tmp_path / "face/ours-mined/lr_grid.json").read_text())
    assert grid["chosen"] == 3e-2 and len(grid["tried"]) == 5
