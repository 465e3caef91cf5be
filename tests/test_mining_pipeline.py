"""The mining run end to end on a tiny model and ray-cast partitions: `cli.py mine train` in shards,
`extract`, `basis`, `report`; the basis loads and fits the model; a killed member resumes to the same
adapter as an uninterrupted one; members' factors are peft's update, scaling included."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, cli
from synthetic import write_partitions

peft = pytest.importorskip("peft")

from mining.basis import check_against_model, read_basis  # noqa: E402
from mining.config import ATTRIBUTES  # noqa: E402
from mining.members import load_member_factors  # noqa: E402
from model import VGGT, VGGTConfig, save_checkpoint  # noqa: E402
from training.rng import seeded  # noqa: E402

MIXED_FIRST = 96


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine")
    with seeded(0):
        model = VGGT(VGGTConfig.preset("tiny"))
    save_checkpoint(model, root / "tiny.safetensors")
    # per cluster: two members' partitions and one unseen partition for the transfer matrix
    for i, attribute in enumerate(ATTRIBUTES):
        write_partitions(root / "data", partitions=3, samples=4, views=2, hw=(28, 28), attribute=attribute, seed=i)
    write_partitions(root / "data", partitions=3, samples=4, views=2, hw=(28, 28), attribute="mixed", seed=9,
                     first_partition=MIXED_FIRST)
    return root


def mine_args(root, out, *extra, steps=4):
    return ["mine", "--out", str(out), "--checkpoint", str(root / "tiny.safetensors"), "--data", str(root / "data"),
            "--members", "2", "--mixed-members", "2", "--steps", str(steps), "--rank", "2", "--subspace-rank", "2",
            "--resolution", "28", "--frames", "2", "--transfer-partitions", "1", "--no-render", *extra]


def test_mine_in_shards_then_extract_basis_report(setup):
    root, out = setup, setup / "mined"
    for shard in ("0/2", "1/2"):
        r = cli(*mine_args(root, out), "train", "--shard", shard)
        assert r.returncode == 0, r.stderr
    members = sorted(p.parent.relative_to(out / "members").as_posix() for p in (out / "members").rglob("member.json"))
    assert members == [f"{a}/m{i:02d}" for a in sorted([*ATTRIBUTES, "mixed"]) for i in range(2)]
    record = json.loads((out / "members/lighting/m01/member.json").read_text())
    assert record["data"]["partition"].endswith("lighting/p001") and record["held_out_samples"] == 2
    assert record["data"]["render"]["width"] == 28 and record["train"]["steps"] == 4
    assert json.loads((out / "members/mixed/m00/member.json").read_text())["data"]["partition"].endswith("mixed/p096")

    # later steps read the run's settings from OUT/config.json
    for step in ("extract", "basis", "report"):
        r = cli("mine", "--out", str(out), step)
        assert r.returncode == 0, r.stderr
    summary = json.loads((out / "extract.json").read_text())
    assert set(summary["clusters"]) == {*ATTRIBUTES, "mixed"}
    assert len(summary["layers"]) == 2 * 2 * 4                     # 2 frame + 2 global blocks x 4 layers
    for side in ("column", "row"):
        assert all(0 <= d <= 1 for pair in summary["distances"][side].values() for d in pair["distance"])
    basis = read_basis(out / "basis.safetensors")
    assert basis.attributes == list(ATTRIBUTES) and basis.metadata["format"] == "attrspace-basis/1"
    assert basis.metadata["model_config"]["embed_dim"] == 64 and len(basis.metadata["checkpoint_sha256"]) == 64
    for name in basis.A:
        a, b = basis.A[name].double(), basis.B[name].double()
        assert a.shape[1] <= 8 and torch.allclose(a.T @ a, torch.eye(a.shape[1], dtype=a.dtype), atol=1e-5)
        assert torch.allclose(b.T @ b, torch.eye(b.shape[1], dtype=b.dtype), atol=1e-5)
    with seeded(0):
        check_against_model(basis, VGGT(VGGTConfig.preset("tiny")))
    assert (out / "report" / "README.md").is_file() and (out / "report" / "summary.json").is_file()

    # an ablation basis: two attributes, d' = 1
    r = cli("mine", "--out", str(out), "basis", "--attributes", "camera,lighting", "--rank", "1",
            "--out-file", str(out / "cl1.safetensors"))
    assert r.returncode == 0, r.stderr
    small = read_basis(out / "cl1.safetensors")
    assert small.attributes == ["camera", "lighting"] and all(v.shape[1] <= 2 for v in small.A.values())


def test_a_different_setting_in_the_same_run_folder_is_refused(setup):
    root, out = setup, setup / "refuse"
    assert cli(*mine_args(root, out), "train", "--attribute", "texture", "--member", "0").returncode == 0
    r = cli(*mine_args(root, out, steps=5), "train", "--attribute", "texture", "--member", "1")
    assert r.returncode == 2 and "steps: 4 -> 5" in r.stderr and "Traceback" not in r.stderr
    r = cli("mine", "--out", str(out), "extract")
    assert r.returncode == 2 and "not trained yet" in r.stderr


def test_killed_member_resumes_to_the_uninterrupted_adapter(setup):
    root = setup
    args = lambda out: [sys.executable, str(ROOT / "cli.py"), *mine_args(root, out, steps=16),  # noqa: E731
                        "train", "--attribute", "geometry", "--member", "1"]
    assert subprocess.run(args(root / "whole"), capture_output=True).returncode == 0
    proc = subprocess.Popen(args(root / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    checkpoints = root / "killed/members/geometry/m01/run/checkpoints"
    deadline = time.time() + 120
    while not any(checkpoints.glob("step_*.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (root / "killed/members/geometry/m01/member.json").exists()
    assert subprocess.run(args(root / "killed"), capture_output=True).returncode == 0
    whole = load_member_factors(root / "whole/members/geometry/m01")
    resumed = load_member_factors(root / "killed/members/geometry/m01")
    assert whole.keys() == resumed.keys()
    for name in whole:
        np.testing.assert_array_equal(whole[name][0], resumed[name][0])
        np.testing.assert_array_equal(whole[name][1], resumed[name][1])


def test_member_factors_are_peft_effective_update(tmp_path):
    """A Bᵀ from load_member_factors equals what peft's merge adds to the weight (scaling alpha/r)."""
    with seeded(0):
        base = VGGT(VGGTConfig.preset("tiny"))
        model = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=6, target_modules=["attn.qkv"],
                                                          init_lora_weights=False))
    name = "aggregator.frame_blocks.0.attn.qkv"
    before = dict(model.base_model.model.named_modules())[name].base_layer.weight.detach().clone()
    model.save_pretrained(str(tmp_path / "adapter"))
    a, b = load_member_factors(tmp_path)[name]
    merged = model.merge_and_unload()
    after = dict(merged.named_modules())[name].weight.detach()
    np.testing.assert_allclose(a @ b.T, (after - before).double().numpy(), atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "nowhere.safetensors", "train"], "nowhere.safetensors: no such checkpoint"),
    (["--subspace-rank", "many", "basis"], "--subspace-rank 'many': expected an integer or 'auto'"),
    (["--members", "1", "train"], "members must be >= 2"),
])
def test_bad_mine_options_get_one_line_and_exit_2(tmp_path, args, message):
    r = cli("mine", "--out", str(tmp_path / "m"), *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_gradient_checkpointing_trains_the_same_member(setup):
    """The GPU memory option recomputes activations; the member it trains is the same."""
    from mining.config import MineConfig
    from mining.members import Member, member_dir, train_member

    adapters = []
    for flag in (False, True):
        cfg = MineConfig(checkpoint=str(setup / "tiny.safetensors"), data=str(setup / "data"), members=2,
                         mixed_members=0, steps=3, rank=2, resolution=28, frames=2, device="cpu",
                         gradient_checkpointing=flag, out=str(setup / f"gc_{flag}"))
        train_member(cfg, Member("camera", 0), progress=False)
        adapters.append(load_member_factors(member_dir(cfg, Member("camera", 0))))
    for name, (a, b) in adapters[0].items():
        np.testing.assert_allclose(adapters[1][name][0], a, atol=1e-6)
        np.testing.assert_allclose(adapters[1][name][1], b, atol=1e-6)


def test_partitions_rendered_with_other_settings_are_refused(setup, tmp_path):
    """A member never trains on renders its config does not describe: the ray-cast partitions here
    (28 px, light generator) are not what the default render preset makes."""
    from mining.config import MineConfig
    from mining.members import Member
    from mining.pipeline import render_partitions
    from render.jobs import JobError

    cfg = MineConfig(data=str(setup / "data"), out=str(tmp_path / "m"))
    with pytest.raises(JobError, match="p000"):
        render_partitions(cfg, [Member("texture", 0)], bars=False)


def test_transfer_matrix_in_shards_matches_peft(setup):
    """`mine transfer` in two shards: each member's loss on every partition's held-out samples equals
    the loss of the peft model loaded from its adapter; the summary has every attribute's row."""
    from mining.members import load_base, member_data, member_seed, Member
    from mining.pipeline import stored_config
    from training import SynthSequences, make_loader, vggt_loss

    root, out = setup, setup / "mined"
    if not (out / "members/lighting/m01/member.json").is_file():
        for shard in ("0/2", "1/2"):
            assert cli(*mine_args(root, out), "train", "--shard", shard).returncode == 0
    # first without the unseen partitions, then with one per cluster: only the missing sets are scored
    r = cli("mine", "--out", str(out), "--no-render", "--transfer-partitions", "0", "transfer", "--shard", "0/2")
    assert r.returncode == 0, r.stderr
    assert "not summarised yet" in r.stdout and not (out / "transfer.json").exists()
    r = cli("mine", "--out", str(out), "--no-render", "--transfer-partitions", "0", "transfer", "--shard", "1/2")
    assert r.returncode == 0, r.stderr
    before = json.loads((out / "transfer" / "texture_m01.json").read_text())["losses"]
    assert sorted(before) == sorted(f"{a}/m{i:02d}" for a in [*ATTRIBUTES, "mixed"] for i in range(2))
    for shard in ("0/2", "1/2"):
        r = cli("mine", "--out", str(out), "--no-render", "--transfer-partitions", "1", "transfer", "--shard", shard)
        assert r.returncode == 0, r.stderr
        assert "(5 set(s))" in r.stdout                   # one unseen partition per cluster, nothing else
    summary = json.loads((out / "transfer.json").read_text())
    assert summary["attributes"] == [*ATTRIBUTES, "mixed"] and summary["members"] == 10
    assert summary["unseen_partitions"] == [f"{a}/p002" for a in ATTRIBUTES] + ["mixed/p098"]
    assert summary["sequences"]["lighting/p002"] == 4 and summary["sequences"]["lighting/m00"] == 2
    after = json.loads((out / "transfer" / "texture_m01.json").read_text())["losses"]
    assert {k: after[k] for k in before} == before and len(after["geometry/p002"]) == 4
    assert set(summary["contrast"]) == {f"{a}/m{i:02d}" for a in ATTRIBUTES for i in range(2)}
    assert summary["contrast_test"]["members"] == 8 and 0 < summary["contrast_test"]["p_less"] <= 1
    assert (out / "transfer.png").stat().st_size > 1000

    cfg = stored_config(out)
    file = json.loads((out / "transfer" / "texture_m01.json").read_text())["losses"]
    base = json.loads((out / "transfer" / "base.json").read_text())["losses"]
    _, held, _ = member_data(cfg, Member("geometry", 0), member_seed(cfg, Member("geometry", 0)))
    batch = next(iter(make_loader(held, batch_size=1, shuffle=False)))
    model = peft.PeftModel.from_pretrained(load_base(cfg), str(out / "members/texture/m01/adapter")).eval()
    with torch.no_grad():
        lora_loss = float(vggt_loss(model(batch["images"]), batch, weights=cfg.loss_weights())[0])
        base_loss = float(vggt_loss(load_base(cfg).eval()(batch["images"]), batch, weights=cfg.loss_weights())[0])
    assert file["geometry/m00"][0] == pytest.approx(lora_loss, rel=1e-5)
    unseen = SynthSequences([root / "data/geometry/p002"], num_frames=cfg.frames, resolution=cfg.resolution, seed=cfg.seed)
    batch = next(iter(make_loader(unseen, batch_size=1, shuffle=False)))
    with torch.no_grad():
        assert file["geometry/p002"][0] == pytest.approx(
            float(vggt_loss(model(batch["images"]), batch, weights=cfg.loss_weights())[0]), rel=1e-5)
    assert base["geometry/m00"][0] == pytest.approx(base_loss, rel=1e-6) and base_loss != lora_loss
    rel = summary["member_rel"]["texture/m01"]["geometry/m00"]
    assert rel == pytest.approx(np.mean((np.array(file["geometry/m00"]) - base["geometry/m00"]) / base["geometry/m00"]))


def test_mining_curve_over_checkpoints(setup):
    """`mine curve`: one mining run per checkpoint, the signals of each in curve.json in step order, and a
    finished curve is not trained again."""
    import dataclasses

    from mining.curve import run_curve

    root = setup
    checkpoints = []
    for step, seed in ((20, 1), (10, 2)):                     # given out of step order on purpose
        with seeded(seed):
            model = VGGT(dataclasses.replace(VGGTConfig.preset("tiny"), init_values=1.0))
        path = root / "milestones" / f"step_{step:08d}.safetensors"
        path.parent.mkdir(exist_ok=True)
        save_checkpoint(model, path)
        checkpoints.append(path)
    # two attributes keep it short: 6 members per run, one attribute pair, 4 attribute members for the contrast
    settings = dict(data=str(root / "data"), attributes=("texture", "lighting"), members=2, mixed_members=2, steps=4,
                    rank=2, subspace_rank=2, resolution=28, frames=2, transfer_partitions=1)
    out = root / "curve"
    rows = run_curve(checkpoints, out, render=False, progress=lambda *_: None, **settings)
    assert [r["step"] for r in rows] == [20, 10]              # the order given (pretraining order is the caller's)
    stored = json.loads((out / "curve.json").read_text())
    assert [r["checkpoint"] for r in stored] == [str(c) for c in checkpoints]
    for r in stored:
        assert 0 <= r["common_share"] <= 1 and r["cross_self"] > 0 and 0 < r["member_p"] <= 1
        assert r["members"] == 6 and r["pairs"] == 1
        lo, hi = r["transfer_ci95"]                            # 4 attribute members: a bootstrap CI of the contrast
        assert lo <= r["transfer"] <= hi and 0 < r["transfer_p"] <= 1
    a = json.loads((out / "step_00000020/config.json").read_text())["checkpoint_sha256"]
    b = json.loads((out / "step_00000010/config.json").read_text())["checkpoint_sha256"]
    assert a != b                                             # each run mined its own base model
    assert (out / "curve.png").stat().st_size > 1000
    record = out / "step_00000010/members/lighting/m01/member.json"
    stamp = record.stat().st_mtime_ns
    again = run_curve(checkpoints, out, render=False, progress=lambda *_: None, **settings)
    assert record.stat().st_mtime_ns == stamp and again == rows
    r = cli("mine", "curve", str(root / "milestones/step_missing.safetensors"), "--out", str(out))
    assert r.returncode == 2 and "no such checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_mine_render_makes_members_and_unseen_partitions_in_shards(tmp_path):
    """`mine render` in two shards: every member's partition and every unseen partition of the transfer
    matrix exists once, with the run's render settings, and a rerun renders nothing."""
    from synthetic import RaycastRenderer

    from mining.config import MineConfig
    from mining.members import all_members, partition_dir
    from mining.pipeline import members_for, render_partitions
    from mining.transfer import render_unseen, unseen_partitions

    cfg = MineConfig(data=str(tmp_path / "data"), out=str(tmp_path / "m"), render_preset="preview", members=2,
                     mixed_members=1, transfer_partitions=1)
    counts = [render_partitions(cfg, members_for(cfg, (i, 2)), renderer=RaycastRenderer, bars=False)
              + render_unseen(cfg, (i, 2), renderer=RaycastRenderer, bars=False) for i in range(2)]
    assert sum(counts) == 9 + 5 and all(c > 0 for c in counts)
    folders = sorted(p.relative_to(tmp_path / "data").as_posix() for p in (tmp_path / "data").glob("*/p*"))
    assert folders == sorted([f"{a}/p00{i}" for a in ATTRIBUTES for i in range(3)] + ["mixed/p096", "mixed/p097"])
    for m in [*all_members(cfg), *unseen_partitions(cfg)]:
        manifest = json.loads((partition_dir(cfg, m) / "manifest.json").read_text())
        assert manifest["render"]["width"] == 42 and manifest["samples"] == 2
    assert render_partitions(cfg, all_members(cfg), renderer=RaycastRenderer, bars=False) == 0
    assert render_unseen(cfg, renderer=RaycastRenderer, bars=False) == 0
