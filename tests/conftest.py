"""Shared fixtures: small partitions rendered once per test session (tens of pixels, few samples)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from render.generator import GeneratorConfig  # noqa: E402
from render.jobs import RenderJob  # noqa: E402
from render.spec import RenderSettings  # noqa: E402

# Small reference files, shipped: the official VGGT-1B keys and shapes and the parameter counts.
FIXTURES = ROOT / "tests" / "fixtures"
# The parity fixtures (70 MB of official-code outputs) are not shipped: point ATTRSPACE_VGGT_REFERENCE at
# the folder holding parity_tiny*.{json,safetensors}; tests that need them skip when it is absent.
VGGT_REFERENCE = Path(os.environ.get("ATTRSPACE_VGGT_REFERENCE", ROOT.parent / "shared" / "reference" / "vggt"))
needs_parity = pytest.mark.skipif(not (VGGT_REFERENCE / "parity_tiny.safetensors").is_file(),
                                  reason=f"parity fixtures not found in {VGGT_REFERENCE} (set ATTRSPACE_VGGT_REFERENCE)")



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


def render_mixed(out: Path, partitions: int, samples: int, views: int, hw: tuple[int, int]) -> RenderJob:
    """Render tiny `mixed` partitions (2 spp, light generator) for the model tests; skips without bpy."""
    pytest.importorskip("bpy")
    from render.jobs import run
    job = RenderJob(attribute="mixed", partitions=partitions, samples=samples, views=views, out=out,
                    settings=RenderSettings(width=hw[1], height=hw[0], spp=2), generator=GeneratorConfig.light())
    run(job, workers=1)
    return job


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=kwargs.pop("cwd", ROOT), **kwargs)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """attribute -> RenderJob, rendered (jitter 0, so held-fixed attributes are exactly equal)."""
    pytest.importorskip("bpy")
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
    from render.jobs import _WORKER
    return _WORKER["renderer"]
