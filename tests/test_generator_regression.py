"""The generator's output, pinned: a grid of (attribute, partition, sample, seed, config, jitter) must
give exactly the specs the generator gave when the fixture was written, so a refactoring of the
generator cannot change a rendered data set unnoticed (the order of random draws is part of the output).

Fixtures: ``tests/fixtures/generator_regression.json`` (sha256 of ``spec.to_json()`` per grid key) and
``generator_regression_specs.json.gz`` (the full JSON of a few specs, so that a failure names the first
field that differs). They were written with the generator of ``GENERATOR_VERSION`` attrspace-synth-2,
before its parameters moved into per-attribute configs. Rewrite them (``python
tests/test_generator_regression.py --write``) only for an intended change of output, together with a
``GENERATOR_VERSION`` bump in render/spec.py.

Hashes are of the JSON with every float rounded to ``DIGITS`` significant digits: numpy's sin, cos, exp
and friends differ in the last bit between CPUs (SIMD kernels with and without AVX-512), which moved 59
of the 165 specs by one ulp on an AVX2 machine, while a change in the generator's draws moves values in
their leading digits. The full specs stored (from the machine that first wrote the fixture) must hash
the same.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from render import generator as G
from render.spec import RENDER_ATTRIBUTES

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HASHES = FIXTURES / "generator_regression.json"
FULL = FIXTURES / "generator_regression_specs.json.gz"
VIEWS = 4
TEXTURES = "<TEXTURES>"  # stands for the (temporary) texture folder's path in the stored JSON
# Specs stored in full: one per attribute, both configs, both jitters, and user textures.
STORED = ("seed0/texture/p3/s1/default/j1.0", "seed0/geometry/p0/s5/default/j0.3",
          "seed0/camera/p3/s0/light/j1.0", "seed0/lighting/p0/s1/default/j1.0",
          "seed0/mixed/p3/s5/default/j1.0", "textures/texture/p0/s1/light/j1.0")


def _with_textures(cfg, folder: str):
    if hasattr(cfg, "override"):
        return cfg.override({"texture": {"texture_dir": folder}})
    return dataclasses.replace(cfg, texture_dir=folder)  # the flat config the fixture was written with


def _texture_folder(root: Path) -> str:
    """Files are listed, not read, when a spec is drawn: empty ones will do."""
    for name in ("a.png", "b.jpg", "c.PNG", "notes.txt"):
        (root / name).write_bytes(b"")
    return str(root.resolve())


def grid(folder: str):
    """(key, spec JSON) for every point of the grid; ``folder`` holds the texture images."""
    cfgs = {"default": G.GeneratorConfig(), "light": G.GeneratorConfig.light()}
    for attr in RENDER_ATTRIBUTES:
        for p in (0, 3):
            for name, cfg in cfgs.items():
                yield f"base/{attr}/p{p}/{name}", G.partition_base(attr, p, 0, VIEWS, cfg).to_json()
                for s in (0, 1, 5):
                    for j in (1.0, 0.3):
                        yield (f"seed0/{attr}/p{p}/s{s}/{name}/j{j}",
                               G.sample_spec(attr, p, s, 0, VIEWS, cfg, j).to_json())
        for name, cfg in cfgs.items():
            for s in (0, 1):
                yield f"seed7/{attr}/p1/s{s}/{name}/j1.0", G.sample_spec(attr, 1, s, 7, VIEWS, cfg, 1.0).to_json()
        cfg = _with_textures(cfgs["light"], folder)
        text = G.sample_spec(attr, 0, 1, 0, VIEWS, cfg, 1.0).to_json().replace(folder, TEXTURES)
        yield f"textures/{attr}/p0/s1/light/j1.0", text


DIGITS = 9


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.{DIGITS}g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _sha(text: str) -> str:
    """sha256 of the spec JSON with floats rounded to DIGITS significant digits (see the docstring)."""
    canonical = json.dumps(_rounded(json.loads(text)), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def first_difference(a, b, path: str = "") -> str | None:
    """Dotted path and both values of the first leaf where two JSON values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path}{key}: {'missing' if key not in a else 'present'} in the fixture, " \
                       f"{'missing' if key not in b else 'present'} now"
            diff = first_difference(a[key], b[key], f"{path}{key}.")
            if diff:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            diff = first_difference(x, y, f"{path.rstrip('.')}[{i}].")
            if diff:
                return diff
        if len(a) != len(b):
            return f"{path.rstrip('.')}: length {len(a)} in the fixture, {len(b)} now"
        return None
    return None if a == b else f"{path.rstrip('.')}: {a!r} in the fixture, {b!r} now"


def test_generator_output_is_unchanged(tmp_path):
    expected = json.loads(HASHES.read_text())
    full = json.loads(gzip.decompress(FULL.read_bytes()))
    got = dict(grid(_texture_folder(tmp_path)))
    assert sorted(got) == sorted(expected), "the grid changed; the fixture no longer covers it"
    wrong = [k for k in expected if _sha(got[k]) != expected[k]]
    details = [f"{k}: {first_difference(json.loads(full[k]), json.loads(got[k]))}" for k in wrong if k in full]
    assert not wrong, (f"{len(wrong)} of {len(expected)} specs differ from the fixture, e.g. {wrong[:5]}; "
                       + ("; ".join(details) if details else "none of them is stored in full"))


def test_stored_specs_match_their_hashes():
    """The full specs were written on another CPU than the hashes may be: both must agree."""
    expected = json.loads(HASHES.read_text())
    full = json.loads(gzip.decompress(FULL.read_bytes()))
    assert sorted(full) == sorted(STORED)
    assert all(_sha(full[k]) == expected[k] for k in STORED)


def test_rounding_keeps_types_and_leading_digits():
    text = json.dumps({"a": [0.6974112246832121, 2, "x"], "b": {"c": 1.0, "d": True}})
    assert _sha(text) == _sha(text.replace("0.6974112246832121", "0.697411224683212"))
    assert _sha(text) != _sha(text.replace("0.6974112246832121", "0.6974113246832121"))
    assert _rounded(json.loads(text)) == {"a": [0.697411225, 2, "x"], "b": {"c": 1.0, "d": True}}


def test_first_difference_names_the_field():
    a = {"camera": {"views": [{"fov_deg": 50.0}, {"fov_deg": 60.0}]}, "x": 1}
    b = {"camera": {"views": [{"fov_deg": 50.0}, {"fov_deg": 61.0}]}, "x": 1}
    assert first_difference(a, b) == "camera.views[1].fov_deg: 60.0 in the fixture, 61.0 now"
    assert first_difference(a, a) is None


def write_fixtures() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        got = dict(grid(_texture_folder(Path(tmp))))
    HASHES.write_text(json.dumps({k: _sha(v) for k, v in got.items()}, indent=0, sort_keys=True) + "\n")
    if "--hashes-only" not in sys.argv:
        FULL.write_bytes(gzip.compress(json.dumps({k: got[k] for k in STORED}, sort_keys=True).encode(), mtime=0))
    print(f"wrote {len(got)} hashes to {HASHES} and {len(STORED)} specs to {FULL} (generator {G.__file__})")


if __name__ == "__main__":
    if sys.argv[1:] not in (["--write"], ["--write", "--hashes-only"]):
        sys.exit("usage: python tests/test_generator_regression.py --write [--hashes-only]  (only for an intended "
                 "change; --hashes-only: a new hash rule, the stored specs kept)")
    write_fixtures()
