"""Shared fixtures: small partitions rendered once per test session (tens of pixels, few samples), the
official reference files, and the CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from render.generator import GeneratorConfig  # noqa: E402
from render.jobs import RenderJob  # noqa: E402
from render.spec import RenderSettings  # noqa: E402

# Small reference files, shipped: the official VGGT-1B keys and shapes, the parameter counts, and
# parity_micro (every output of the official code on a 2-block model with random weights, 2.7 MB).
FIXTURES = ROOT / "tests" / "fixtures"
# The larger parity fixtures (parity_tiny, parity_tiny2: 70 MB with the aggregator's per-layer outputs)
# are not shipped: point ATTRSPACE_VGGT_REFERENCE at the folder holding them; tests that need them skip
# when it is absent.
VGGT_REFERENCE = Path(os.environ.get("ATTRSPACE_VGGT_REFERENCE", ROOT.parent / "shared" / "reference" / "vggt"))


def parity_path(name: str, suffix: str) -> Path:
    """``name.suffix`` of a parity fixture: the shipped copy if there is one, else the reference folder's."""
    shipped = FIXTURES / f"{name}{suffix}"
    return shipped if shipped.is_file() else VGGT_REFERENCE / f"{name}{suffix}"


def parity_params(*names: str) -> list:
    """pytest parameters, one per parity fixture; those not available here are skipped."""
    return [pytest.param(name, marks=pytest.mark.skipif(
        not parity_path(name, ".safetensors").is_file(),
        reason=f"{name} not found in {VGGT_REFERENCE} (set ATTRSPACE_VGGT_REFERENCE)")) for name in names]


needs_parity = pytest.mark.skipif(not parity_path("parity_tiny", ".safetensors").is_file(),
                                  reason=f"parity fixtures not found in {VGGT_REFERENCE} (set ATTRSPACE_VGGT_REFERENCE)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``blender`` render with bpy: without the [render] extra they are skipped, not failed."""
    import importlib.util
    if importlib.util.find_spec("bpy") is None:
        skip = pytest.mark.skip(reason="needs bpy: pip install -e '.[render]'")
        for item in items:
            if "blender" in item.keywords:
                item.add_marker(skip)


def official_1b_keys() -> dict[str, list[int]]:
    """Every key of the official VGGT-1B checkpoint and its shape."""
    import json
    keys = {}
    for line in (FIXTURES / "vggt1b_keys.tsv").read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        keys[key] = json.loads(shape)
    return keys


SMALL = RenderSettings(width=48, height=40, spp=4)  # non-square on purpose: catches axis mix-ups


def small_job(attribute: str, out: Path, partitions: int = 1, samples: int = 3, views: int = 3,
              jitter: float = 0.0, seed: int = 0) -> RenderJob:
    return RenderJob(attribute=attribute, partitions=partitions, samples=samples, views=views, out=out,
                     settings=SMALL, seed=seed, jitter=jitter, generator=GeneratorConfig.light())


def reprojection_errors(sample, i: int, j: int) -> np.ndarray:
    """Back-project view i's depth of a rendered sample, project it into view j and compare with view j's
    depth where the same instance is seen at all four neighbours (visible, away from edges): the relative
    depth errors |z_j / d_j - 1|, with d_j interpolated as inverse depth (affine on planes)."""
    s = sample
    H, W = s.depths.shape[1:]
    Ki, Ei, Kj, Ej = s.intrinsics[i], s.extrinsics[i], s.intrinsics[j], s.extrinsics[j]
    v, u = np.nonzero(s.depths[i] > 0)
    d = s.depths[i][v, u].astype(np.float64)
    p_cam = np.stack([(u - Ki[0, 2]) / Ki[0, 0] * d, (v - Ki[1, 2]) / Ki[1, 1] * d, d], -1)
    p_world = (p_cam - Ei[:, 3]) @ Ei[:, :3]
    q = p_world @ Ej[:, :3].T + Ej[:, 3]
    zj = q[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uj, vj = Kj[0, 0] * q[:, 0] / zj + Kj[0, 2], Kj[1, 1] * q[:, 1] / zj + Kj[1, 2]
    ok = (zj > 0) & (uj >= 0) & (vj >= 0) & (uj < W - 1) & (vj < H - 1)
    u0, v0 = np.floor(uj[ok]).astype(int), np.floor(vj[ok]).astype(int)
    fu, fv = uj[ok] - u0, vj[ok] - v0
    inst_i = s.masks[i][v[ok], u[ok]]
    corners = [(v0, u0), (v0, u0 + 1), (v0 + 1, u0), (v0 + 1, u0 + 1)]
    same = np.all([s.masks[j][c] == inst_i for c in corners], axis=0)
    inv = [1.0 / np.maximum(s.depths[j][c], 1e-9) for c in corners]
    inv_j = inv[0] * (1 - fu) * (1 - fv) + inv[1] * fu * (1 - fv) + inv[2] * (1 - fu) * fv + inv[3] * fu * fv
    return np.abs(zj[ok] * inv_j - 1.0)[same]


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=kwargs.pop("cwd", ROOT), **kwargs)



@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised ``tiny`` model (seed 0) saved as a checkpoint: the base of fine-tuning tests."""
    from model import VGGT, VGGTConfig, save_checkpoint
    from training.rng import seeded

    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    with seeded(0):
        save_checkpoint(VGGT(VGGTConfig.preset("tiny")), path)
    return path


def import_bpy():
    """``import bpy`` or skip; a clear failure where pymeshlab was imported into this process first (its
    bundled libembree4.so.4 shadows Blender's: "undefined symbol: rtcGetSceneTraversable")."""
    if "pymeshlab" in sys.modules and "bpy" not in sys.modules:
        pytest.fail("pymeshlab was imported into the test process before bpy; bpy cannot load now (use it in a "
                    "subprocess, as finetune.tasks.face_live does)")
    return pytest.importorskip("bpy")

@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """attribute -> RenderJob, rendered (jitter 0, so held-fixed attributes are exactly equal)."""
    import_bpy()
    from render.jobs import run
    out = tmp_path_factory.mktemp("synth")
    jobs = {}
    for attribute, partitions in (("lighting", 2), ("texture", 1), ("camera", 1), ("geometry", 1)):
        job = small_job(attribute, out, partitions=partitions)
        run(job, workers=1)
        jobs[attribute] = job
    return jobs


@pytest.fixture(scope="session")
def renderer(rendered):
    """The in-process Blender renderer that rendered the fixtures (bpy lives once per process)."""
    from render.jobs import _WORKER, _blender
    return _WORKER["renderers"][_blender][1]


@pytest.fixture(scope="session")
def test_meshes(tmp_path_factory) -> dict:
    """{format: path} of the small test meshes of ``synthetic.write_test_meshes`` (one folder, session-wide;
    tests that modify meshes copy them first)."""
    from synthetic import write_test_meshes
    return write_test_meshes(tmp_path_factory.mktemp("meshes"))
