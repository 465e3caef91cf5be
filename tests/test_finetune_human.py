"""The clothed-human task: garments, skirts and hair on anny bodies (geometry checked against the undressed
body), the two domains, the per-sequence metrics on known answers, the built-in data through the Blender-free
ray caster and a LoRA run, and THuman 2.1 / 2K2K fixtures end to end through the CLI (Blender renders them).

anny's full-body model is built once per process (a few seconds once its cache exists)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from conftest import cli
from synthetic import RaycastRenderer

pytest.importorskip("anny")
pytest.importorskip("peft")

from finetune.data import TaskDataError  # noqa: E402
from finetune.evaluate import human_sequence_metrics  # noqa: E402
from finetune.harness import FinetuneConfig, compare  # noqa: E402
from finetune.tasks.human import (CROSS_DOMAIN, DOMAINS, IN_DOMAIN, HumanData, plan_subjects,  # noqa: E402
                                  prepare_human_data, sample_subject, scan_task_data)
from finetune.tasks.human_body import load_anny_body, posed_body  # noqa: E402
from finetune.tasks.human_dress import dress, sample_outfit, skirt_tube  # noqa: E402
from finetune.tasks.human_scans import write_2k2k_fixture, write_thuman_fixture  # noqa: E402


@pytest.fixture(scope="module")
def body():
    return load_anny_body()


def _subject(body, domain=IN_DOMAIN, number=0, **outfit):
    params = sample_subject(HumanData(), {"domain": domain, "number": number}, body)
    params["outfit"] |= outfit
    return params


def _naked(body, params):
    """The undressed posed body, moved as ``dress`` moves the dressed one (matched by the face vertices)."""
    return posed_body(body, params["phenotype"], params["pose"])


def test_garments_are_shells_off_the_body_and_the_face_stays_bare(body):
    params = _subject(body, top="longsleeve", bottom="trousers", sleeve=1.0, leg_length=1.0, hair="short",
                      ease_top=0.02, ease_bottom=0.015, folds=0.003)
    pb = _naked(body, params)
    mesh = dress(body, pb, params["outfit"])
    naked = trimesh.Trimesh(pb.vertices + mesh.offset, body.faces[body.keep_faces], process=False)
    joint = lambda name: pb.joints[name] + mesh.offset  # noqa: E731
    v, c = mesh.vertices, joint("spine01")
    chest = (np.abs(v[:, 0] - c[0]) < 0.05) & (np.abs(v[:, 1] - c[1]) < 0.05) & (v[:, 2] > c[2])
    t = 0.5 * (joint("upperleg01.L") + joint("lowerleg01.L"))
    thigh = (np.abs(v[:, 1] - t[1]) < 0.03) & (np.linalg.norm(v[:, [0, 2]] - t[[0, 2]], axis=1) < 0.12)
    eyes = _near(mesh.vertices, joint("eye.L"), 0.02)
    assert chest.sum() > 20 and thigh.sum() > 20 and eyes.sum() > 5
    off = lambda sel: np.median(trimesh.proximity.closest_point(naked, v[sel])[1])  # noqa: E731
    assert off(chest) > 0.02 - 1e-3          # the top: at least its ease off the skin
    assert off(thigh) > 0.015 - 1e-3         # the trousers likewise
    assert off(eyes) < 1e-4                  # the face is skin, not cloth or hair
    assert mesh.vertices[:, 1].min() == pytest.approx(0.0, abs=1e-9)
    again = dress(body, pb, params["outfit"])
    assert np.array_equal(again.vertices, mesh.vertices) and np.array_equal(again.colors, mesh.colors)


def _near(v, p, radius):
    return np.linalg.norm(v - p, axis=1) < radius


def test_hair_adds_volume_on_the_skull_only(body):
    bald = _subject(body, hair="bald")
    big = dict(bald, outfit=bald["outfit"] | {"hair": "voluminous"})
    pb = _naked(body, bald)
    h0, h1 = (np.ptp(dress(body, pb, p["outfit"]).vertices[:, 1]) for p in (bald, big))
    assert 0.025 < h1 - h0 < 0.07                          # a 4.5 cm volume with strands, on top of the head


def test_skirt_tube_encloses_the_legs(body):
    params = _subject(body, CROSS_DOMAIN, 3, bottom="skirt", skirt_length=0.8, skirt_flare=0.2, skirt_folds=10,
                      skirt_fold_depth=0.02, ease_bottom=0.02)
    pb = _naked(body, params)
    tube, faces = skirt_tube(pb.vertices, body.dominant_group(), pb, params["outfit"])
    assert len(faces) > 0 and faces.max() < len(tube)
    legs = pb.vertices[np.isin(body.dominant_group(), [5, 6])]   # leg_L, leg_R
    rings = tube.reshape(-1, 96, 3)
    for ring in rings[len(rings) // 3::4]:
        y = ring[0, 1]
        slab = legs[np.abs(legs[:, 1] - y) < 0.01]
        centre = ring[:, [0, 2]].mean(0)
        ring_r = np.linalg.norm(ring[:, [0, 2]] - centre, axis=1)
        for p in slab[:, [0, 2]]:
            angle = np.arctan2(p[1] - centre[1], p[0] - centre[0]) % (2 * np.pi)
            k = int(round(angle / (2 * np.pi) * 96)) % 96
            assert np.linalg.norm(p - centre) < ring_r[k] + 0.01   # inside (within a fold's depth)


def test_domains_differ_as_described(body):
    rng = np.random.default_rng(0)
    draws = {d: [sample_outfit(rng, DOMAINS[d].style) for _ in range(200)] for d in DOMAINS}
    share = lambda d, f: np.mean([f(o) for o in draws[d]])  # noqa: E731
    assert share(CROSS_DOMAIN, lambda o: o["bottom"] in ("skirt", "dress")) > 0.5 > \
        share(IN_DOMAIN, lambda o: o["bottom"] in ("skirt", "dress"))
    assert share(CROSS_DOMAIN, lambda o: o["top"] == "coat") > 0.25 and share(IN_DOMAIN, lambda o: o["top"] == "coat") == 0
    assert share(CROSS_DOMAIN, lambda o: o["ease_bottom"]) > 2 * share(IN_DOMAIN, lambda o: o["ease_bottom"])
    assert DOMAINS[CROSS_DOMAIN].rig["elevation_deg"][0] > DOMAINS[IN_DOMAIN].rig["elevation_deg"][1]


def test_subjects_split_by_subject():
    plan = plan_subjects(HumanData(subjects=20, cross_subjects=5))
    by = lambda key, value: [u["subject"] for u in plan if u[key] == value]  # noqa: E731
    assert (len(by("split", "train")), len(by("split", "val")), len(by("list", "test")), len(by("list", "cross"))) == (14, 3, 3, 5)
    assert all(u["domain"] == CROSS_DOMAIN for u in plan if u["list"] == "cross")
    assert len({u["subject"] for u in plan}) == 25
    assert plan == plan_subjects(HumanData(subjects=20, cross_subjects=5))
    assert by("split", "val") != [u["subject"] for u in plan_subjects(HumanData(subjects=20, cross_subjects=5, seed=1))
                                  if u["split"] == "val"]


def _sequence(depth, views=2):
    H, W = depth.shape
    K = np.array([[40.0, 0, W / 2 - 0.5], [0, 40.0, H / 2 - 0.5], [0, 0, 1]])
    E = np.stack([np.hstack([np.eye(3), [[0.02 * v], [0], [0]]]) for v in range(views)])
    mask = np.isfinite(depth)
    return {"depths": torch.from_numpy(np.stack([np.where(mask, depth, 0)] * views)).float(),
            "point_masks": torch.from_numpy(np.stack([mask] * views)),
            "intrinsics": torch.from_numpy(np.stack([K] * views)).float(), "extrinsics": torch.from_numpy(E).float()}


def test_metrics_on_known_answers():
    depth = np.full((40, 30), np.inf)
    depth[5:35, 8:22] = 2.5                                # a board 2.5 m away
    depth[15:25, 8:22] = 2.4                               # with a 10 cm step (a "belly")
    seq = _sequence(depth)
    gt = seq["depths"].numpy()
    perfect = human_sequence_metrics(gt * 1.7, seq, 1000.0, 100.0)        # any scale: median-scaled away
    assert perfect["abs_rel"] == pytest.approx(0, abs=1e-6) and perfect["acc_mean"] == pytest.approx(0, abs=1e-3)
    assert perfect["nc_mean"] == pytest.approx(1.0, abs=1e-6)
    flat = human_sequence_metrics(np.full_like(gt, 1.0), seq, 1000.0, 1000.0)   # the step flattened
    assert flat["abs_rel"] == pytest.approx((10 * 14 * 0.1 / 2.4) / (30 * 14), rel=1e-3)  # median 2.5: the step is off
    assert 30 < flat["acc_mean"] < 100 and flat["delta1"] == 1.0
    capped = human_sequence_metrics(np.full_like(gt, 1.0), seq, 1000.0, 20.0)
    assert capped["acc_mean"] <= 20.0 + 1e-9


def test_built_in_data_and_a_comparison(tmp_path, tiny_checkpoint):
    data_cfg = HumanData(root=str(tmp_path / "human"), subjects=5, cross_subjects=2, splits=(0.6, 0.2, 0.2),
                         samples=1, views=2, resolution=28, preset="preview")
    data = prepare_human_data(data_cfg, renderer=RaycastRenderer, progress=False, say=lambda *_: None)
    assert [len(data.partitions[s]) for s in ("train", "val", "test")] == [3, 1, 3]
    sources = sorted(data.info[p]["source"] for p in data.partitions["test"])
    assert sources == [CROSS_DOMAIN, CROSS_DOMAIN, IN_DOMAIN]
    index = json.loads((tmp_path / "human/meshes/humans.json").read_text())
    identities = {s: {data.info[p]["identity"] for p in data.partitions[s]} for s in ("train", "val", "test")}
    assert not (identities["train"] & identities["test"]) and not (identities["train"] & identities["val"])
    assert len(index["subjects"]) == 7
    cfg = FinetuneConfig(task="human", steps=2, lr=1e-3, resolution=28, frames=2, checkpoint=str(tiny_checkpoint),
                         basis=str(tmp_path / "none"), out=str(tmp_path / "runs"), progress=False, ranks=(2, 4))
    result = compare(cfg, data, methods=("lora", "random"), say=lambda *_: None)
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"no fine-tuning", "constant depth (control)", "lora r2", "lora r4", "random"}
    assert rows["lora r4"]["trainable"] == 2 * rows["lora r2"]["trainable"]
    for r in rows.values():
        assert np.isfinite(r["in_acc_mean"][0]) and np.isfinite(r["cross_acc_mean"][0])
        assert r["in_acc_mean"][0] <= 100.0 and 0 < r["cross_nc_mean"][0] <= 1
    assert "cross Acc mm" in result["markdown"] and "| lora r2 |" in result["markdown"]
    base = json.loads((tmp_path / "runs/human/none/record.json").read_text())
    assert base["max_dist_mm"] == 100.0 and set(base["test_by_source"]) == {IN_DOMAIN, CROSS_DOMAIN}


def test_scans_split_with_2k2k_as_the_cross_domain(tmp_path):
    write_thuman_fixture(tmp_path / "data/THuman2.1", subjects=10)
    write_2k2k_fixture(tmp_path / "data/2K2K", subjects=2)
    cfg = HumanData(root=str(tmp_path / "human"), samples=1, views=2, resolution=28, preset="preview")
    data = scan_task_data(tmp_path / "data", cfg, renderer=RaycastRenderer, progress=False, say=lambda *_: None)
    assert [len(data.partitions[s]) for s in ("train", "val", "test")] == [8, 1, 3]
    test = [data.info[p] for p in data.partitions["test"]]
    assert sorted((i["dataset"], i["source"]) for i in test) == [("2k2k", CROSS_DOMAIN), ("2k2k", CROSS_DOMAIN),
                                                                ("thuman2.1", IN_DOMAIN)]
    ds = data.dataset("test", 2, 28, normalize=False)
    depth = ds[0]["depths"][ds[0]["point_masks"]]
    assert 1.0 < float(depth.median()) < 10.0            # millimetre 2K2K scans were read as millimetres


def test_cli_on_scans_and_bad_data(tmp_path, tiny_checkpoint):
    write_thuman_fixture(tmp_path / "data/THuman2.1", subjects=4)
    write_2k2k_fixture(tmp_path / "data/2K2K", subjects=1)
    common = ["--checkpoint", str(tiny_checkpoint), "--resolution", "28", "--frames", "2",
              "--basis", str(tmp_path / "none"), "--out", str(tmp_path / "runs")]
    r = cli("finetune", "human", "--compare", "--methods", "lora", "--ranks", "2,4", "--lr", "1e-3", "--steps", "2",
            "--data", str(tmp_path / "data"), *common, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "runs/human/lora-r4/lr0.001/seed0/record.json").read_text())
    assert set(record["test_by_source"]) == {IN_DOMAIN, CROSS_DOMAIN}
    assert "cross Acc mm" in r.stdout and "| lora r2 |" in r.stdout and "| lora r4 |" in r.stdout
    assert "| psv |" not in r.stdout                      # --methods: only LoRA trained
    r = cli("finetune", "human", "--compare", "--methods", "lora,nope", *common, cwd=tmp_path)
    assert r.returncode == 2 and "nope" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "data/human/scans/data/render/cross/p000/manifest.json").is_file()
    (tmp_path / "empty").mkdir()
    r = cli("finetune", "human", "--method", "lora", "--data", str(tmp_path / "empty"), *common, cwd=tmp_path)
    assert r.returncode == 2 and str(tmp_path / "empty") in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_task_data_error_on_changed_build_settings(tmp_path, body):
    from finetune.tasks.human import build_human_meshes
    cfg = HumanData(root=str(tmp_path), subjects=1, cross_subjects=0, splits=(1.0, 0.0, 0.0))
    build_human_meshes(cfg, progress=False)
    with pytest.raises(TaskDataError, match="other settings"):
        build_human_meshes(HumanData(root=str(tmp_path), subjects=2, cross_subjects=0, splits=(1.0, 0.0, 0.0)),
                           progress=False)
