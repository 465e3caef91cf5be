"""The render command as farms and users run it: bad input, SIGKILL and resume, worker counts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, cli
from render.dataset import load_partition

FAST = ["--preset", "preview", "--jitter", "0"]


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("args, needle", [
    (["--attribute", "colour"], "--attribute 'colour': unknown"),
    (["--attribute", "lighting", "--partitions", "0"], "--partitions 0"),
    (["--attribute", "lighting", "--samples", "-2"], "--samples -2"),
    (["--attribute", "lighting", "--views", "0"], "--views 0"),
    (["--attribute", "lighting", "--resolution", "0"], "--resolution 0"),
    (["--attribute", "lighting", "--spp", "0"], "--spp 0"),
    (["--attribute", "lighting", "--shard", "4/4"], "--shard 4/4"),
    (["--attribute", "lighting", "--shard", "half"], "--shard 'half'"),
    (["--attribute", "lighting", "--preset", "huge"], "--preset 'huge'"),
])
def test_bad_options_one_line_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out"
    r = cli("render", *args, "--out", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not out.exists()


def test_foreign_unwritable_and_file_outputs(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    r = cli("render", "--attribute", "lighting", "--out", str(foreign), *FAST)
    assert r.returncode == 2 and "not made by attrspace render" in r.stderr
    assert _listing(foreign) == ["holiday.jpg"]
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    r = cli("render", "--attribute", "lighting", "--out", str(a_file), *FAST)
    assert r.returncode == 2 and "not a folder" in r.stderr
    r = cli("render", "--attribute", "lighting", "--out", "/proc/attrspace-cannot-exist", *FAST)
    assert r.returncode == 2 and "not writable" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    ('{"lighting": {"p_area_pairs": 0.5}}', "lighting.p_area_pairs"),
    ('{"camera": {"fov_deg": [70, 45]}}', "camera.fov_deg"),
])
def test_bad_generator_config_file_one_line_exit_2_nothing_written(tmp_path, content, needle):
    config = tmp_path / "ranges.json"
    config.write_text(content)
    out = tmp_path / "out"
    r = cli("render", "--attribute", "lighting", "--generator-config", str(config), "--out", str(out), *FAST)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert str(config) in lines[0] and needle in lines[0], lines[0]
    assert not out.exists()


def test_preset_job_applies_options_generator_file_and_textures_over_the_preset(tmp_path):
    from render.presets import load_presets, preset_job

    config = tmp_path / "ranges.json"
    config.write_text('{"lighting": {"p_area_pair": 1.0}, "camera": {"fov_deg": [50, 60]}}')
    (tmp_path / "tex").mkdir()
    job = preset_job("lighting", 3, tmp_path / "out", "preview", spp=8, generator_file=config, textures=tmp_path / "tex")
    preview = load_presets()["preview"]
    assert (job.samples, job.views, job.settings.width, job.settings.spp) == \
        (preview["samples"], preview["views"], preview["resolution"], 8)
    assert job.generator.lighting.p_area_pair == 1.0 and job.generator.camera.fov_deg == (50, 60)
    assert job.generator.geometry.max_large == 2                    # the rest is the preview's light generator
    assert job.generator.texture.texture_dir == str(tmp_path / "tex")
    assert job.header(0)["generator_config"]["lighting"]["p_area_pair"] == 1.0  # recorded with the partition


@pytest.mark.blender
def test_corrupt_manifest_and_changed_settings_are_refused(tmp_path):
    out = tmp_path / "out"
    r = cli("render", "--attribute", "texture", "--partitions", "1", "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    manifest = out / "texture" / "p000" / "manifest.json"
    before = _listing(out)
    r = cli("render", "--attribute", "texture", "--partitions", "1", "--spp", "8", "--out", str(out), *FAST)
    assert r.returncode == 2 and "other settings" in r.stderr and "spp" in r.stderr
    manifest.write_text('{"format": "attrspace-partition-1", "attribute": ')
    r = cli("render", "--attribute", "texture", "--partitions", "1", "--out", str(out), *FAST)
    assert r.returncode == 2 and "corrupt manifest" in r.stderr and str(manifest) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert _listing(out) == before


@pytest.mark.blender
def test_sigkill_mid_partition_then_resume_equals_uninterrupted_run(tmp_path):
    args = ["render", "--attribute", "camera", "--partitions", "2", "--samples", "8", "--views", "2",
            "--resolution", "48", "--spp", "8", *FAST]
    clean = tmp_path / "clean"
    r = cli(*args, "--out", str(clean), "--workers", "2")  # also: two workers give the same files
    assert r.returncode == 0, r.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args, "--out", str(killed), "--workers", "1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    part = killed / "camera" / "p000"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(part.glob("s0*"))) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in part.glob("s0*"))
    assert 2 <= len(done) < 8 and not (part / "manifest.json").exists()

    r = cli(*args, "--out", str(killed), "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert f"{16 - len(done)} samples" in r.stdout  # only the missing samples were rendered
    assert not list(killed.rglob(".*.tmp*"))
    for p in range(2):
        a = load_partition(clean / "camera" / f"p{p:03d}", verify=True).manifest
        b = load_partition(killed / "camera" / f"p{p:03d}", verify=True).manifest
        assert a["files"] == b["files"]
    assert _listing(clean) == _listing(killed)


@pytest.mark.blender
def test_shards_render_disjoint_slices_and_complete_the_job(tmp_path):
    out = tmp_path / "out"
    base = ["render", "--attribute", "geometry", "--partitions", "2", "--samples", "3", "--out", str(out), *FAST]
    r = cli(*base, env=os.environ | {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"})
    assert r.returncode == 0, r.stderr
    assert (out / "geometry" / "p000" / "manifest.json").exists()
    assert not (out / "geometry" / "p001" / "manifest.json").exists()
    r = cli(*base, "--shard", "1/2")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "geometry" / "p001" / "manifest.json").read_text())
    assert m["samples"] == 3 and len([k for k in m["files"] if k.endswith(".npy")]) == 3 * 2 * 2


def test_farm_doc_shows_the_shipped_sbatch_script():
    script = (ROOT / "docs" / "render.sbatch").read_text()
    assert script in (ROOT / "docs" / "farm.md").read_text()


@pytest.mark.blender
def test_user_texture_folder(tmp_path):
    import cv2
    import numpy as np
    tex = tmp_path / "textures"
    tex.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(tex / f"t{i}.png"), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    out = tmp_path / "out"
    r = cli("render", "--attribute", "texture", "--partitions", "1", "--samples", "3", "--textures", str(tex),
            "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    p = load_partition(out / "texture" / "p000")
    images = {m.image for s in p.samples for m in s.spec.texture.materials if m.image}
    assert images and all(Path(i).parent == tex.resolve() for i in images)
    r = cli("render", "--attribute", "texture", "--textures", str(tmp_path / "nope"), "--out", str(tmp_path / "o2"), *FAST)
    assert r.returncode == 2 and "--textures" in r.stderr and not (tmp_path / "o2").exists()


@pytest.mark.blender
def test_denoise_option_renders_and_is_recorded(tmp_path):
    out = tmp_path / "out"
    r = cli("render", "--attribute", "lighting", "--partitions", "1", "--denoise", "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    p = load_partition(out / "lighting" / "p000", verify=True)
    assert p.manifest["render"]["denoise"] is True
    assert p.samples[0].images.std() > 1  # a real image came out of the denoiser
