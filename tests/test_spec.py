"""Scene specs and attribute control, without Blender."""
from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest

from conftest import FIXTURES, small_job
from render import files
from render import generator as G
from render.jobs import JobError, _tasks, parse_shard, shard_items, validate
from render.spec import ATTRIBUTES, SceneSpec

CFG = G.GeneratorConfig.light()


@pytest.mark.parametrize("attribute", ATTRIBUTES + ("mixed",))
def test_json_round_trip(attribute):
    spec = G.sample_spec(attribute, 2, 1, seed=7, views=3)
    assert SceneSpec.from_json(spec.to_json()) == spec
    assert SceneSpec.from_json(spec.to_json()).to_json() == spec.to_json()


def test_unknown_field_rejected():
    d = G.sample_spec("texture", 0, 0, 0, 2).to_dict()
    d["camera"]["zoom"] = 3
    with pytest.raises(ValueError, match="zoom"):
        SceneSpec.from_dict(d)


def test_same_seed_same_spec_and_others_differ():
    a = G.sample_spec("lighting", 3, 2, seed=1, views=4)
    assert a == G.sample_spec("lighting", 3, 2, seed=1, views=4)
    assert a != G.sample_spec("lighting", 4, 2, seed=1, views=4)  # other partition
    assert a != G.sample_spec("lighting", 3, 2, seed=2, views=4)  # other seed
    assert a.lighting != G.sample_spec("lighting", 3, 3, seed=1, views=4).lighting  # other sample


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_only_the_partition_attribute_varies(attribute):
    base = G.partition_base(attribute, 5, seed=3, views=3, cfg=CFG)
    samples = [G.sample_spec(attribute, 5, k, seed=3, views=3, cfg=CFG, jitter=0.0) for k in range(6)]
    for s in samples:
        for other in ATTRIBUTES:
            if other != attribute:
                assert s.part(other) == base.part(other), other
    varied = [s.part(attribute) for s in samples]
    assert all(varied[i] != varied[j] for i in range(6) for j in range(i + 1, 6))


def _max_abs_diff(a, b, field):
    return max(float(np.max(np.abs(np.subtract(getattr(x, field), getattr(y, field))))) for x, y in zip(a, b))


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_jitter_stays_within_documented_bounds(attribute):
    base = G.partition_base(attribute, 1, seed=0, views=4)
    J = G.JITTER
    for k in range(4):
        s = G.sample_spec(attribute, 1, k, seed=0, views=4, jitter=1.0)
        if attribute != "geometry":
            a, b = base.geometry.shapes, s.geometry.shapes
            assert [x.uid for x in a] == [x.uid for x in b] and s.geometry.room == base.geometry.room
            assert 0 < _max_abs_diff(a, b, "center") <= J["geometry"]["center"] + 1e-12
            assert _max_abs_diff(a, b, "rotation") <= math.radians(J["geometry"]["rotation_deg"]) + 1e-12
            assert [x.mesh_key() for x in a] == [x.mesh_key() for x in b]
        if attribute != "camera":
            a, b = base.camera.views, s.camera.views
            assert 0 < _max_abs_diff(a, b, "position") <= J["camera"]["position"] + 1e-12
            assert _max_abs_diff(a, b, "fov_deg") <= J["camera"]["fov_deg"] + 1e-12
        if attribute != "lighting":
            a, b = base.lighting.lights, s.lighting.lights
            assert [x.kind for x in a] == [x.kind for x in b]
            for x, y in zip(a, b):
                assert abs(y.power / x.power - 1) <= J["lighting"]["power_rel"] + 1e-12
            if a:
                assert _max_abs_diff(a, b, "position") <= J["lighting"]["position"] + 1e-12
        if attribute != "texture":
            a, b = base.texture.materials, s.texture.materials
            assert [x.pattern for x in a] == [x.pattern for x in b]
            assert 0 < _max_abs_diff(a, b, "color_a") <= J["texture"]["color"] + 1e-12


def test_partition_attribute_spans_its_range():
    n = 40
    cams = [G.sample_spec("camera", 0, k, 0, views=3).camera for k in range(n)]
    fovs = [v.views[0].fov_deg for v in cams]
    assert max(fovs) - min(fovs) > 0.6 * (70 - 45)
    baselines = [c.baseline for c in cams]
    assert max(baselines) / min(baselines) > 30  # micro to wide
    assert len({c.rig for c in cams}) >= 4
    mixed = [G.sample_spec("mixed", k, 0, 0, views=4).camera.baseline for k in range(n)]
    assert np.median(mixed) > 0.2 and np.median(baselines) < np.median(mixed)  # pretraining data: wide
    lights = [G.sample_spec("lighting", 0, k, 0, views=2).lighting for k in range(n)]
    assert len({len(l.lights) for l in lights}) >= 3
    assert {li.kind for l in lights for li in l.lights} >= {"area", "point"}
    tex = [G.sample_spec("texture", 0, k, 0, views=2).texture for k in range(n)]
    assert len({m.pattern for t in tex for m in t.materials}) == len(G.PATTERNS)
    geo = [G.sample_spec("geometry", 0, k, 0, views=2).geometry for k in range(12)]
    assert len({len(g.shapes) for g in geo}) >= 4
    assert all(g.room == geo[0].room and g.window == geo[0].window for g in geo)  # the room shell is fixed


@pytest.mark.parametrize("attribute", ATTRIBUTES + ("mixed",))
def test_cameras_inside_room_and_clear_of_geometry(attribute):
    for k in range(5):
        spec = G.sample_spec(attribute, k, k, seed=11, views=4)
        pos = np.array([v.position for v in spec.camera.views])
        assert np.all(np.abs(pos) < np.asarray(spec.geometry.room) / 2)
        clear = min(G.shape_distance(sh, pos).min() for sh in spec.geometry.shapes)
        assert clear >= G.GeneratorConfig().geometry.camera_clearance - 0.02  # jitter may move things 0.015


def test_room_is_normalised():
    for k in range(10):
        g = G.sample_spec("mixed", 0, k, 0, 2).geometry
        assert max(g.room[0], g.room[1]) == pytest.approx(2.0)
        assert 10 / 30 * 2 <= g.room[2] <= 15 / 17 * 2


def test_texture_folder_is_used(tmp_path):
    import cv2
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"t{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    cfg = G.GeneratorConfig().override({"texture": {"texture_dir": str(tmp_path)}})
    mats = [m for k in range(5) for m in G.sample_spec("texture", 0, k, 0, 2, cfg=cfg).texture.materials]
    used = {m.image for m in mats if m.image}
    assert used and used <= {str((tmp_path / f"t{i}.png").resolve()) for i in range(3)}


def test_shards_partition_the_items():
    items = [(p, s) for p in range(7) for s in range(5)]
    for n in (1, 2, 3, 8, 40):
        parts = [shard_items(items, (i, n)) for i in range(n)]
        assert sum(parts, []) == items


def test_parse_shard():
    assert parse_shard("2/5", env={}) == (2, 5)
    assert parse_shard(None, env={}) == (0, 1)
    assert parse_shard(None, env={"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (3, 4)
    assert parse_shard(None, env={"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4",
                                  "SLURM_ARRAY_TASK_MIN": "1"}) == (3, 4)
    for bad in ("5/5", "-1/3", "x", "1/0", "1/2/3"):
        with pytest.raises(JobError):
            parse_shard(bad, env={})


def test_tasks_keep_partitions_together():
    todo = [(p, s) for p in range(4) for s in range(6)]
    assert all(len({p for p, _ in t}) == 1 for t in _tasks(todo, 2))
    assert len(_tasks(todo, 2)) == 4
    assert len(_tasks(todo[:6], 2)) == 2  # one partition, two workers: split in two


# ------------------------------------------------------------------------------ generator config
def test_config_dict_round_trip():
    for cfg in (G.GeneratorConfig(), G.GeneratorConfig.light()):
        back = G.GeneratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert back == cfg
        assert isinstance(back.camera.fov_deg, tuple) and isinstance(back.texture.pattern_p, tuple)
    assert set(G.GeneratorConfig().to_dict()) == {"geometry", "camera", "lighting", "texture", "jitter"}


def test_light_config_is_the_flat_one_of_before():
    legacy = json.loads((FIXTURES / "legacy_partition.json").read_text())["generator_config"]
    assert "max_large" in legacy and "geometry" not in legacy  # the flat form
    assert G.GeneratorConfig.from_dict(legacy) == G.GeneratorConfig.light()
    light = G.GeneratorConfig.light()
    assert (light.geometry.max_large, light.geometry.heightfield_resolution, light.geometry.wall_sticks) == (2, 10, (2, 3))
    assert dataclasses.replace(light, geometry=G.GeometryConfig()) == G.GeneratorConfig()


def test_override_changes_only_what_it_names():
    base = G.GeneratorConfig.light()
    cfg = base.override({"lighting": {"p_area_pair": 0.5}, "camera": {"fov_deg": [30, 90]}})
    assert cfg.lighting.p_area_pair == 0.5 and cfg.camera.fov_deg == (30.0, 90.0)
    assert dataclasses.replace(cfg.lighting, p_area_pair=0.4) == base.lighting
    assert cfg.geometry == base.geometry and cfg.texture == base.texture and cfg.jitter == base.jitter
    assert base.lighting.p_area_pair == 0.4 and base.override({}) == base


@pytest.mark.parametrize("partial, message", [
    ({"lighting": {"p_area_pairs": 0.5}}, r"^lighting\.p_area_pairs: unknown key \(did you mean lighting\.p_area_pair\?\)"),
    ({"lightning": {}}, r"^lightning: unknown key"),
    ({"max_large": 3}, r"^max_large: unknown key \(did you mean geometry\.max_large\?\)"),
    ({"camera": {"fov_deg": [40]}}, r"^camera\.fov_deg: expected 2 values, got 1"),
    ({"camera": {"fov_deg": "wide"}}, r"^camera\.fov_deg: expected a list"),
    ({"camera": {"fov_deg": [70, 40]}}, r"^camera\.fov_deg: \[70\.0, 40\.0\] is not a range"),
    ({"geometry": {"max_large": 2.5}}, r"^geometry\.max_large: expected an integer, got 2\.5"),
    ({"geometry": {"p_frames": True}}, r"^geometry\.p_frames: expected a number, got true"),
    ({"lighting": {"p_sun": 1.5}}, r"^lighting\.p_sun: 1\.5 is not a probability"),
    ({"lighting": 3}, r"^lighting: expected an object, got 3"),
    ({"texture": {"pattern_p": [1.0]}}, r"^texture\.pattern_p: 1 probabilities for 8 patterns"),
    ({"texture": {"texture_dir": 3}}, r"^texture\.texture_dir: expected a string, got 3"),
    ({"camera": {"rigs": ["orbit", "crane"], "rig_p": [0.5, 0.5]}}, r"^camera\.rigs: unknown \['crane'\]"),
])
def test_override_rejects_bad_values_naming_the_key(partial, message):
    with pytest.raises(ValueError, match=message):
        G.GeneratorConfig().override(partial)


def test_config_values_reach_the_samplers():
    cfg = CFG.override({"camera": {"fov_deg": [30, 30], "rigs": ["line"], "rig_p": [1.0]},
                        "lighting": {"p_area_pair": 1.0, "p_sun": 0.0, "p_point": 0.0, "p_bulb": 0.0},
                        "texture": {"materials": [3, 3], "patterns": ["checker"], "pattern_p": [1.0]}})
    for k in range(3):
        s = G.sample_spec("mixed", 0, k, 0, views=3, cfg=cfg)
        assert {v.fov_deg for v in s.camera.views} == {30.0} and s.camera.rig == "line"
        assert [li.kind for li in s.lighting.lights] == ["area", "area"]
        assert [m.pattern for m in s.texture.materials] == ["checker"] * 3
    still = CFG.override({"jitter": {"camera_fov_deg": 0.0}})
    base = G.partition_base("texture", 0, 0, 3, still)
    s = G.sample_spec("texture", 0, 1, 0, 3, still, jitter=1.0)
    assert [v.fov_deg for v in s.camera.views] == [v.fov_deg for v in base.camera.views]
    assert s.camera.views != base.camera.views  # positions still jitter


def test_jitter_table_is_the_default_config():
    assert G.JITTER == G.JitterConfig().table()
    assert {a: set(q) for a, q in G.JITTER.items()} == {
        "geometry": {"center", "rotation_deg"},
        "texture": {"color", "roughness", "metallic", "scale_rel", "bump"},
        "lighting": {"power_rel", "color", "position", "direction_deg"},
        "camera": {"position", "look_at", "fov_deg", "roll_deg"}}


def test_load_generator_config(tmp_path):
    path = tmp_path / "gen.json"
    path.write_text(json.dumps({"lighting": {"p_area_pair": 0.5}, "geometry": {"room_side": [20, 25]}}))
    cfg = G.load_generator_config(path)
    assert cfg.lighting.p_area_pair == 0.5 and cfg.geometry.room_side == (20.0, 25.0)
    assert cfg.geometry.max_large == 5
    assert G.load_generator_config(path, G.GeneratorConfig.light()).geometry.max_large == 2
    for text, why in (("{", "not valid JSON"), ("[1]", "expected an object"),
                      ('{"camera": {"zoom": 1}}', r"camera\.zoom: unknown key"),
                      ('{"camera": {"baseline": [0.1, 1, 2]}}', r"camera\.baseline: expected 2 values")):
        path.write_text(text)
        with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {why}") as e:
            G.load_generator_config(path)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / 'nope.json'))}: cannot read"):
        G.load_generator_config(tmp_path / "nope.json")


def _partition_with(tmp_path, name: str, header: dict):
    job = small_job("texture", tmp_path / "out")
    job.partition_dir(0).mkdir(parents=True, exist_ok=True)
    (tmp_path / "out" / files.MARKER).write_text("{}")
    for old in ("partition.json", "manifest.json"):
        (job.partition_dir(0) / old).unlink(missing_ok=True)
    (job.partition_dir(0) / name).write_text(json.dumps(header))
    return job


@pytest.mark.parametrize("name", ["partition.json", "manifest.json"])
def test_resume_accepts_partitions_with_the_flat_config_of_before(tmp_path, name):
    """legacy_partition.json is the header the code wrote before the config split, for small_job."""
    legacy = json.loads((FIXTURES / "legacy_partition.json").read_text()) | {"files": {}}
    job = _partition_with(tmp_path, name, legacy)
    assert job.header(0)["generator_config"] != legacy["generator_config"]  # the form did change
    validate(job, workers=1)
    validate(_partition_with(tmp_path, name, job.header(0) | {"files": {}}), workers=1)  # and today's form
    changed = legacy | {"generator_config": legacy["generator_config"] | {"max_large": 3}}
    job = _partition_with(tmp_path, name, changed)
    with pytest.raises(JobError, match=r"rendered with other settings \(generator_config\.geometry\.max_large: 3, now 2\)"):
        validate(job, workers=1)
    nested = job.header(0) | {"files": {}}
    nested["generator_config"]["lighting"]["p_bulb"] = 0.9
    job = _partition_with(tmp_path, name, nested)
    with pytest.raises(JobError, match=r"generator_config\.lighting\.p_bulb: 0\.9, now 0\.2"):
        validate(job, workers=1)
