"""The trainer on a tiny stand-in model (not VGGT) and tiny synthetic partitions: the loss goes down, only the given
parameters train, an interrupted and resumed run equals an uninterrupted one bit for bit, the
non-finite guard stops and keeps the last good checkpoint, and the logs are written."""
from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from synthetic import write_partitions
from model.checkpoint import load_checkpoint
from training import NONFINITE_EXIT_CODE, SynthSequences, TrainConfig, find_partitions, lr_factor, make_loader, train, vggt_loss

torch.set_num_threads(1)


class TinyVGGT(nn.Module):
    """Images [B,S,3,H,W] -> the official output keys. BatchNorm (buffers) and dropout (RNG) on purpose:
    resuming must restore both."""

    def __init__(self, stages: int = 4):
        super().__init__()
        self.stages = stages
        self.encoder = nn.Conv2d(3, 16, 3, padding=1)
        self.norm = nn.BatchNorm2d(16)
        self.dropout = nn.Dropout(0.1)
        self.dense = nn.Conv2d(16, 6, 3, padding=1)  # depth, depth conf, xyz, point conf
        self.pose = nn.Linear(16, 9)
        self.refine = nn.Linear(9, 9)

    def forward(self, images):
        B, S, _, H, W = images.shape
        features = self.dropout(torch.relu(self.norm(self.encoder(images.flatten(0, 1)))))
        dense = self.dense(features).unflatten(0, (B, S)).permute(0, 1, 3, 4, 2)  # [B,S,H,W,6]
        pose = self.pose(features.mean((2, 3))).unflatten(0, (B, S))
        poses = [pose]
        for _ in range(self.stages - 1):
            poses.append(poses[-1] + self.refine(poses[-1].detach()))
        return {"pose_enc_list": poses, "depth": torch.exp(dense[..., :1]), "depth_conf": 1 + torch.exp(dense[..., 1]),
                "world_points": dense[..., 2:5], "world_points_conf": 1 + torch.exp(dense[..., 5])}


def tiny_model(seed: int = 0) -> TinyVGGT:
    torch.manual_seed(seed)
    return TinyVGGT()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """4 sequences of 2 frames at 28x42 from one partition rendered at 42x28."""
    job = write_partitions(tmp_path_factory.mktemp("synth"), partitions=1, samples=4, views=2, hw=(28, 42))
    return SynthSequences(find_partitions(job.root), num_frames=2)


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{"steps": 6, "lr": 1e-3, "progress": False, "checkpoint_every": 100, **overrides})


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_goes_down_and_logs_are_written(dataset, tmp_path):
    model = tiny_model()
    loader = make_loader(dataset, batch_size=2)
    val_loader = make_loader(dataset, batch_size=2, shuffle=False)
    cfg = config(steps=40, lr=1e-2, val_every=20)
    result = train(model, model.parameters(), loader, cfg, val_loader=val_loader, out_dir=tmp_path)
    assert (result.status, result.exit_code, result.step) == ("finished", 0, 40)
    rows = read_csv(tmp_path / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    assert {"loss", "camera", "depth", "depth_grad", "lr", "grad_norm", "seconds"} <= set(rows[0])
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    assert [int(r["step"]) for r in read_csv(tmp_path / "val.csv")] == [20, 40]
    assert result.val["loss"] == pytest.approx(float(read_csv(tmp_path / "val.csv")[-1]["loss"]))
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.last_checkpoint == tmp_path / "checkpoints" / "step_00000040.pt"


def test_a_trainer_checkpoint_is_safe_to_load_and_gives_the_trained_weights(dataset, tmp_path):
    model = tiny_model()
    result = train(model, model.parameters(), make_loader(dataset, batch_size=2), config(steps=3), out_dir=tmp_path)
    state = torch.load(result.last_checkpoint, weights_only=True)  # no pickled code: safe for others' files
    assert state["step"] == 3
    fresh = tiny_model(seed=1)
    assert load_checkpoint(fresh, result.last_checkpoint) == {"missing": [], "unexpected": [], "mismatched": []}
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_learning_rate_warms_up_then_decays_by_cosine(dataset, tmp_path):
    cfg = config(steps=20, warmup=0.2, min_lr=1e-8)
    factors = [lr_factor(s, cfg) for s in range(cfg.steps)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a > b for a, b in zip(factors[3:], factors[4:]))
    assert factors[-1] == pytest.approx(1e-8 / cfg.lr)
    model = tiny_model()
    train(model, model.parameters(), make_loader(dataset, batch_size=2), cfg, out_dir=tmp_path)
    logged = [float(r["lr"]) for r in read_csv(tmp_path / "log.csv")]
    assert logged == pytest.approx([cfg.lr * f for f in factors])


def test_only_the_given_parameters_change(dataset, tmp_path):
    model = tiny_model()
    before = snapshot(model)
    trainable = list(model.dense.parameters()) + [model.pose.weight]
    groups = [{"params": list(model.dense.parameters())}, {"params": [model.pose.weight], "lr": 1e-2}]
    train(model, groups, make_loader(dataset, batch_size=2), config(), out_dir=tmp_path)
    names = {n for n, p in model.named_parameters() if any(p is q for q in trainable)}
    assert names == {"dense.weight", "dense.bias", "pose.weight"}
    for name, param in model.named_parameters():
        assert param.requires_grad == (name in names)
        assert torch.equal(param, before[name]) != (name in names), name


def test_parameters_must_belong_to_the_model(dataset, tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match="not registered in the model"):
        train(model, [nn.Parameter(torch.zeros(3))], make_loader(dataset), config(), out_dir=tmp_path)


class Interrupt(Exception):
    pass


def interrupting(after_calls: int):
    """vggt_loss that raises on call number ``after_calls + 1``, like a job killed mid-step."""
    calls = []

    def loss_fn(predictions, batch):
        if len(calls) == after_calls:
            raise Interrupt
        calls.append(1)
        return vggt_loss(predictions, batch)
    return loss_fn


@pytest.mark.parametrize("batch_size, accum_steps, checkpoint_every, killed_in_step", [
    (2, 1, 3, 5),   # 2 batches per epoch: resume from step 3 lands mid-epoch
    (1, 3, 2, 4),   # accumulation across epoch boundaries; resume from step 2 at batch 6 of 4-batch epochs
])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(dataset, tmp_path, batch_size, accum_steps,
                                                                 checkpoint_every, killed_in_step):
    # seed 1: with seed 0 and 4 samples, a wrongly redrawn shuffle happens to give the same remaining batches
    cfg = config(steps=7, accum_steps=accum_steps, checkpoint_every=checkpoint_every, keep_checkpoints=1, seed=1)
    straight = tiny_model()
    train(straight, straight.parameters(), make_loader(dataset, batch_size=batch_size), cfg,
          out_dir=tmp_path / "straight")

    model = tiny_model()
    with pytest.raises(Interrupt):
        train(model, model.parameters(), make_loader(dataset, batch_size=batch_size), cfg,
              loss_fn=interrupting((killed_in_step - 1) * accum_steps + accum_steps // 2), out_dir=tmp_path / "resumed")
    assert [int(r["step"]) for r in read_csv(tmp_path / "resumed" / "log.csv")] == list(range(1, killed_in_step))
    resumed = tiny_model(seed=1)  # a new process would rebuild the model; the checkpoint restores the rest
    result = train(resumed, resumed.parameters(), make_loader(dataset, batch_size=batch_size), cfg,
                   out_dir=tmp_path / "resumed")
    assert result.step == 7
    a, b = snapshot(straight), snapshot(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    columns = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert columns(read_csv(tmp_path / "straight" / "log.csv")) == columns(read_csv(tmp_path / "resumed" / "log.csv"))
    assert [p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()] == ["step_00000007.pt"]

    again = train(resumed, resumed.parameters(), make_loader(dataset, batch_size=batch_size), cfg,
                  out_dir=tmp_path / "resumed")  # already finished: nothing to do
    assert again.step == 7 and all(torch.equal(b[k], v) for k, v in snapshot(resumed).items())


def test_sigterm_ends_the_step_checkpoints_and_the_rerun_finishes_the_same_run(dataset, tmp_path):
    cfg = config(steps=6, checkpoint_every=100, seed=1)
    straight = tiny_model()
    train(straight, straight.parameters(), make_loader(dataset, batch_size=2), cfg, out_dir=tmp_path / "straight")

    calls = []

    def preempted(predictions, batch):        # the farm sends SIGTERM during step 3
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return vggt_loss(predictions, batch)

    model = tiny_model()
    result = train(model, model.parameters(), make_loader(dataset, batch_size=2), cfg, loss_fn=preempted,
                   out_dir=tmp_path / "resumed")
    assert (result.status, result.step, result.exit_code) == ("interrupted", 3, 128 + signal.SIGTERM)
    assert "SIGTERM" in result.message and result.last_checkpoint.name == "step_00000003.pt"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL          # the handler is put back
    resumed = tiny_model(seed=1)
    assert train(resumed, resumed.parameters(), make_loader(dataset, batch_size=2), cfg,
                 out_dir=tmp_path / "resumed").step == 6
    a, b = snapshot(straight), snapshot(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_other_settings_is_refused(dataset, tmp_path):
    model = tiny_model()
    train(model, model.parameters(), make_loader(dataset, batch_size=2), config(steps=2), out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"lr: 0.001 -> 0.002"):
        train(model, model.parameters(), make_loader(dataset, batch_size=2), config(steps=2, lr=2e-3), out_dir=tmp_path)


def test_validation_does_not_change_the_training_run(dataset, tmp_path):
    runs = []
    for val_loader in (None, make_loader(dataset, batch_size=2)):  # a shuffled loader draws from the RNG
        model = tiny_model()
        train(model, model.parameters(), make_loader(dataset, batch_size=2), config(val_every=1),
              val_loader=val_loader, out_dir=tmp_path / str(len(runs)))
        runs.append(snapshot(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_non_finite_values_stop_training_and_keep_the_last_good_checkpoint(dataset, tmp_path, what):
    calls = []

    def poisoned(predictions, batch):
        calls.append(1)
        loss, parts = vggt_loss(predictions, batch)
        if len(calls) == 5:
            if what == "loss":
                loss = loss * math.nan
            else:  # finite value, infinite gradient: d sqrt(x)/dx at 0
                depth_sum = predictions["depth"].sum()
                loss = loss + torch.sqrt(depth_sum - depth_sum.detach())
        return loss, parts

    model = tiny_model()
    cfg = config(steps=10, checkpoint_every=2, keep_checkpoints=5)
    result = train(model, model.parameters(), make_loader(dataset, batch_size=2), cfg, loss_fn=poisoned,
                   out_dir=tmp_path)
    assert (result.status, result.step, result.exit_code) == ("nonfinite", 4, NONFINITE_EXIT_CODE)
    assert "step 5" in result.message and what in result.message
    assert result.last_checkpoint == tmp_path / "checkpoints" / "step_00000004.pt"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000002.pt", "step_00000004.pt"]
    saved = torch.load(result.last_checkpoint, weights_only=False)["model"]
    for name, param in model.named_parameters():  # the weights after step 4, untouched by step 5
        assert torch.equal(saved[name], param), name
    assert [int(r["step"]) for r in read_csv(tmp_path / "log.csv")] == [1, 2, 3, 4]
    assert (tmp_path / "loss.png").exists()


def test_peft_lora_adapters_on_our_vggt_train_alone_and_resume(dataset, tmp_path):
    """The trainer with peft adapters on the real (tiny) VGGT: only the LoRA matrices move, the
    checkpoint holds only them, and an interrupted run resumes to the same adapters."""
    peft = pytest.importorskip("peft")
    from model import VGGT, VGGTConfig

    def lora_vggt():
        torch.manual_seed(0)
        linears = r"aggregator\.(frame|global)_blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"
        config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=linears)
        return peft.get_peft_model(VGGT(VGGTConfig.preset("tiny")), config)

    def adapters(model):
        return [p for n, p in model.named_parameters() if "lora_" in n]

    model = lora_vggt()
    before = snapshot(model)
    cfg = config(steps=4, lr=1e-2, checkpoint_every=2)
    result = train(model, adapters(model), make_loader(dataset, batch_size=2), cfg, out_dir=tmp_path / "straight")
    assert result.status == "finished" and math.isfinite(result.last_loss)
    after = snapshot(model)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all("lora_" in k for k in moved)
    assert any("lora_B" in k for k in moved)                       # B starts at zero: the update is real
    saved = torch.load(result.last_checkpoint, weights_only=False)["model"]
    assert len(saved) == len(adapters(model)) == 4 * 2 * 2 * 2     # 4 linears x 2 blocks x frame/global x A/B

    again = lora_vggt()
    with pytest.raises(Interrupt):
        train(again, adapters(again), make_loader(dataset, batch_size=2), cfg, loss_fn=interrupting(3),
              out_dir=tmp_path / "resumed")
    again = lora_vggt()
    train(again, adapters(again), make_loader(dataset, batch_size=2), cfg, out_dir=tmp_path / "resumed")
    assert all(torch.equal(after[k], v) for k, v in snapshot(again).items())


# ---------------------------------------------------------------------------------------------
# Many fits in one process (mining trains dozens of LoRAs in one process)
# ---------------------------------------------------------------------------------------------

FITS = {  # two different runs: another seed, learning rate, batch size and accumulation
    "a": dict(config=dict(steps=5, seed=1, lr=1e-2, val_every=2), batch_size=2, model_seed=0),
    "b": dict(config=dict(steps=4, seed=2, lr=3e-3, accum_steps=2), batch_size=1, model_seed=3),
}


def run_fits(names: list[str], data_root: str, out: str) -> dict:
    """Run the named FITS one after the other in this process; save each model's final state dict to
    ``out/<name>.pt``. Returns what the fits changed of the process's global state (should be nothing)."""
    dataset = SynthSequences(find_partitions(data_root), num_frames=2)
    models = {name: tiny_model(FITS[name]["model_seed"]) for name in names}

    def process_state():  # rcParams._get: reading rcParams["backend"] would itself resolve it (and import pyplot)
        return (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(),
                signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), matplotlib.rcParams._get("backend"))

    before = process_state()
    for name in names:
        spec = FITS[name]
        train(models[name], models[name].parameters(), make_loader(dataset, batch_size=spec["batch_size"]),
              config(**spec["config"]), val_loader=make_loader(dataset, batch_size=2),
              out_dir=Path(out) / "runs" / name)
        torch.save(snapshot(models[name]), Path(out) / f"{name}.pt")
    after = process_state()
    labels = ("torch rng", "numpy rng", "python rng", "SIGTERM handler", "SIGINT handler", "matplotlib backend")
    changed = [label for label, a, b in zip(labels, before, after)
               if not (torch.equal(a, b) if torch.is_tensor(a) else np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b)]
    return {"changed": changed, "pyplot": "matplotlib.pyplot" in sys.modules}


def test_fits_back_to_back_in_one_process_equal_each_fit_alone(dataset, tmp_path):
    """Each fit alone in a fresh process, then both in one process (in this order and reversed): the
    weights are identical, and the fits leave the process's RNGs, signal handlers and plotting alone."""
    tests = str(Path(__file__).parent)
    data_root = str(Path(dataset.sample_dirs[0]).parents[1])

    def in_fresh_process(names: list[str], out: Path) -> dict:
        code = (f"import sys, json; sys.path[:0] = [{tests!r}]; import test_training_trainer as t; "
                f"print(json.dumps(t.run_fits({names!r}, {data_root!r}, {str(out)!r})))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tests)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    runs = {"a alone": ["a"], "b alone": ["b"], "a then b": ["a", "b"], "b then a": ["b", "a"]}
    reports = {label: in_fresh_process(names, tmp_path / label) for label, names in runs.items()}
    for label, report in reports.items():
        assert report == {"changed": [], "pyplot": False}, (label, report)
    for name in "ab":
        alone = torch.load(tmp_path / f"{name} alone" / f"{name}.pt")
        for label in ("a then b", "b then a"):
            shared = torch.load(tmp_path / label / f"{name}.pt")
            assert all(torch.equal(alone[k], shared[k]) for k in alone), (name, label)
    a, b = torch.load(tmp_path / "a alone" / "a.pt"), torch.load(tmp_path / "b alone" / "b.pt")
    assert not all(torch.equal(a[k], b[k]) for k in a)  # two different runs, not one run twice
