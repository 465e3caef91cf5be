"""mining.report on a synthetic run folder (an extract.json of the real layout, members' records and logs):
every output is written, the numbers equal ones computed here from extract.json, the verdicts follow the
numbers (and flip when they change), and missing parts (mixed, activations, basis, layers) or NaNs do
not break it."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from mining.config import MineConfig, MineConfigError
from mining.report import short_layer, summarize, load_members, write_report
from mining.report_text import readme
from mining.subspace import choose_rank

ATTRS = ("texture", "geometry", "camera", "lighting")
LAYERS = {"aggregator.frame_blocks.0.attn.qkv": [192, 64], "aggregator.global_blocks.1.mlp.fc2": [64, 256]}
SIDES = ("column", "row")


def spectrum(n: int, cliff: int) -> list[float]:
    """n decreasing values with one clear drop after the ``cliff``-th."""
    return [1.0 * 0.95 ** j if j < cliff else 1e-3 * 0.95 ** j for j in range(n)]


def make_extract(layers=LAYERS, members=2, mixed=True, activations=True, cross=0.7, self_=0.7,
                 cross_halves=None, chance=0.8, d=2, cliff=2, n_sv=40, seed=0) -> dict:
    """An extract.json of mining.extract's layout, with chosen levels for the distances (small noise)."""
    rng = np.random.default_rng(seed)
    names = list(layers)
    clusters = {a: [f"{a}/m{i:02d}" for i in range(members)] for a in ATTRS}
    if mixed:
        clusters["mixed"] = [f"mixed/m{i:02d}" for i in range(members)]
    noise = lambda level: [float(np.clip(level + rng.normal(0, 0.01), 0, 1)) for _ in names]  # noqa: E731
    pack = lambda level: {"distance": noise(level), "overlap": noise(0.1)}                   # noqa: E731

    def tables(cross_level, self_level, halves_level):
        dist = {s: {f"{a}|{b}": pack(cross_level) for a, b in itertools.combinations(clusters, 2)} for s in SIDES}
        halves = {s: {"self": {a: pack(self_level) for a in ATTRS},
                      "cross": {f"{a}|{b}": pack(halves_level) for a, b in itertools.combinations(ATTRS, 2)}}
                  for s in SIDES}
        return dist, halves

    dist, halves = tables(cross, self_, cross if cross_halves is None else cross_halves)
    after_dist, after_halves = tables(cross, self_, cross if cross_halves is None else cross_halves)
    ex = {
        "layers": names,
        "shapes": dict(layers),
        "clusters": clusters,
        "extraction": {c: {l: {"rank": d, "singular_values": spectrum(n_sv, cliff),
                               "weights": list(rng.uniform(0.5, 1.5, members)), "residuals": [0.1] * members,
                               "iterations": 5, "converged": True} for l in names} for c in clusters},
        "distances": dist,
        "halves": halves,
        "chance": {s: {"distance": [chance] * len(names), "std": [0.05] * len(names),
                       "overlap": [0.03] * len(names)} for s in SIDES},
        "common": {"rank": 4,
                   "member_energy_share": {m: {"column": float(rng.uniform(0, 1)), "row": float(rng.uniform(0, 1))}
                                           for ms in clusters.values() for m in ms},
                   "mixed_explains": ({a: {s: noise(0.2) for s in SIDES} for a in ATTRS} if mixed else {})},
        "after_removing_common": {"distances": after_dist, "halves": after_halves},
        "settings": {"subspace_rank": d, "rank_bounds": [2, 32], "alpha": 1.0, "eps": 1e-6, "max_iter": 100},
    }
    if activations:
        ex["activations"] = {"row_to_activations": {a: pack(0.3) for a in ATTRS},
                             "activations_between": {f"{a}|{b}": pack(0.1) for a, b in itertools.combinations(ATTRS, 2)},
                             "batches": 4}
    return ex


def make_run(tmp_path, ex: dict, steps: int = 5) -> MineConfig:
    """A run folder holding ``ex`` as extract.json and a member.json and log.csv per member."""
    cfg = MineConfig(out=str(tmp_path / "mined"), members=2, rank=2, subspace_rank=2, rank_bounds=(2, 32))
    cfg.out_dir.mkdir(parents=True)
    (cfg.out_dir / "extract.json").write_text(json.dumps(ex))
    for i, name in enumerate(m for ms in ex["clusters"].values() for m in ms):
        folder = cfg.out_dir / "members" / name
        (folder / "run").mkdir(parents=True)
        before, after = 4.0 + 0.1 * i, 4.0 + 0.1 * i - (0.05 if i % 3 else -0.01)   # every third gets worse
        (folder / "member.json").write_text(json.dumps({
            "member": name, "held_out_before": {"loss": before}, "held_out_after": {"loss": after},
            "train": {"steps": steps, "seconds": 1.5}}))
        rows = "".join(f"{s},{before - 0.01 * s},{0.1 * s}\n" for s in range(1, steps + 1))
        (folder / "run" / "log.csv").write_text("step,loss,seconds\n" + rows)
    return cfg


def strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path}: non-standard JSON constant {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_short_layer_names():
    assert short_layer("aggregator.frame_blocks.0.attn.qkv") == "F0 qkv"
    assert short_layer("aggregator.global_blocks.3.mlp.fc2") == "G3 fc2"
    assert short_layer("head.proj") == "head proj"


def test_missing_extract_json_is_one_line_naming_the_file(tmp_path):
    cfg = MineConfig(out=str(tmp_path / "empty"))
    with pytest.raises(MineConfigError, match=r"extract\.json.*mine extract") as e:
        write_report(cfg)
    assert "\n" not in str(e.value)


def test_report_writes_every_output_with_the_numbers_of_extract_json(tmp_path):
    ex = make_extract()
    cfg = make_run(tmp_path, ex)
    folder = write_report(cfg)
    assert folder == cfg.out_dir / "report"
    for name in ("spectra.png", "distances.png", "layers.png", "weights.png", "losses.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    s = strict_json(folder / "summary.json")

    for side in SIDES:
        m = np.array(s["matrices"][side]["cross"])
        mh = np.array(s["matrices"][side]["cross_halves"])
        for i, a in enumerate(ATTRS):
            self_mean = np.mean(ex["halves"][side]["self"][a]["distance"])
            assert m[i, i] == pytest.approx(self_mean) and mh[i, i] == pytest.approx(self_mean)
            for j, b in enumerate(ATTRS):
                if i < j:
                    assert m[i, j] == m[j, i] == pytest.approx(np.mean(ex["distances"][side][f"{a}|{b}"]["distance"]))
                    assert mh[i, j] == pytest.approx(np.mean(ex["halves"][side]["cross"][f"{a}|{b}"]["distance"]))
        assert s["controls"][side]["chance"]["mean"] == pytest.approx(0.8)
        pair = s["pairs"][side]["texture|mixed"]
        assert pair["overlap"] == pytest.approx(np.mean(ex["distances"][side]["texture|mixed"]["overlap"]))

    shares = ex["common"]["member_energy_share"]
    assert s["common"]["attribute_mean"]["camera"]["column"] == pytest.approx(
        np.mean([shares[f"camera/m{i:02d}"]["column"] for i in range(2)]))
    w = s["irls_weights"]["lighting"]
    per_layer = np.array([ex["extraction"]["lighting"][l]["weights"] for l in LAYERS])
    assert w["mean"] == pytest.approx(per_layer.mean(0).tolist()) and w["max"] == pytest.approx(per_layer.max(0).tolist())

    # basis-free parameter counts: (Σ_attr d′)² per layer, LoRA r·(in+out), full in·out
    p = s["parameters"]
    assert p["source"] == "extract.json ranks"
    assert p["basis"] == 2 * (4 * 2) ** 2
    assert p["lora"] == 2 * (192 + 64) + 2 * (64 + 256)
    assert p["full"] == 192 * 64 + 64 * 256

    members = s["members"]
    assert members["total"] == 10 and members["dropped"] == sum(1 for i in range(10) if i % 3)
    row = members["table"][1]
    assert row["relative_change"] == pytest.approx(-0.05 / 4.1)

    text = (folder / "README.md").read_text()
    assert "![distance heatmaps](distances.png)" in text
    assert "![distance heatmaps](report/distances.png)" in (cfg.out_dir / "README.md").read_text()
    assert "| texture/m01 | 4.1000 | 4.0500 |" in text


def test_cliff_verdict_follows_the_spectra(tmp_path):
    cfg = MineConfig(out=str(tmp_path), members=2, rank=2, subspace_rank=2, rank_bounds=(2, 32))
    at_d = summarize(cfg, make_extract(d=3, cliff=3), [])
    far = summarize(cfg, make_extract(d=3, cliff=20), [])
    assert choose_rank(spectrum(40, 3), 2, 32) == 3 and choose_rank(spectrum(40, 20), 2, 32) == 20
    assert at_d["verdicts"]["cliff"]["holds"] and at_d["verdicts"]["cliff"]["informative"]
    assert at_d["cliff"]["texture"]["hits"] == len(LAYERS)
    assert at_d["cliff"]["texture"]["median_ratio_at_d"] == pytest.approx(spectrum(40, 3)[2] / spectrum(40, 3)[3])
    assert not far["verdicts"]["cliff"]["holds"]
    assert "A cliff near d′: holds." in readme(at_d)
    assert "A cliff near d′: does not hold here." in readme(far)
    # a spectrum of four values leaves gap positions only within ±2 of d′: a hit is worth nothing
    short = summarize(cfg, make_extract(d=2, cliff=2, n_sv=4), [])
    assert not short["verdicts"]["cliff"]["informative"] and "not informative" in readme(short)


def test_distance_verdict_needs_the_controls(tmp_path):
    cfg = MineConfig(out=str(tmp_path), members=2, rank=2, subspace_rank=2)
    # high distances, but halves of one attribute are as far apart as different attributes: not separated
    noisy = summarize(cfg, make_extract(cross=0.8, self_=0.75, cross_halves=0.8), [])
    v = noisy["verdicts"]["distances"]
    assert v["above"] == 6 and v["separated"] == 0 and not v["holds"]
    assert "Pairwise distances mostly above 0.5: does not hold here" in readme(noisy)
    # the same distances with tight halves: separated, the claim holds
    clean = summarize(cfg, make_extract(cross=0.8, self_=0.2, cross_halves=0.8), [])
    v = clean["verdicts"]["distances"]
    assert v["separated"] == 6 and v["holds"]
    assert "Pairwise distances mostly above 0.5: holds" in readme(clean)
    # separated from self but far below chance: still not separated
    low = summarize(cfg, make_extract(cross=0.8, self_=0.05, cross_halves=0.3, chance=0.9), [])
    assert low["verdicts"]["distances"]["separated"] == 0


def test_report_survives_missing_parts_and_nans(tmp_path):
    ex = make_extract(layers={"aggregator.frame_blocks.0.attn.qkv": [192, 64]}, mixed=False, activations=False)
    ex["halves"]["column"]["self"]["camera"]["distance"] = [float("nan")]
    ex["distances"]["row"]["texture|geometry"]["distance"] = [None]
    ex["extraction"]["texture"]["aggregator.frame_blocks.0.attn.qkv"]["singular_values"][5] = float("nan")
    cfg = make_run(tmp_path, ex)
    (cfg.out_dir / "members" / "lighting" / "m01" / "member.json").unlink()
    (cfg.out_dir / "members" / "texture" / "m00" / "run" / "log.csv").unlink()
    folder = write_report(cfg)
    s = strict_json(folder / "summary.json")
    assert s["activations"] is None and "mixed" not in s["irls_weights"]
    assert s["matrices"]["column"]["cross"][2][2] is None and s["matrices"]["row"]["cross"][0][1] is None
    assert s["separation"]["column"]["pairs"]["geometry|camera"]["separated"] is False
    assert s["members"]["missing"] == ["lighting/m01"] and s["members"]["total"] == 7
    assert s["cliff"]["texture"]["layers"] == 0          # a spectrum with a NaN is left out, not guessed
    text = (folder / "README.md").read_text()
    assert "n/a" in text and "activation control: not computed" in text
    assert all((folder / f"{n}.png").is_file() for n in ("spectra", "distances", "layers", "weights", "losses"))


def test_parameter_counts_read_the_basis_file(tmp_path):
    from mining.basis import write_basis

    ex = make_extract()
    cfg = make_run(tmp_path, ex)
    rng = np.random.default_rng(1)
    subspaces = {a: {l: (rng.normal(size=(out, 2)), rng.normal(size=(inp, 3 if l.endswith("qkv") else 2)))
                     for l, (out, inp) in LAYERS.items()} for a in ATTRS[:2]}
    # write_basis needs equal column counts per attribute and side; trim B to A's width where they differ
    subspaces = {a: {l: (A, B[:, :A.shape[1]]) for l, (A, B) in v.items()} for a, v in subspaces.items()}
    write_basis(cfg.out_dir / "basis.safetensors", subspaces, attributes=list(ATTRS[:2]))
    s = summarize(cfg, ex, load_members(cfg, ex))
    assert s["parameters"]["source"] == "basis.safetensors"
    assert s["parameters"]["basis"] == 2 * 4 * 4            # two layers of [4, 4] middle matrices
    (cfg.out_dir / "basis.safetensors").write_bytes(b"not a basis")
    broken = summarize(cfg, ex, [])
    assert broken["parameters"]["source"] == "extract.json ranks" and "unreadable" in broken["parameters"]["note"]
