"""mining.basis: write → read round trip (orthonormal, same spans, metadata), dependent directions dropped,
attribute subsets, every malformed-file error, the model shape check, and atomic writes."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.numpy import save_file

import mining.basis as basis_mod
from mining.basis import FORMAT, BasisError, check_against_model, file_sha256, read_basis, write_basis

# shapes of the tiny VGGT's frame block 0 (out, in), so the same subspaces fit the model check
SHAPES = {"aggregator.frame_blocks.0.attn.qkv": (192, 64), "aggregator.frame_blocks.0.mlp.fc1": (256, 64)}
QKV = "aggregator.frame_blocks.0.attn.qkv"
FC1 = "aggregator.frame_blocks.0.mlp.fc1"


def random_subspaces(seed=0, dims=None, torch_for=()):
    """{attribute: {module: (A, B)}} with random factors; attributes in ``torch_for`` as torch tensors."""
    rng = np.random.default_rng(seed)
    dims = dims or {"depth": 3, "normal": 2, "albedo": 4}
    out = {}
    for attr, d in dims.items():
        out[attr] = {}
        for module, (o, i) in SHAPES.items():
            A, B = rng.standard_normal((o, d)), rng.standard_normal((i, d))
            out[attr][module] = (torch.from_numpy(A), torch.from_numpy(B)) if attr in torch_for else (A, B)
    return out


def assert_orthonormal(q, tol=1e-5):
    q = q.double().numpy()
    assert np.abs(q.T @ q - np.eye(q.shape[1])).max() < tol


def assert_same_span(q, S):
    S = np.asarray(S, dtype=np.float64)
    assert q.shape[1] == np.linalg.matrix_rank(S)
    assert np.max(scipy.linalg.subspace_angles(q.double().numpy(), S)) < 1e-5


def test_round_trip(tmp_path):
    subspaces = random_subspaces(torch_for=("normal",))
    members = {"depth": [{"adapter": tmp_path / "a0.safetensors", "weights": {QKV: 0.9}}]}
    out = tmp_path / "basis.safetensors"
    summary = write_basis(out, subspaces, attributes=["depth", "normal"], model_config={"embed_dim": 64},
                          checkpoint_sha256="ab" * 32, members=members)
    assert summary.modules == [QKV, FC1] and summary.skipped == []
    assert summary.directions_A == summary.directions_B == 2 * 5
    assert summary.dropped == {QKV: (0, 0), FC1: (0, 0)}
    assert summary.trainable_params == 2 * 5 * 5

    b = read_basis(out)
    assert b.path == out and b.attributes == ["depth", "normal"] and b.modules == [QKV, FC1]
    assert b.dims == {"depth": {QKV: 3, FC1: 3}, "normal": {QKV: 2, FC1: 2}}
    assert b.metadata["format"] == FORMAT
    assert b.metadata["model_config"] == {"embed_dim": 64}
    assert b.metadata["checkpoint_sha256"] == "ab" * 32
    assert b.metadata["members"]["depth"][0]["adapter"] == str(tmp_path / "a0.safetensors")
    assert b.metadata["kept"] == {QKV: [5, 5], FC1: [5, 5]}
    assert b.metadata["dropped"] == {QKV: [0, 0], FC1: [0, 0]}
    for module, (o, i) in SHAPES.items():
        assert b.A[module].dtype == torch.float32 and b.A[module].shape == (o, 5) and b.B[module].shape == (i, 5)
        assert_orthonormal(b.A[module])
        assert_orthonormal(b.B[module])
        A_cat = np.concatenate([np.asarray(subspaces[a][module][0]) for a in ("depth", "normal")], 1)
        B_cat = np.concatenate([np.asarray(subspaces[a][module][1]) for a in ("depth", "normal")], 1)
        assert_same_span(b.A[module], A_cat)
        assert_same_span(b.B[module], B_cat)
        # Gram–Schmidt in order: the first attribute's span is the first d′ columns
        first = np.asarray(subspaces["depth"][module][0])
        assert np.max(scipy.linalg.subspace_angles(b.A[module][:, :3].double().numpy(), first)) < 1e-5


def test_optional_metadata_absent(tmp_path):
    write_basis(tmp_path / "b.safetensors", random_subspaces(), attributes=["depth"])
    b = read_basis(tmp_path / "b.safetensors")
    assert "model_config" not in b.metadata and "checkpoint_sha256" not in b.metadata
    assert "members" not in b.metadata


def test_repeated_direction_is_dropped_on_that_side(tmp_path):
    subspaces = random_subspaces()
    A, B = subspaces["normal"][QKV]
    A = A.copy()
    A[:, 1] = 2.5 * subspaces["depth"][QKV][0][:, 0] - subspaces["depth"][QKV][0][:, 2]  # in depth's span
    subspaces["normal"][QKV] = (A, B)
    summary = write_basis(tmp_path / "b.safetensors", subspaces, attributes=["depth", "normal"])
    assert summary.dropped == {QKV: (1, 0), FC1: (0, 0)}
    b = read_basis(tmp_path / "b.safetensors")
    assert b.A[QKV].shape == (192, 4) and b.B[QKV].shape == (64, 5)       # dA != dB here
    assert b.metadata["kept"][QKV] == [4, 5] and b.metadata["dropped"][QKV] == [1, 0]
    assert summary.trainable_params == 4 * 5 + 5 * 5
    assert_orthonormal(b.A[QKV])
    assert_same_span(b.A[QKV], np.concatenate([subspaces["depth"][QKV][0], A], 1))


def test_attribute_subsets_and_coverage(tmp_path):
    subspaces = random_subspaces()
    del subspaces["albedo"][FC1]               # albedo covers only qkv
    s1 = write_basis(tmp_path / "1.safetensors", subspaces, attributes=["depth"])
    s2 = write_basis(tmp_path / "2.safetensors", subspaces, attributes=["albedo", "depth"])
    assert s1.modules == [QKV, FC1] and s1.directions_A == 6
    assert s2.modules == [QKV] and s2.skipped == [FC1] and s2.directions_A == 7
    b1, b2 = read_basis(tmp_path / "1.safetensors"), read_basis(tmp_path / "2.safetensors")
    assert b1.dims == {"depth": {QKV: 3, FC1: 3}}
    assert b2.dims == {"albedo": {QKV: 4}, "depth": {QKV: 3}} and b2.attributes == ["albedo", "depth"]
    assert b2.A[QKV].shape == (192, 7)
    # attribute order decides which directions come first
    albedo = subspaces["albedo"][QKV][0]
    assert np.max(scipy.linalg.subspace_angles(b2.A[QKV][:, :4].double().numpy(), albedo)) < 1e-5


@pytest.mark.parametrize("attributes, match", [([], "non-empty"), (["depth", "depth"], "repeats"),
                                               (["texture"], "texture")])
def test_write_rejects_bad_attributes(tmp_path, attributes, match):
    with pytest.raises(ValueError, match=match):
        write_basis(tmp_path / "b.safetensors", random_subspaces(), attributes=attributes)
    assert not (tmp_path / "b.safetensors").exists()


def test_write_rejects_mismatched_shapes(tmp_path):
    subspaces = random_subspaces()
    subspaces["normal"][QKV] = (np.ones((100, 2)), np.ones((64, 2)))
    with pytest.raises(ValueError, match="normal/.*qkv"):
        write_basis(tmp_path / "b.safetensors", subspaces, attributes=["depth", "normal"])


# -- malformed files ----------------------------------------------------------------------------

def orthonormal(n, d, seed=0):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((n, d)))[0].astype(np.float32)


def good_meta(**over):
    meta = {"format": FORMAT, "attributes": json.dumps(["depth"]), "dims": json.dumps({"depth": {"m": 2}})}
    meta.update(over)
    return {k: v for k, v in meta.items() if v is not None}


def test_minimal_file_loads(tmp_path):
    path = tmp_path / "min.safetensors"
    save_file({"m.A": orthonormal(6, 2), "m.B": orthonormal(4, 2)}, str(path), metadata=good_meta())
    b = read_basis(path)
    assert b.modules == ["m"] and b.dims == {"depth": {"m": 2}}


def test_missing_file(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(BasisError, match=rf"{re.escape(str(path))}: no such basis file"):
        read_basis(path)


def test_not_safetensors(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(BasisError, match=rf"{re.escape(str(path))}: not a readable safetensors file") as info:
        read_basis(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("meta, match", [
    (good_meta(format=None), "no format"),
    (good_meta(format="attrspace-basis/0"), "'attrspace-basis/0'"),
    (good_meta(dims=None), "lacks dims"),
    (good_meta(attributes="[depth"), "'attributes' is not valid JSON"),
])
def test_bad_metadata(tmp_path, meta, match):
    path = tmp_path / "bad.safetensors"
    save_file({"m.A": orthonormal(6, 2), "m.B": orthonormal(4, 2)}, str(path), metadata=meta)
    with pytest.raises(BasisError, match=rf"{re.escape(str(path))}: .*{match}"):
        read_basis(path)


@pytest.mark.parametrize("tensors, match", [
    ({"m.A": orthonormal(6, 2)}, "module m has no B factor"),
    ({"m.B": orthonormal(4, 2)}, "module m has no A factor"),
    ({"m.A": orthonormal(6, 2), "m.B": np.zeros((4, 2, 1), np.float32)}, r"m\.B is 3-D"),
    ({"m.A": orthonormal(6, 2), "m.B": 2 * orthonormal(4, 2)}, r"m\.B columns are not orthonormal"),
    ({"m.A": np.ones((6, 2), np.float32), "m.B": orthonormal(4, 2)}, r"m\.A columns are not orthonormal"),
])
def test_bad_tensors(tmp_path, tensors, match):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata=good_meta())
    with pytest.raises(BasisError, match=rf"{re.escape(str(path))}: {match}"):
        read_basis(path)


# -- the model check ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    from model import VGGT, VGGTConfig
    return VGGT(VGGTConfig.preset("tiny"))


def test_check_against_model(tmp_path, tiny_model):
    path = tmp_path / "b.safetensors"
    write_basis(path, random_subspaces(), attributes=["depth", "normal"])
    check_against_model(read_basis(path), tiny_model)        # fits: no error

    wrong = random_subspaces()
    wrong["depth"][QKV] = (wrong["depth"][QKV][0], np.ones((32, 3)))   # in_features is 64
    write_basis(path, wrong, attributes=["depth"])
    with pytest.raises(BasisError, match=rf"{re.escape(str(path))}: module {QKV}: basis has A rows 192, B rows 32"):
        check_against_model(read_basis(path), tiny_model)

    renamed = {"depth": {"aggregator.frame_blocks.99.attn.qkv": random_subspaces()["depth"][QKV]}}
    write_basis(path, renamed, attributes=["depth"])
    with pytest.raises(BasisError, match=rf"{re.escape(str(path))}: module aggregator.frame_blocks.99.attn.qkv is not in"):
        check_against_model(read_basis(path), tiny_model)

    norm = {"depth": {"aggregator.frame_blocks.0.norm1": (np.ones((64, 1)), np.ones((64, 1)))}}
    write_basis(path, norm, attributes=["depth"])
    with pytest.raises(BasisError, match="LayerNorm, not an nn.Linear"):
        check_against_model(read_basis(path), tiny_model)


# -- atomic writes and hashing ------------------------------------------------------------------

def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)          # a partial file at the temporary path
        raise OSError("disk full")

    monkeypatch.setattr(basis_mod, "save_file", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_basis(tmp_path / "b.safetensors", random_subspaces(), attributes=["depth"])
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "b.safetensors"
    write_basis(path, random_subspaces(), attributes=["depth"])
    before = file_sha256(path)
    monkeypatch.setattr(basis_mod, "save_file", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        write_basis(path, random_subspaces(seed=1), attributes=["normal"])
    assert file_sha256(path) == before and [p.name for p in tmp_path.iterdir()] == ["b.safetensors"]


def test_file_sha256(tmp_path):
    import hashlib
    data = np.random.default_rng(0).bytes(3 << 20)        # spans several read blocks
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
