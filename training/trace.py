"""A trace of the aggregator during training, every N steps: its LayerScale gammas, how strongly each
block writes into the residual stream, and its gradients.

A block whose gamma never leaves its init, whose branch adds ~1 % to a stream it reads, and whose
gradients are a vanishing share of the model's is a block the heads do not use; this trace shows when
(or whether) the blocks open. Hooked into the trainer as ``after_step``, it writes ``aggregator.csv``
(one row per N steps, trimmed like the other logs when a run resumes). Columns per block ``B`` and
LayerScale ``ls1``/``ls2``: ``B.ls1.gamma`` (mean |gamma|), ``B.ls1.ratio`` (RMS of gamma * branch over
RMS of the block's input, in the step's training forward), ``B.ls1.gamma_grad`` and ``B.grad`` (gradient
norms after clipping), then ``blocks_grad`` and ``rest_grad`` (all blocks; everything else) and
``camera_trunk.gamma`` (mean |gamma| of the camera head's trunk).

    trace = AggregatorTrace(model, out_dir / "aggregator.csv", every=25)
    train(..., after_step=trace); trace.close()
"""
from __future__ import annotations

from pathlib import Path

import torch

from model.probes import aggregator_blocks
from model.vggt import LayerScale
from .logs import CsvLog


class AggregatorTrace:
    def __init__(self, model: torch.nn.Module, path: str | Path, every: int = 25):
        self.path, self.every = Path(path), max(1, every)
        self.blocks = aggregator_blocks(model)
        self.model = model
        self.log: CsvLog | None = None
        self._rms: dict[str, float] = {}
        self._hooks = []
        for name, block in self.blocks:
            self._hooks.append(block.register_forward_pre_hook(
                lambda _m, args, key=name: self._rms.__setitem__(key, _rms(args[0]))))
            for ls in ("ls1", "ls2"):
                self._hooks.append(getattr(block, ls).register_forward_hook(
                    lambda _m, _args, out, key=f"{name}.{ls}": self._rms.__setitem__(key, _rms(out))))

    def __call__(self, step: int) -> None:
        """Called by the trainer after optimizer step ``step`` (0-based), gradients still in place."""
        if self.log is None:  # the first call of a (resumed) run: trim rows past its checkpoint
            self.log = CsvLog(self.path, step)
        if (step + 1) % self.every:
            return
        row = {"step": step + 1}
        total = 0.0
        for name, block in self.blocks:
            for ls in ("ls1", "ls2"):
                gamma = getattr(block, ls).gamma
                row[f"{name}.{ls}.gamma"] = float(gamma.detach().abs().mean())
                row[f"{name}.{ls}.ratio"] = self._rms.get(f"{name}.{ls}", 0.0) / max(self._rms.get(name, 0.0), 1e-12)
                row[f"{name}.{ls}.gamma_grad"] = _norm([gamma])
            grad = _norm([p for n, p in block.named_parameters() if not n.endswith("gamma")])
            row[f"{name}.grad"] = grad
            total += grad ** 2
        others = _norm([p for n, p in self.model.named_parameters() if ".frame_blocks." not in n
                        and ".global_blocks." not in n and not n.startswith(("frame_blocks.", "global_blocks."))])
        row["blocks_grad"], row["rest_grad"] = total ** 0.5, others
        trunk = [m.gamma for n, m in self.model.named_modules() if ".trunk." in f".{n}." and isinstance(m, LayerScale)]
        if trunk:
            row["camera_trunk.gamma"] = float(torch.cat([g.detach().abs().flatten() for g in trunk]).mean())
        self.log.write(row)

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self.log is not None:
            self.log.__exit__()


def _norm(params) -> float:
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    return float(torch.sqrt(sum((g ** 2).sum() for g in grads))) if grads else 0.0


def _rms(x: torch.Tensor) -> float:
    return float(x.detach().float().pow(2).mean().sqrt())
