"""`apps.pretrain` end to end at toy size: a tiny VGGT trained for a few steps on three tiny mixed
partitions, evaluated, shipped as float16 safetensors with a model card; a rerun resumes and reproduces
the same numbers; too few partitions is a clear error."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from synthetic import write_partitions
from model import load_model
from apps.pretrain import PretrainConfig, evaluate_downstream, model_card, pretrain, split_partitions

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return write_partitions(tmp_path_factory.mktemp("synth"), partitions=3, samples=2, views=3, hw=(42, 56)).root


def config(tmp_path, **kw) -> PretrainConfig:
    kw = dict(init_values=1.0, ship=tmp_path / "ship" / "tiny.safetensors", downstream=()) | kw
    return PretrainConfig(partitions=3, held_out=1, preset="tiny", frames=3, resolution=56, batch_size=1,
                          steps=4, lr=1e-3, out=tmp_path / "run", **kw)


def test_pretrain_trains_evaluates_and_ships(mixed, tmp_path):
    cfg = config(tmp_path)
    metrics = pretrain(cfg, mixed, progress=False)

    assert metrics["train"]["steps"] == 4
    assert metrics["train"]["train_partitions"] == 2 and metrics["train"]["held_out_partitions"] == 1
    assert metrics["train"]["sequences"] == 4 and metrics["train"]["held_out_sequences"] == 2
    held, moto = metrics["held_out_renders"], metrics["middlebury_motorcycle"]
    for block in (held, moto):
        for who in ("model", "baseline"):
            assert 0 <= block[who]["abs_rel"] and 0 <= block[who]["delta1"] <= 1
    assert held["baseline"]["rot_deg"] > 0 and held["baseline"]["trans_rel"] == pytest.approx(1.0)
    assert moto["baseline"]["rot_deg"] == 0.0 and moto["size"]["width"] == 56 and moto["size"]["gt_pixels"] > 0
    assert json.loads((cfg.out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))

    # the shipped file: float16 weights, its config, the metrics; it loads and predicts
    with safe_open(str(cfg.ship), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
        assert json.loads(f.metadata()["metrics"])["train"]["steps"] == 4
    model = load_model(cfg.ship).eval()
    assert model.config.embed_dim == 64
    with torch.no_grad():
        assert model(torch.rand(2, 3, 56, 56))["depth"].shape == (1, 2, 56, 56, 1)
    card = cfg.ship.with_suffix(".md").read_text()
    assert f"{held['model']['abs_rel']:.3f}" in card and "Middlebury" in card and "float16" in card
    # the card states the loss weights the run used, read from its metrics
    assert metrics["loss_weights"] == {"camera": 5.0, "depth": 1.0, "point": 1.0}
    assert "loss: 5 x camera + 1 x depth + 1 x point" in card
    # the recipe as one command: every setting that differs from the CLI's defaults
    command = card.split("the recipe as one command")[1].split("`")[1]
    for option in ("--partitions 3", "--held-out 1", "--preset tiny", "--steps 4", "--frames 3", "--resolution 56",
                   "--batch-size 1", "--lr 0.001", f"--ship {cfg.ship}", "--downstream none"):
        assert option in command
    assert "--seed" not in command and "--generator-config" not in command and "MegaSynth's wide ranges" in card
    other = model_card(metrics | {"loss_weights": {"camera": 2.0, "depth": 1.0, "point": 0.0}}, cfg.ship)
    assert "loss: 2 x camera + 1 x depth (" in other
    assert (cfg.ship.parent / "tiny_examples.png").stat().st_size > 1000

    # rerunning resumes from the finished run: no more steps, same evaluation
    again = pretrain(cfg, mixed, progress=False)
    assert again["train"]["steps"] == 4
    assert again["held_out_renders"] == metrics["held_out_renders"]


def test_the_aggregator_diagnostic_is_measured_traced_and_on_the_card(mixed, tmp_path):
    cfg = config(tmp_path)
    metrics = pretrain(cfg, mixed, progress=False)
    effect = metrics["aggregator"]
    assert effect["relief_change"] > 0.1 and effect["on"]["abs_rel"] == pytest.approx(
        metrics["held_out_renders"]["model"]["abs_rel"])
    assert set(effect["gamma"]) == {f"{b}.{ls}" for b in ("frame.0", "frame.1", "global.0", "global.1")
                                    for ls in ("ls1", "ls2")}
    # the milestone weights of the mining-vs-pretraining curve: 1/16..1 of 4 steps = steps 1 (twice), 1, 2, 3, 4
    assert sorted(p.name for p in (cfg.out / "milestones").iterdir()) == [f"step_0000000{i}.safetensors" for i in (1, 2, 3, 4)]
    shipped = load_model(cfg.out / "milestones" / "step_00000004.safetensors").config
    assert shipped.init_values == 1.0 and shipped.camera_init_values == 1.0
    # the learning curve over those milestones, on the card with its plot
    assert [r["step"] for r in metrics["curve"]] == [1, 2, 3, 4]
    assert metrics["curve"][-1]["abs_rel"] == pytest.approx(metrics["held_out_renders"]["model"]["abs_rel"], rel=0.05)
    assert (cfg.out / "curve.png").stat().st_size > 1000 and (cfg.ship.parent / "tiny_curve.png").is_file()
    trace = (cfg.out / "aggregator.csv").read_text().splitlines()
    assert len(trace) == 1 + 4 and "frame.0.ls1.gamma" in trace[0] and "blocks_grad" in trace[0]
    assert "camera_trunk.gamma" in trace[0]
    assert (cfg.out / "aggregator.png").stat().st_size > 1000
    card = cfg.ship.with_suffix(".md").read_text()
    assert "switched off" in card and f"{100 * effect['relief_change']:.1f} %" in card
    assert "## Learning curve" in card and "| 4 |" in card


def test_a_model_whose_blocks_do_not_matter_is_not_shipped(mixed, tmp_path):
    cfg = config(tmp_path, init_values=1e-4)
    with pytest.raises(ValueError, match="not shipped: switching the aggregator blocks off changes the shape of the depth maps by only"):
        pretrain(cfg, mixed, progress=False)
    assert not cfg.ship.exists() and not cfg.ship.with_suffix(".md").exists()
    assert json.loads((cfg.out / "metrics.json").read_text())["aggregator"]["relief_change"] < 0.1


def test_a_run_folder_refuses_other_settings(mixed, tmp_path):
    pretrain(config(tmp_path, ship=None), mixed, progress=False)
    with pytest.raises(ValueError, match=r"settings.json: the run was started with other settings \(gamma_lr_scale"):
        pretrain(config(tmp_path, ship=None, gamma_lr_scale=5.0), mixed, progress=False)
    # a run started before a setting existed resumes: the missing setting counts as its default
    settings = tmp_path / "run" / "settings.json"
    stored = json.loads(settings.read_text())
    settings.write_text(json.dumps({k: v for k, v in stored.items() if k not in ("crop", "flip")}))
    pretrain(config(tmp_path, ship=None), mixed, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(flip: 0.0 -> 0.5\)"):
        pretrain(config(tmp_path, ship=None, flip=0.5), mixed, progress=False)


def test_a_fixed_held_out_set_stays_when_data_is_added(mixed):
    """--held-out-first keeps the evaluation partitions where they were when more are rendered after them."""
    names = lambda parts: [p.name for p in parts]  # noqa: E731
    train, held = split_partitions(mixed, PretrainConfig(partitions=3, held_out=1))
    assert (names(train), names(held)) == (["p000", "p001"], ["p002"])
    train, held = split_partitions(mixed, PretrainConfig(partitions=3, held_out=1, held_out_first=1))
    assert (names(train), names(held)) == (["p000", "p002"], ["p001"])
    with pytest.raises(ValueError, match="held_out_first 3: the 1 held-out partitions must lie within p000-p002"):
        split_partitions(mixed, PretrainConfig(partitions=3, held_out=1, held_out_first=3))


def test_too_few_partitions_is_a_clear_error(mixed, tmp_path):
    with pytest.raises(ValueError, match="3 of 5 partitions complete"):
        split_partitions(mixed, PretrainConfig(partitions=5, held_out=1))


def test_targets_and_downstream_controls_on_the_card(mixed, tmp_path):
    """The card's targets table (met or not, with the learning curve's extrapolation for a missed one) and
    a downstream task's test split before fine-tuning against a constant depth map."""
    from synthetic import write_mesh_partitions, write_test_meshes
    from finetune.data import TaskData

    cfg = config(tmp_path)
    metrics = pretrain(cfg, mixed, progress=False)
    meshes = write_test_meshes(tmp_path / "meshes")
    partitions, info = {}, {}
    for seed, split in enumerate(("train", "val", "test")):
        for fmt, label in (("ply", 1), ("obj", 1), ("off", 0)):
            job = write_mesh_partitions(tmp_path / "render" / split / fmt, meshes[fmt], rig="micro-baseline",
                                        samples=2, views=3, hw=(56, 56), seed=seed, name="m")
            for p in job.partition_ids():
                d = job.partition_dir(p)
                partitions.setdefault(split, []).append(d)
                info[d] = {"label": label, "kind": fmt, "identity": fmt}
    data = TaskData(name="face", partitions=partitions, info=info)
    down = evaluate_downstream(cfg.ship, ["face"], tmp_path / "downstream", 56, 3, data_for=lambda task, fcfg: data)
    face = down["face"]
    assert face["model"]["sequences"] == face["constant"]["sequences"] == 6
    assert face["model"]["abs_rel"] != face["constant"]["abs_rel"] and 0 <= face["constant"]["delta1"] <= 1
    assert (tmp_path / "downstream/face/none/record.json").is_file()

    card = model_card(metrics | {"downstream": down}, cfg.ship)
    assert "## Downstream test splits before fine-tuning" in card
    assert f"| face | this model | {face['model']['abs_rel']:.3f} |" in card
    assert f"| face | constant depth | {face['constant']['abs_rel']:.3f} |" in card
    targets = card.split("## Targets")[1].split("##")[0]
    held = metrics["held_out_renders"]["model"]
    assert f"| held-out renders, AbsRel | ≤ 0.15 | {held['abs_rel']:.3f} |" in targets
    assert targets.count("| **no** |") + targets.count("| yes |") == 4
    assert ("power law" in targets) or ("not improving" in targets) or held["abs_rel"] <= 0.15
