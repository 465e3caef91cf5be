"""The one trainer behind pretraining, LoRA mining and fine-tuning.

    from training import TrainConfig, make_loader, train
    result = train(model, adapter_params, make_loader(dataset, batch_size=2), TrainConfig(steps=2000),
                   out_dir="runs/lora_p000")
    sys.exit(result.exit_code)

The caller chooses what trains: plain parameters, peft adapters or our own adapters, as a list of
parameters or of optimizer param groups (dicts with "params" and optional "lr", "weight_decay"). They
must be registered in ``model`` (their names key the checkpoint); every other parameter is frozen.

Recipe (official fine-tuning defaults): AdamW, linear warm-up then cosine decay (training.config),
gradient clipping per param group, bf16 autocast on CUDA only. Batches are dicts with "images" (the
model's input) and whatever ``loss_fn(predictions, batch) -> (loss, parts)`` needs.

``out_dir`` receives ``checkpoints/step_XXXXXXXX.pt`` (trainable tensors, optimizer, scheduler, step,
random state; written atomically), ``log.csv`` (one row per step), ``val.csv`` and ``loss.png``.
Calling ``train`` again with the same ``out_dir`` resumes from the latest checkpoint and reproduces the
uninterrupted run exactly on the CPU. A non-finite loss or gradient stops the run before it touches
the weights; the checkpoints already written are kept and the result's ``exit_code`` is non-zero.
SIGTERM or Ctrl-C ends the current step, writes a checkpoint and returns with ``exit_code``
128 + the signal number; a second signal stops at once.

Runs share a process without touching each other: the run owns its randomness (training.rng), puts
the signal handlers back and changes no plotting or other global state.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .batches import BatchStream
from .checkpoints import CheckpointFolder, load_trainable, trainable_state
from .config import RUN_FIELDS, TrainConfig, lr_factor
from .logs import CsvLog, plot_losses
from .losses import vggt_loss
from .rng import RunRandomness, cuda_indices
from .stop import StopRequests

NONFINITE_EXIT_CODE = 3  # 1 is Python's generic failure, 2 the CLI's bad-usage code

LossFn = Callable[[dict, dict], tuple[torch.Tensor, dict]]


@dataclass
class TrainResult:
    status: str                          # "finished", "nonfinite" or "interrupted"
    step: int                            # optimizer steps completed
    exit_code: int                       # 0, NONFINITE_EXIT_CODE, or 128 + signal number
    message: str
    last_checkpoint: Path | None
    last_loss: float | None
    val: dict | None                     # the last validation's mean loss parts


def train(model: torch.nn.Module, params: Iterable, train_loader, cfg: TrainConfig, loss_fn: LossFn = vggt_loss,
          val_loader=None, out_dir: str | Path = "runs/train", after_step: Callable[[int], None] | None = None
          ) -> TrainResult:
    """Train ``params`` (parameters or param groups of ``model``; the rest is frozen) for ``cfg.steps``
    optimizer steps on ``train_loader`` (a training.batches.Loader), resuming from ``out_dir``'s latest
    checkpoint if there is one. Returns when done, interrupted, or when a loss or gradient turns
    non-finite; the model then holds the last good weights.

    ``after_step(step)`` runs after each optimizer step, while the step's gradients are still there (the
    next step clears them): adapters that re-allocate their ranks from gradients (AdaLoRA) hook in here.
    State such a hook keeps outside the trainable tensors is not checkpointed."""
    out_dir = Path(out_dir)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    groups, names = trainable_groups(model, params)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, cfg=cfg))
    checkpoints = CheckpointFolder(out_dir / "checkpoints", cfg.keep_checkpoints)
    console = Console(stderr=True)
    autocast = _autocast(cfg, device)
    step_fn = functools.partial(_forward_backward, model, loss_fn=loss_fn, optimizer=optimizer, cfg=cfg,
                                device=device, autocast=autocast)

    with RunRandomness(cfg.seed, device) as rng, StopRequests() as stop:
        step, elapsed = _resume(checkpoints, device, model, names, optimizer, scheduler, rng, cfg, console)
        started = time.perf_counter()
        batches = BatchStream(train_loader, cfg.seed, first=step * cfg.accum_steps)

        def save(step: int) -> None:
            checkpoints.save(step, {
                "step": step, "model": trainable_state(model, names), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng.state(), "trainable": names,
                "elapsed": elapsed + time.perf_counter() - started, "config": dataclasses.asdict(cfg)})

        result = TrainResult(status="finished", step=step, exit_code=0, message="", last_checkpoint=None,
                             last_loss=None, val=None)
        log, val_log = CsvLog(out_dir / "log.csv", step), CsvLog(out_dir / "val.csv", step)
        model.train()
        with _progress(cfg.progress, console) as progress, log, val_log:
            task = progress.add_task("train", total=cfg.steps, completed=step, status="")
            while step < cfg.steps:
                loss, parts, grad_norm, problem = step_fn(batches)
                if problem:
                    result.status, result.exit_code = "nonfinite", NONFINITE_EXIT_CODE
                    result.message = (f"stopped at step {step + 1}: {problem}; the weights are those after step "
                                      f"{step}, last good checkpoint: {checkpoints.latest() or 'none yet'}")
                    console.print(f"[red]{result.message}[/red]")
                    break
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                if after_step is not None:
                    after_step(step)
                step = result.step = step + 1
                result.last_loss = loss
                log.write({"step": step, "loss": loss, **parts, "lr": lr, "grad_norm": grad_norm,
                           "seconds": round(elapsed + time.perf_counter() - started, 3)})
                progress.update(task, completed=step, status=f"loss {loss:.4g}  lr {lr:.3g}")
                if val_loader is not None and ((cfg.val_every and step % cfg.val_every == 0) or step == cfg.steps):
                    result.val = validate(model, val_loader, loss_fn, device, autocast)
                    val_log.write({"step": step, **result.val})
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop.signal:
                    save(step)
                if stop.signal and step < cfg.steps:
                    result.status, result.exit_code = "interrupted", 128 + stop.signal
                    result.message = (f"stopped by {stop.name} after step {step}; checkpoint "
                                      f"{checkpoints.latest()}; run again to resume")
                    console.print(result.message)
                    break
    plot_losses(log.rows, val_log.rows, out_dir / "loss.png")
    if result.status == "finished":
        result.message = f"finished {step} steps in {out_dir}"
    result.last_checkpoint = checkpoints.latest()
    return result


def trainable_groups(model: torch.nn.Module, params: Iterable) -> tuple[list[dict], list[str]]:
    """Normalise ``params`` to param groups, name every parameter (the checkpoint's keys), and freeze
    every other parameter of the model."""
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
    trainable = set(names)
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    return groups, names


def _resume(checkpoints: CheckpointFolder, device: torch.device, model, names, optimizer, scheduler, rng: RunRandomness,
            cfg: TrainConfig, console: Console) -> tuple[int, float]:
    """Load the latest checkpoint into the run if there is one; (step, training seconds so far)."""
    state = checkpoints.load_latest(device)
    if state is None:
        return 0, 0.0
    path = checkpoints.latest()
    changed = [f"{k}: {state['config'][k]!r} -> {getattr(cfg, k)!r}" for k in RUN_FIELDS
               if state["config"][k] != getattr(cfg, k)]
    if changed:
        raise ValueError(f"{path}: the run was started with other settings ({'; '.join(changed)}); "
                         "use another out_dir for a new run")
    if state["trainable"] != names:
        raise ValueError(f"{path}: the run trained other parameters; use another out_dir for a new run")
    load_trainable(model, state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.restore(state["rng"])
    console.print(f"resuming {path.parent.parent} from step {state['step']}")
    return state["step"], state["elapsed"]


def _forward_backward(model, batches: BatchStream, loss_fn: LossFn, optimizer, cfg: TrainConfig, device, autocast
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


@torch.no_grad()
def validate(model, loader: Iterable[dict], loss_fn: LossFn, device, autocast: dict | None = None) -> dict:
    """Mean loss parts over ``loader`` in eval mode. On a forked generator, so that validating never
    changes a run's random stream; the model is put back in training mode."""
    autocast = autocast or {"device_type": torch.device(device).type, "enabled": False}
    sums, count = {}, 0
    model.eval()
    with torch.random.fork_rng(devices=cuda_indices(device)):
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


def _autocast(cfg: TrainConfig, device: torch.device) -> dict:
    return dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")


def _progress(enabled: bool, console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=console, disable=not enabled)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
