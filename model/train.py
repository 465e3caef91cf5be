"""The one trainer behind pretraining, LoRA mining and fine-tuning.

    from model.train import TrainConfig, train
    result = train(model, adapter_params, loader, TrainConfig(steps=2000), out_dir="runs/lora_p000")
    sys.exit(result.exit_code)

The caller chooses what trains: plain parameters, peft adapters or our own adapters, as a list of
parameters or of optimizer param groups (dicts with "params" and optional "lr", "weight_decay"). They
must be registered in ``model`` (their names key the checkpoint); every other parameter is frozen.

Recipe (official fine-tuning defaults): AdamW, linear warm-up over ``warmup`` of the steps then cosine
decay to ``min_lr``, gradient clipping per param group, bf16 autocast on CUDA only. Batches are dicts with
"images" (the model's input) and whatever ``loss_fn(predictions, batch) -> (loss, parts)`` needs.

``out_dir`` receives ``checkpoints/step_XXXXXXXX.pt`` (trainable parameters, buffers, optimizer, scheduler,
step, RNG states; written atomically), ``log.csv`` (one row per step), ``val.csv`` and ``loss.png``.
Calling ``train`` again with the same ``out_dir`` resumes from the latest checkpoint and reproduces the
uninterrupted run exactly on CPU: the RNG state is restored, and the current epoch's shuffle is redrawn
from the RNG state saved at that epoch's start before the already-used batches are skipped.
A non-finite loss or gradient stops the run before it touches the weights; the checkpoints already
written are kept and the result's ``exit_code`` is non-zero. SIGTERM or Ctrl-C (a farm's pre-emption, a
user) ends the current step, writes a checkpoint and returns with ``exit_code`` 128 + the signal number;
a second signal stops at once.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .losses import vggt_loss

NONFINITE_EXIT_CODE = 3  # 1 is Python's generic failure, 2 the CLI's bad-usage code


@dataclass(frozen=True)
class TrainConfig:
    steps: int                           # optimizer steps (each of accum_steps batches)
    lr: float = 5e-5
    weight_decay: float = 0.05
    warmup: float = 0.05                 # fraction of steps with linear warm-up
    min_lr: float = 1e-8                 # end of the cosine, for a group at ``lr`` (other groups in proportion)
    grad_clip: float | None = 1.0        # max gradient norm per param group; None or 0 = no clipping
    accum_steps: int = 1
    seed: int = 0
    checkpoint_every: int = 500          # steps; the last step is always checkpointed
    keep_checkpoints: int = 2
    val_every: int = 0                   # steps; 0 = validate only at the end (when a val_loader is given)
    device: str | None = None            # None = cuda if available, else cpu
    bf16: bool = True                    # autocast to bfloat16 on CUDA (never on CPU)
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1 or self.accum_steps < 1 or self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("steps, accum_steps, checkpoint_every and keep_checkpoints must be >= 1")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")


# Settings that change the trajectory: a resumed run must use the same ones.
RUN_FIELDS = ("steps", "lr", "weight_decay", "warmup", "min_lr", "grad_clip", "accum_steps", "seed")


@dataclass
class TrainResult:
    status: str                          # "finished", "nonfinite" or "interrupted"
    step: int                            # optimizer steps completed
    exit_code: int                       # 0, NONFINITE_EXIT_CODE, or 128 + signal number
    message: str
    last_checkpoint: Path | None
    last_loss: float | None
    val: dict | None                     # the last validation's mean loss parts


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of each group's base learning rate for optimizer step ``step`` (0-based)."""
    warmup_steps = round(cfg.warmup * cfg.steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # starts above 0 so the first step already learns
    # the cosine leaves the peak right after warm-up and reaches min_lr at the last step
    progress = min(1.0, (step + 1 - warmup_steps) / max(1, cfg.steps - warmup_steps))
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(model: torch.nn.Module, params: Iterable, train_loader, cfg: TrainConfig,
          loss_fn: Callable[[dict, dict], tuple[torch.Tensor, dict]] = vggt_loss, val_loader=None,
          out_dir: str | Path = "runs/train") -> TrainResult:
    """Train ``params`` (parameters or param groups of ``model``; the rest is frozen) for ``cfg.steps``
    optimizer steps, resuming from ``out_dir``'s latest checkpoint if there is one. Returns when done or
    when a loss or gradient turns non-finite; the model then holds the last good weights."""
    out_dir = Path(out_dir)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    groups, names = _trainable_groups(model, params)
    trainable = {id(p) for g in groups for p in g["params"]}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    checkpoints = _Checkpoints(out_dir / "checkpoints", cfg.keep_checkpoints)
    console = Console(stderr=True)

    state = checkpoints.load_latest(device)
    if state is None:
        _seed_everything(cfg.seed)
        step, elapsed, epoch_rng = 0, 0.0, None
    else:
        _check_same_run(state, cfg, names, checkpoints.latest())
        _load_trainable(model, names, state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step, elapsed, epoch_rng = state["step"], state["elapsed"], state["epoch_rng"]
        console.print(f"resuming {out_dir} from step {step}")

    log = _CsvLog(out_dir / "log.csv", keep_through_step=step)
    val_log = _CsvLog(out_dir / "val.csv", keep_through_step=step)
    batches = _BatchStream(train_loader, first_batch=step * cfg.accum_steps, epoch_rng=epoch_rng,
                           resume_rng=state["rng"] if state else None)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    status, message, last_loss, val = "finished", "", None, None
    started = time.perf_counter()
    model.train()

    def save_checkpoint(step: int) -> None:
        checkpoints.save(step, {
            "step": step, "model": _trainable_state(model, names), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": _rng_state(), "epoch_rng": batches.epoch_rng,
            "elapsed": elapsed + time.perf_counter() - started, "config": dataclasses.asdict(cfg), "trainable": names})

    exit_code = 0
    with _progress(cfg.progress, console) as progress, log, val_log, _StopRequests() as stop:
        task = progress.add_task("train", total=cfg.steps, completed=step, status="")
        while step < cfg.steps:
            loss_value, parts, grad_norm, problem = _forward_backward(model, batches, loss_fn, optimizer, cfg, device,
                                                                      autocast)
            if problem:
                status, exit_code = "nonfinite", NONFINITE_EXIT_CODE
                message = (f"stopped at step {step + 1}: {problem}; the weights are those after step {step}, "
                           f"last good checkpoint: {checkpoints.latest() or 'none yet'}")
                console.print(f"[red]{message}[/red]")
                break
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            last_loss = loss_value
            seconds = elapsed + time.perf_counter() - started
            log.write({"step": step, "loss": loss_value, **parts, "lr": lr, "grad_norm": grad_norm,
                       "seconds": round(seconds, 3)})
            progress.update(task, completed=step, status=f"loss {loss_value:.4g}  lr {lr:.3g}")
            if val_loader is not None and ((cfg.val_every and step % cfg.val_every == 0) or step == cfg.steps):
                val = _validate(model, val_loader, loss_fn, device, autocast)
                val_log.write({"step": step, **val})
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop.signal:
                save_checkpoint(step)
            if stop.signal and step < cfg.steps:
                status, exit_code = "interrupted", 128 + stop.signal
                message = (f"stopped by {signal.Signals(stop.signal).name} after step {step}; checkpoint "
                           f"{checkpoints.latest()}; run again to resume")
                console.print(message)
                break
    _plot_losses(log.rows, val_log.rows, out_dir / "loss.png")
    if status == "finished":
        message = f"finished {step} steps in {out_dir}"
    return TrainResult(status=status, step=step, exit_code=exit_code,
                       message=message, last_checkpoint=checkpoints.latest(), last_loss=last_loss, val=val)


class _StopRequests:
    """While training, SIGTERM and SIGINT ask for a clean stop at the end of the step (``signal`` holds
    the first one); a second signal raises KeyboardInterrupt at once. Off the main thread (where Python
    cannot install handlers) it does nothing."""

    def __enter__(self):
        self.signal, self._previous = None, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _trainable_groups(model: torch.nn.Module, params: Iterable) -> tuple[list[dict], list[str]]:
    """Normalise ``params`` to param groups and name every parameter (the checkpoint's keys)."""
    items = list(params)
    if not items:
        raise ValueError("no trainable parameters given")
    groups = [dict(g, params=list(g["params"])) for g in items] if isinstance(items[0], dict) else [{"params": items}]
    name_of = {id(p): n for n, p in model.named_parameters()}
    names = []
    for group in groups:
        for p in group["params"]:
            if id(p) not in name_of:
                raise ValueError(f"a trainable parameter of shape {tuple(p.shape)} is not registered in the model "
                                 "(attach adapters as submodules before training)")
            names.append(name_of[id(p)])
    if len(set(names)) != len(names):
        raise ValueError("a parameter is given twice")
    return groups, names


def _trainable_state(model: torch.nn.Module, names: list[str]) -> dict:
    """Trainable parameters, and the persistent buffers (running statistics would otherwise be lost)."""
    params = dict(model.named_parameters())
    buffers = {n for n, _ in model.named_buffers()}
    return {n: t.detach().clone() for n, t in model.state_dict().items() if n in buffers} | \
           {n: params[n].detach().clone() for n in names}


def _load_trainable(model: torch.nn.Module, names: list[str], state: dict) -> None:
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    with torch.no_grad():
        for name, value in state["model"].items():
            tensors[name].copy_(value)


def _check_same_run(state: dict, cfg: TrainConfig, names: list[str], path: Path) -> None:
    saved = state["config"]
    changed = [f"{k}: {saved[k]!r} -> {getattr(cfg, k)!r}" for k in RUN_FIELDS if saved[k] != getattr(cfg, k)]
    if changed:
        raise ValueError(f"{path}: the run was started with other settings ({'; '.join(changed)}); "
                         "use another out_dir for a new run")
    if state["trainable"] != names:
        raise ValueError(f"{path}: the run trained other parameters; use another out_dir for a new run")


def _forward_backward(model, batches, loss_fn, optimizer, cfg: TrainConfig, device, autocast
                      ) -> tuple[float, dict, float | None, str | None]:
    """Gradients of one optimizer step from ``accum_steps`` batches, clipped. Returns the mean loss, the
    mean loss parts, the gradient norm before clipping, and what became non-finite (None if nothing did)."""
    optimizer.zero_grad(set_to_none=True)
    loss_mean, parts_mean = 0.0, {}
    for _ in range(cfg.accum_steps):
        batch = _to_device(next(batches), device)
        with torch.autocast(**autocast):
            predictions = model(batch["images"])
        loss, parts = loss_fn(predictions, batch)
        if not torch.isfinite(loss):
            return loss.item(), parts_mean, None, f"loss is {loss.item()}"
        (loss / cfg.accum_steps).backward()
        loss_mean += loss.item() / cfg.accum_steps
        for k, v in parts.items():
            parts_mean[k] = parts_mean.get(k, 0.0) + float(v) / cfg.accum_steps
    grad_norm = _clip_gradients(optimizer, cfg.grad_clip)
    problem = None if math.isfinite(grad_norm) else f"gradient norm is {grad_norm}"
    return loss_mean, parts_mean, grad_norm, problem


def _clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float | None) -> float:
    """Clip each param group to ``max_norm`` (as the official recipe does per module) and return the
    overall gradient norm before clipping."""
    squares = 0.0
    for group in optimizer.param_groups:
        norm = torch.nn.utils.clip_grad_norm_(group["params"], max_norm if max_norm else math.inf)
        squares += float(norm) ** 2
    return math.sqrt(squares)


def _validate(model, loader, loss_fn, device, autocast) -> dict:
    """Mean loss parts over ``loader``. Runs on a forked RNG so that validating never changes training."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    sums, count = {}, 0
    model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        for batch in loader:
            batch = _to_device(batch, device)
            with torch.autocast(**autocast):
                predictions = model(batch["images"])
            loss, parts = loss_fn(predictions, batch)
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
    model.train()
    return {k: v / max(count, 1) for k, v in sums.items()}


class _BatchStream:
    """Batches of ``loader``, epoch after epoch, starting at batch number ``first_batch`` of the run.

    The loader's shuffle comes from the global RNG when an epoch's iterator is made, so the RNG state at
    that moment is kept (``epoch_rng``, checkpointed). Resuming mid-epoch recreates the epoch's iterator
    from it, skips the batches already used, and then puts back the run's RNG state ``resume_rng``.
    """

    def __init__(self, loader, first_batch: int, epoch_rng: dict | None, resume_rng: dict | None):
        try:
            self.per_epoch = len(loader)
        except TypeError:
            raise TypeError("train_loader needs a length (a map-style dataset) so that runs can resume") from None
        if self.per_epoch == 0:
            raise ValueError("train_loader yields no batches (fewer samples than batch_size with drop_last?)")
        self.loader, self.batch_number = loader, first_batch
        self.epoch_rng, self._resume_rng = epoch_rng, resume_rng
        self._iterator = None

    def __next__(self):
        if self._iterator is None:
            self._start_epoch()
        batch = next(self._iterator)
        self.batch_number += 1
        if self.batch_number % self.per_epoch == 0:
            self._iterator = None
        return batch

    def _start_epoch(self) -> None:
        offset = self.batch_number % self.per_epoch
        if offset == 0:
            self.epoch_rng = _rng_state()
            self._iterator = iter(self.loader)
            return
        _set_rng_state(self.epoch_rng)
        self._iterator = iter(self.loader)
        for _ in range(offset):
            next(self._iterator)
        _set_rng_state(self._resume_rng)


class _Checkpoints:
    """``step_XXXXXXXX.pt`` files in one folder: atomic writes, the newest ``keep`` kept."""

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = folder, keep
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".step_*.tmp-*"):  # left by a save that was killed; never a complete file
            stale.unlink()

    def all(self) -> list[Path]:
        return sorted(self.folder.glob("step_*.pt"))  # zero-padded steps sort numerically

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def load_latest(self, device: torch.device) -> dict | None:
        path = self.latest()
        return None if path is None else torch.load(path, map_location=device, weights_only=True)

    def save(self, step: int, state: dict) -> None:
        path = self.folder / f"step_{step:08d}.pt"
        tmp = self.folder / f".{path.name}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old set of files or the new one, never a partial file
        for old in self.all()[:-self.keep]:
            old.unlink()


class _CsvLog:
    """A CSV file of rows keyed by "step". Rows after ``keep_through_step`` (written by a run that died
    after its last checkpoint) are dropped, so a resumed run's log reads as one uninterrupted run."""

    def __init__(self, path: Path, keep_through_step: int):
        self.path, self.rows, self._file, self._writer = path, [], None, None
        if path.exists():
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_through_step]
            if self.rows:
                tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                with open(tmp, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                    writer.writeheader()
                    writer.writerows(self.rows)
                os.replace(tmp, path)
            else:
                path.unlink()

    def write(self, row: dict) -> None:
        if self._writer is None:
            fields = list(self.rows[0]) if self.rows else list(row)
            self._file = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore")
            if not self.rows:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()
        self.rows.append(row)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()


def _plot_losses(train_rows: list[dict], val_rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # no display on farms and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train_rows:
        ax.plot([int(r["step"]) for r in train_rows], [float(r["loss"]) for r in train_rows], lw=1, label="train")
    if val_rows:
        ax.plot([int(r["step"]) for r in val_rows], [float(r["loss"]) for r in val_rows], "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _progress(enabled: bool, console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=console, disable=not enabled)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _rng_state() -> dict:
    # numpy's key array is stored as a tensor so that checkpoints load with torch.load(weights_only=True)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():  # a CUDA run resumed on CPU continues, just not bit-exact
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
