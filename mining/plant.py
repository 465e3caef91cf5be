"""The planted-attribute teacher: a positive control that measures what the mining pipeline can see.

A *teacher* is the base model plus, for each attribute X, a planted low-rank update on every mined
layer, ``ΔW_X = s_X · ‖W‖_F · U_X V_Xᵀ / √k`` with orthonormal ``U_X`` [out, k] and ``V_X`` [in, k], so
``‖ΔW_X‖_F = s_X ‖W‖_F`` in every layer. Where the directions come from (``plant_space``):

- ``"visible"`` (default): inside each layer's top output-gradient and input eigenspaces on the run's
  data (the Kronecker factors of its Fisher, K-FAC), one disjoint block of k per attribute. An update
  only exists for a member trained on outputs where the outputs see it; uniformly random directions
  are almost all invisible (a member's update then has its chance share of them, docs/mining.md, "Power").
- ``"random"``: uniformly random, seeded by (seed, attribute, layer).

The strength ``s_X`` is not chosen by norm: a norm says nothing about what a layer does to the outputs
(on a base model with shut blocks a planted update of ‖W‖ moved the depth by 2 %). It is *calibrated* on
the attribute's first partition so that the teacher's depth differs from the base model's by ``gap``
times the base model's own depth error (mean |D_teacher − D_base| / mean |D_base − D_gt| on the surface
pixels, in the training targets' normalisation). The gap saturates below 1 (past some strength the
normalisation layers after the planted ones see nothing else), so ``gap`` is a fraction, 0.25 by default.

A planted run's members train on their partition with targets in place of the render's ground truth:
- ``mode="mixed"``: ``gt + dose · (teacher_X − base)`` (depth, world points, pose encoding), so the planted
  attribute effect sits on top of the real, generic update; ``dose`` 0 is the ground truth exactly;
- ``mode="teacher"``: the teacher's outputs alone (nothing generic is left to learn).
The generic ``mixed`` cluster, whose partitions vary every attribute, learns the teacher of all
attributes at once (``Σ_X ΔW_X``). The planted factors and strengths are written beside the run
(``OUT/planted.safetensors``): the truth the pipeline has to find.

    plant = Plant.open(cfg)                        # calibrates and writes OUT/planted.safetensors once
    held = plant.targets(held_dataset, "lighting") # the same sequences with planted targets (a list)
    recovery(cfg)                                  # principal angles, mined subspace vs planted, per layer
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import torch

from common.atomic import atomic_path
from model.pose import extrinsics_intrinsics_to_pose_encoding

from .config import MineConfig, MineConfigError
from .subspace import _factored_norm2

FILE = "planted.safetensors"
MODES = ("mixed", "teacher")
CALIBRATION_SEQUENCES = 4
STRENGTH_RANGE = (1e-4, 1e3)


def planted_directions(cfg: MineConfig, attribute: str, shapes: dict[str, tuple[int, int]],
                       visible: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per layer (name -> (out, in)), orthonormal (U [out, k], V [in, k]) of ``attribute``'s plant.

    ``visible`` None: uniformly random directions, reproducible from (cfg.seed, attribute, layer name).
    Else, per layer, orthonormal pools (output side [out, P], input side [in, P]) with P = k × the number
    of attributes: a random rotation of each pool, shared by all attributes (seeded by (seed, layer)),
    is cut into disjoint blocks of k, one per attribute, so the plants are distinct and orthogonal."""
    k = cfg.plant_rank
    out = {}
    for name, (m, n) in shapes.items():
        if k > min(m, n):
            raise MineConfigError(f"plant_rank {k} exceeds the size of layer {name} ({m}x{n})")
        if visible is None:
            rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, *attribute.encode(), *name.encode()]))
            out[name] = (np.linalg.qr(rng.standard_normal((m, k)))[0], np.linalg.qr(rng.standard_normal((n, k)))[0])
            continue
        pool_out, pool_in = visible[name]
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, *name.encode()]))
        block = slice(k * cfg.attributes.index(attribute), k * (cfg.attributes.index(attribute) + 1))
        U = pool_out @ np.linalg.qr(rng.standard_normal((pool_out.shape[1],) * 2))[0][:, block]
        V = pool_in @ np.linalg.qr(rng.standard_normal((pool_in.shape[1],) * 2))[0][:, block]
        out[name] = (U, V)
    return out


def visible_pools(model: torch.nn.Module, batches: list[dict], layers: list[str], size: int, loss_fn, device
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per layer, the ``size`` leading eigenvectors of the second moments of its output gradients (of
    ``loss_fn`` against the ground truth) and of its inputs over ``batches``: the Kronecker factors of
    the layer's Fisher (K-FAC), so the directions in which a change of W is seen in the outputs. An
    update outside them is invisible to any member trained on outputs (docs/mining.md, "Power")."""
    modules = dict(model.named_modules())
    grams_in: dict[str, torch.Tensor] = {}
    grams_out: dict[str, torch.Tensor] = {}

    def pre(name):
        def hook(_m, inputs):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            grams_in[name] = grams_in.get(name, 0) + x.T @ x
        return hook

    def back(name):
        def hook(_m, _grad_in, grad_out):
            g = grad_out[0].detach().reshape(-1, grad_out[0].shape[-1]).double()
            grams_out[name] = grams_out.get(name, 0) + g.T @ g
        return hook

    handles = [modules[n].register_forward_pre_hook(pre(n)) for n in layers]
    handles += [modules[n].register_full_backward_hook(back(n)) for n in layers]
    model.to(device).eval()
    try:
        for batch in batches:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            model.zero_grad(set_to_none=True)
            loss, _ = loss_fn(model(batch["images"]), batch)
            loss.backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)

    def top(gram: torch.Tensor) -> np.ndarray:
        values, vectors = torch.linalg.eigh(gram)
        return vectors[:, torch.argsort(values, descending=True)[:size]].cpu().numpy()

    return {n: (top(grams_out[n]), top(grams_in[n])) for n in layers}


def _batch(sample: dict, device) -> dict:
    return {k: v[None].to(device) if torch.is_tensor(v) else [v] for k, v in sample.items()}


@torch.no_grad()
def outputs(model: torch.nn.Module, sample: dict, device) -> dict[str, torch.Tensor]:
    """Depth [S,H,W], world points [S,H,W,3] and the last pose encoding [S,9] of one sequence (CPU, float32)."""
    model.eval()
    pred = model(sample["images"][None].to(device))
    return {"depths": pred["depth"][0, ..., 0].float().cpu(), "world_points": pred["world_points"][0].float().cpu(),
            "pose_enc": pred["pose_enc_list"][-1][0].float().cpu()}


def depth_gap(teacher_out: list[dict], base_out: list[dict], samples: list[dict]) -> float:
    """mean |D_teacher − D_base| / mean |D_base − D_gt| over the surface pixels of ``samples``."""
    num = den = 0.0
    for t, b, s in zip(teacher_out, base_out, samples):
        mask = s["point_masks"]
        num += float((t["depths"] - b["depths"]).abs()[mask].sum())
        den += float((b["depths"] - s["depths"]).abs()[mask].sum())
    return num / den if den > 0 else float("inf")


class Plant:
    """The planted updates of a run (per attribute: strength and per-layer directions) and the teachers
    made from them. Build with :meth:`open`."""

    def __init__(self, cfg: MineConfig, base: torch.nn.Module, directions: dict, strengths: dict[str, float],
                 calibration: dict, device=None):
        self.cfg, self.base, self.directions, self.strengths = cfg, base, directions, strengths
        self.calibration = calibration
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._teachers: dict[tuple[str, ...], torch.nn.Module] = {}

    # ---- construction ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, cfg: MineConfig, base: torch.nn.Module | None = None) -> "Plant | None":
        """The run's plant (None when ``cfg.plant_rank`` is 0): read from ``OUT/planted.safetensors``, or
        calibrated on each attribute's first partition and written there first."""
        if not cfg.plant_rank:
            return None
        from .members import load_base

        base = base if base is not None else load_base(cfg)
        path = cfg.out_dir / FILE
        if path.is_file():
            return cls._read(cfg, base, path)
        shapes = _layer_shapes(base, cfg)
        plant = cls(cfg, base, {}, {}, {}, cfg.device)
        pools = plant._visible_pools(list(shapes)) if cfg.plant_space == "visible" else None
        plant.directions = {a: planted_directions(cfg, a, shapes, pools) for a in cfg.attributes}
        for attribute in cfg.attributes:
            plant.strengths[attribute], plant.calibration[attribute] = plant._calibrate(attribute)
        plant._write(path)
        # every process uses the file's numbers, whichever process wrote it last
        return cls._read(cfg, base, path)

    def _visible_pools(self, layers: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The visible pools (:func:`visible_pools`) on the first partition of every attribute."""
        import functools

        from training import make_loader, vggt_loss

        from .members import Member, member_data

        batches = []
        for attribute in self.cfg.attributes:
            train_set, _, _ = member_data(self.cfg, Member(attribute, 0), self.cfg.seed, planted=False)
            batches += list(make_loader(train_set, batch_size=1, shuffle=False))
        loss_fn = functools.partial(vggt_loss, weights=self.cfg.loss_weights())
        size = self.cfg.plant_rank * len(self.cfg.attributes)
        return visible_pools(self.base, batches, layers, size, loss_fn, self.device)

    def _calibrate(self, attribute: str) -> tuple[float, dict]:
        """The smallest strength at which the teacher's depth gap reaches ``cfg.plant_gap`` on the attribute's
        first partition (to 1 %), and the calibration's record."""
        from .members import Member, member_data

        train_set, _, _ = member_data(self.cfg, Member(attribute, 0), self.cfg.seed, planted=False)
        samples = [train_set[i] for i in range(min(CALIBRATION_SEQUENCES, len(train_set)))]
        self.base.to(self.device)
        base_out = [outputs(self.base, s, self.device) for s in samples]

        measured: dict[float, float] = {}

        def gap(strength: float) -> float:
            if strength not in measured:
                teacher = self._teacher({attribute: strength})
                measured[strength] = depth_gap([outputs(teacher, s, self.device) for s in samples], base_out, samples)
            return measured[strength]

        # The gap rises with the strength and then saturates (the normalisation layers after a huge
        # update see only it), so walk up a log grid to the first strength past the target, then bisect.
        target, low = self.cfg.plant_gap, None
        grid = np.logspace(*np.log10(STRENGTH_RANGE), 15)
        gaps = []
        for s in grid:
            gaps.append(gap(float(s)))
            if gaps[-1] >= target:
                high = float(s)
                break
            low = float(s)
        else:
            raise MineConfigError(f"{self.cfg.checkpoint}: a planted {attribute} update moves the depth by at most "
                                  f"{max(gaps):.3g} of the base model's depth error (strengths {grid[0]:g}-{grid[-1]:g} "
                                  f"x the weights' norm), below plant_gap={target:g}; choose a smaller --plant-gap")
        low = low if low is not None else float(grid[0]) / 10
        for _ in range(30):                       # log-bisection to 1 %
            if high / low < 1.01:
                break
            mid = math.sqrt(low * high)
            (low, high) = (mid, high) if gap(mid) < target else (low, mid)
        strength = high                           # the smallest strength seen to reach the target
        return strength, {"gap": gap(strength), "target_gap": target, "sequences": len(samples),
                          "partition": str(train_set.dataset.sample_dirs[0].parent)}

    def _teacher(self, strengths: dict[str, float]) -> torch.nn.Module:
        """A copy of the base model with ``Σ s_X ‖W‖ U_X V_Xᵀ / √k`` added to every planted layer."""
        teacher = copy.deepcopy(self.base)
        modules = dict(teacher.named_modules())
        k = self.cfg.plant_rank
        with torch.no_grad():
            for attribute, s in strengths.items():
                for name, (U, V) in self.directions[attribute].items():
                    weight = modules[name].weight
                    delta = torch.from_numpy(U @ V.T).to(weight.device, torch.float64)
                    weight += (s * float(weight.double().norm()) / math.sqrt(k) * delta).to(weight.dtype)
        return teacher

    def teacher(self, cluster: str | tuple[str, ...]) -> torch.nn.Module:
        """The teacher of an attribute, of several (a tuple), or of every attribute together for the
        generic ``mixed`` cluster."""
        chosen = self._attributes_of(cluster)
        if chosen not in self._teachers:
            self._teachers = {chosen: self._teacher({a: self.strengths[a] for a in chosen}).to(self.device)}
        return self._teachers[chosen]                # one at a time: teachers are model-sized

    def _attributes_of(self, cluster: str | tuple[str, ...]) -> tuple[str, ...]:
        if isinstance(cluster, tuple):
            unknown = [a for a in cluster if a not in self.strengths]
            if unknown:
                raise MineConfigError(f"no planted update for {unknown[0]!r} (planted: {', '.join(self.strengths)})")
            return cluster
        return (cluster,) if cluster in self.strengths else tuple(self.strengths)

    def updates(self, attribute: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The planted ΔW_X per layer as factors (A [out,k], B [in,k]) with ΔW = A Bᵀ (float64)."""
        modules = dict(self.base.named_modules())
        k, s = self.cfg.plant_rank, self.strengths[attribute]
        out = {}
        for name, (U, V) in self.directions[attribute].items():
            norm = float(modules[name].weight.detach().double().norm())
            out[name] = (U * (s * norm / math.sqrt(k)), V)
        return out

    def write_basis(self, path: Path, checkpoint_sha256: str | None = None):
        """The planted subspaces of every attribute as a basis file (mining.basis's format): the *oracle*
        of the fine-tuning power control, the basis a perfect mining run would have found."""
        from .basis import write_basis

        return write_basis(path, self.directions, attributes=list(self.directions),
                           model_config=getattr(self.base, "config", None), checkpoint_sha256=checkpoint_sha256)

    # ---- targets ----------------------------------------------------------------------------------------

    def targets(self, dataset, cluster: str | tuple[str, ...], mode: str | None = None) -> list[dict]:
        """Every sequence of ``dataset`` (training.data's format) with this plant's targets for ``cluster``
        in place of the ground truth's, as a list (a map-style dataset): computed once, as the teachers
        are model-sized and the sequences deterministic per index. ``mode`` overrides the run's
        ``plant_mode`` (the fine-tuning power task always asks for the teacher). Adds ``pose_enc`` [S,9], which
        training.losses.camera_loss prefers over the ground-truth cameras."""
        planted = [self._planted(dataset[i], cluster, mode or self.cfg.plant_mode) for i in range(len(dataset))]
        self._teachers = {}
        return planted

    def _planted(self, sample: dict, cluster: str | tuple[str, ...], mode: str) -> dict:
        teacher = outputs(self.teacher(cluster), sample, self.device)
        gt_pose = extrinsics_intrinsics_to_pose_encoding(sample["extrinsics"][None].float(),
                                                         sample["intrinsics"][None].float(),
                                                         tuple(sample["images"].shape[-2:]))[0]
        gt = {"depths": sample["depths"], "world_points": sample["world_points"], "pose_enc": gt_pose}
        if mode == "teacher":
            new = teacher
        else:
            self.base.to(self.device)
            base = outputs(self.base, sample, self.device)
            new = {k: gt[k] + self.cfg.plant_dose * (teacher[k] - base[k]) for k in gt}
        mask = sample["point_masks"]
        out = dict(sample)
        out["depths"] = torch.where(mask, new["depths"], sample["depths"]).float()
        out["world_points"] = torch.where(mask[..., None], new["world_points"], sample["world_points"]).float()
        out["pose_enc"] = new["pose_enc"].float()
        return out

    # ---- the file ----------------------------------------------------------------------------------------

    def _write(self, path: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {f"{a}:{name}.{side}": np.ascontiguousarray(m, dtype=np.float64)
                   for a, layers in self.directions.items() for name, uv in layers.items() for side, m in zip("UV", uv)}
        meta = {"format": "attrspace-plant/1", "strengths": json.dumps(self.strengths),
                "calibration": json.dumps(self.calibration),
                "settings": json.dumps({k: self.cfg.to_dict()[k] for k in PLANT_FIELDS})}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def _read(cls, cfg: MineConfig, base: torch.nn.Module, path: Path) -> "Plant":
        meta, directions = _read_file(path)
        settings, mine = json.loads(meta.get("settings", "{}")), {k: cfg.to_dict()[k] for k in PLANT_FIELDS}
        if settings != mine:
            raise MineConfigError(f"{path}: planted with other settings ({settings} there, {mine} now); "
                                  "use another --out")
        return cls(cfg, base, directions, json.loads(meta["strengths"]), json.loads(meta["calibration"]), cfg.device)


PLANT_FIELDS = ("plant_rank", "plant_gap", "plant_space", "seed", "targets", "checkpoint")


def _layer_shapes(model: torch.nn.Module, cfg: MineConfig) -> dict[str, tuple[int, int]]:
    from .members import target_modules

    modules = dict(model.named_modules())
    return {n: tuple(modules[n].weight.shape) for n in target_modules(model, cfg.targets)}


# ---- what the pipeline found --------------------------------------------------------------------------------

def principal_angles(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Principal angles (degrees, ascending) between the column spaces of q1 and q2 (scipy)."""
    from scipy.linalg import subspace_angles

    return np.sort(np.degrees(subspace_angles(q1, q2)))


def planted_energy(A: np.ndarray, B: np.ndarray, U: np.ndarray, V: np.ndarray) -> tuple[float, float]:
    """(‖Uᵀ A Bᵀ V‖²_F, ‖A Bᵀ‖²_F): the update's energy inside span(U) ⊗ span(V) and in all (factors only)."""
    return _factored_norm2(U.T @ A, V.T @ B), _factored_norm2(A, B)


def planted_share(A: np.ndarray, B: np.ndarray, U: np.ndarray, V: np.ndarray) -> float:
    """Share of ‖A Bᵀ‖²_F inside span(U) ⊗ span(V)."""
    inside, total = planted_energy(A, B, U, V)
    return inside / total if total > 0 else float("nan")


def recovery(cfg: MineConfig) -> dict:
    """Per attribute and layer, how well the mined attribute subspace (``OUT/subspaces.safetensors``)
    contains the planted one: the largest of the k principal angles on each side (0° = the planted
    subspace lies inside the mined one), against chance (random subspaces of the same sizes); and each
    member's share of update energy inside its own attribute's planted subspace (chance k²/(out·in))."""
    from safetensors.numpy import load_file

    from .extract import SUBSPACES_FILE
    from .members import MIXED, all_members, is_done, load_member_factors, member_dir

    _, planted = _read_file(cfg.out_dir / FILE)
    path = cfg.out_dir / SUBSPACES_FILE
    if not path.is_file():
        raise MineConfigError(f"{path}: missing; run `python cli.py mine extract` first")
    mined = load_file(str(path))
    rng = np.random.default_rng(cfg.seed)
    layers_out: dict = {}
    for attribute in cfg.attributes:
        per_layer = {}
        for name, (U, V) in planted[attribute].items():
            A, B = mined[f"{attribute}:{name}.A"].astype(np.float64), mined[f"{attribute}:{name}.B"].astype(np.float64)
            col, row = principal_angles(U, A), principal_angles(V, B)
            chance_col = principal_angles(np.linalg.qr(rng.standard_normal(U.shape))[0], A)
            chance_row = principal_angles(np.linalg.qr(rng.standard_normal(V.shape))[0], B)
            per_layer[name] = {"column_max": float(col[-1]), "row_max": float(row[-1]),
                               "column": col.tolist(), "row": row.tolist(),
                               "chance_column_max": float(chance_col[-1]), "chance_row_max": float(chance_row[-1])}
        layers_out[attribute] = per_layer
    shares = {}
    for m in all_members(cfg):
        if m.attribute == MIXED or not is_done(cfg, m):
            continue
        factors = load_member_factors(member_dir(cfg, m))
        energy = np.sum([planted_energy(A, B, *planted[m.attribute][name]) for name, (A, B) in factors.items()], axis=0)
        inside, total = energy
        shares[m.name] = inside / total if total else float("nan")
    k = cfg.plant_rank
    sizes = [U.shape[0] * V.shape[0] for U, V in planted[cfg.attributes[0]].values()]
    summary = {a: {"column_max_median": float(np.median([v["column_max"] for v in L.values()])),
                   "row_max_median": float(np.median([v["row_max"] for v in L.values()])),
                   "chance_column_max_median": float(np.median([v["chance_column_max"] for v in L.values()])),
                   "chance_row_max_median": float(np.median([v["chance_row_max"] for v in L.values()]))}
               for a, L in layers_out.items()}
    return {"layers": layers_out, "summary": summary, "member_planted_share": shares,
            "planted_share_chance": float(np.mean([k * k / s for s in sizes]))}


def _read_file(path: Path) -> tuple[dict, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """The planted file's metadata and its directions {attribute: {layer: (U, V)}}, in one read."""
    from safetensors import safe_open

    if not path.is_file():
        raise MineConfigError(f"{path}: missing; this run has no plant (mine with --plant-rank K)")
    out: dict = {}
    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
        for key in f.keys():
            cluster, rest = key.split(":", 1)
            name, side = rest.rsplit(".", 1)
            out.setdefault(cluster, {}).setdefault(name, {})[side] = f.get_tensor(key)
    return meta, {a: {n: (d["U"], d["V"]) for n, d in layers.items()} for a, layers in out.items()}


__all__ = ["FILE", "MODES", "Plant", "depth_gap", "outputs", "planted_directions", "planted_energy", "planted_share",
           "principal_angles", "recovery", "visible_pools"]
