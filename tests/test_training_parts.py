"""The trainer's pieces, each alone: checkpoint rotation, the run's randomness, clean stops, the logs."""
from __future__ import annotations

import csv
import os
import signal
import sys

import pytest
import torch

from training.checkpoints import CheckpointFolder, load_trainable, trainable_state
from training.logs import CsvLog, plot_losses
from training.rng import RunRandomness, seeded
from training.stop import StopRequests


def test_checkpoint_folder_keeps_the_newest_and_clears_killed_saves(tmp_path):
    (tmp_path / "ckpt").mkdir()
    stale = tmp_path / "ckpt" / ".step_00000007.pt.tmp-123-4.pt"
    stale.write_bytes(b"half")
    folder = CheckpointFolder(tmp_path / "ckpt", keep=2)
    assert not stale.exists() and folder.latest() is None and folder.load_latest(torch.device("cpu")) is None
    for step in (1, 2, 10, 100):
        folder.save(step, {"step": step, "x": torch.tensor([step])})
    assert [p.name for p in folder.all()] == ["step_00000010.pt", "step_00000100.pt"]
    assert folder.load_latest(torch.device("cpu"))["x"].item() == 100
    assert sorted(p.name for p in folder.folder.iterdir()) == ["step_00000010.pt", "step_00000100.pt"]


def test_trainable_state_holds_the_named_parameters_and_the_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    state = trainable_state(model, ["0.weight"])
    assert set(state) == {"0.weight", "1.running_mean", "1.running_var", "1.num_batches_tracked"}
    other = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    load_trainable(other, state)
    assert torch.equal(other[0].weight, model[0].weight) and not torch.equal(other[0].bias, model[0].bias)


def test_run_randomness_is_the_runs_own_and_resumes():
    torch.manual_seed(123)
    caller = torch.get_rng_state()
    with RunRandomness(seed=5, device=torch.device("cpu")) as rng:
        first = torch.rand(3)
        saved = rng.state()
        rest = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), caller)                     # the caller's stream is untouched
    with RunRandomness(seed=5, device=torch.device("cpu")) as rng:
        assert torch.equal(torch.rand(3), first)                          # same seed, same stream
        rng.restore(saved)
        assert torch.equal(torch.rand(3), rest)                           # a resumed run continues it
    with RunRandomness(seed=6, device=torch.device("cpu")):
        assert not torch.equal(torch.rand(3), first)
    with seeded(0):
        a = torch.nn.Linear(4, 4).weight.detach().clone()
    with seeded(0):
        assert torch.equal(torch.nn.Linear(4, 4).weight, a)
    assert torch.equal(torch.get_rng_state(), caller)


def test_stop_requests_end_cleanly_once_then_at_once_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopRequests() as stop:
        assert stop.signal is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal == signal.SIGTERM and stop.name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_csv_log_drops_rows_after_the_checkpoint_and_appends(tmp_path):
    path = tmp_path / "log.csv"
    with CsvLog(path, keep_through_step=0) as log:
        for step in range(1, 6):
            log.write({"step": step, "loss": 1.0 / step})
    with CsvLog(path, keep_through_step=3) as log:     # the run died after its step-3 checkpoint
        assert [int(r["step"]) for r in log.rows] == [1, 2, 3]
        log.write({"step": 4, "loss": 0.5, "unexpected": 1})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"]) for r in rows] == [("1", "1.0"), ("2", "0.5"), ("3", "0.3333333333333333"), ("4", "0.5")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_loss_plot_is_a_png_drawn_without_pyplot(tmp_path):
    pyplot_before = "matplotlib.pyplot" in sys.modules
    plot_losses([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], [{"step": 2, "loss": 1.5}], tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_before
