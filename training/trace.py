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

from model.probes import BranchRMS, aggregator_blocks, layerscale_stats
from model.vggt import LayerScale
from .logs import CsvLog


class AggregatorTrace:
    def __init__(self, model: torch.nn.Module, path: str | Path, every: int = 25):
        self.path, self.every = Path(path), max(1, every)
        self.model = model
        self.blocks = aggregator_blocks(model)
        in_blocks = {id(p) for _, block in self.blocks for p in block.parameters()}
        self.rest = [p for p in model.parameters() if id(p) not in in_blocks]
        self.trunk_gammas = [m.gamma for n, m in model.named_modules()
                             if ".trunk." in f".{n}." and isinstance(m, LayerScale)]
        self.rms = BranchRMS(model)     # fed by every training forward
        self.log: CsvLog | None = None

    def __call__(self, step: int) -> None:
        """Called by the trainer after optimizer step ``step`` (0-based), gradients still in place."""
        if self.log is None:  # the first call of a (resumed) run: trim rows past its checkpoint
            self.log = CsvLog(self.path, step)
        if (step + 1) % self.every:
            return
        row = {"step": step + 1}
        gammas, ratios = layerscale_stats(self.model), self.rms.ratios()
        total = 0.0
        for name, block in self.blocks:
            for ls in ("ls1", "ls2"):
                key = f"{name}.{ls}"
                row[f"{key}.gamma"] = gammas[key]
                row[f"{key}.ratio"] = ratios.get(key, 0.0)
                row[f"{key}.gamma_grad"] = _norm([getattr(block, ls).gamma])
            grad = _norm([p for n, p in block.named_parameters() if not n.endswith("gamma")])
            row[f"{name}.grad"] = grad
            total += grad ** 2
        row["blocks_grad"], row["rest_grad"] = total ** 0.5, _norm(self.rest)
        if self.trunk_gammas:
            row["camera_trunk.gamma"] = float(torch.cat([g.detach().abs().flatten() for g in self.trunk_gammas]).mean())
        self.log.write(row)

    def close(self) -> None:
        self.rms.close()
        if self.log is not None:
            self.log.__exit__()


def _norm(params) -> float:
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    return float(torch.sqrt(sum((g ** 2).sum() for g in grads))) if grads else 0.0
