"""finetune.bases: the PSV basis is each layer's top singular subspace, the random basis is orthonormal
and a function of its seed; both are ordinary basis files (read_basis, check_against_model, apply_basis)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from finetune import apply_basis, psv_basis, random_basis
from mining.basis import BasisError, check_against_model, read_basis
from mining.config import DEFAULT_TARGETS
from model import VGGT, VGGTConfig

QKV = "aggregator.frame_blocks.0.attn.qkv"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VGGT(VGGTConfig.preset("tiny")).eval()


def targets_of(model):
    import re
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.fullmatch(DEFAULT_TARGETS, n)]


def assert_orthonormal(q):
    q = q.double()
    assert float((q.T @ q - torch.eye(q.shape[1], dtype=torch.float64)).abs().max()) < 1e-5


def test_psv_is_the_top_singular_subspace(model, tmp_path):
    dim = 6
    summary = psv_basis(model, tmp_path / "psv.safetensors", dim, checkpoint_sha256="ab" * 32)
    names = targets_of(model)
    assert len(names) == 16 and summary.modules == names
    assert summary.trainable_params == len(names) * dim * dim
    basis = read_basis(tmp_path / "psv.safetensors")
    check_against_model(basis, model)
    assert basis.attributes == ["psv"] and basis.dims == {"psv": {n: dim for n in names}}
    assert basis.metadata["model_config"] == json.loads(json.dumps(model.config.to_dict()))
    assert basis.metadata["checkpoint_sha256"] == "ab" * 32
    for name in names:
        W = model.get_submodule(name).weight.detach().double()
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        A, B = basis.A[name].double(), basis.B[name].double()
        assert A.shape == (W.shape[0], dim) and B.shape == (W.shape[1], dim)
        assert_orthonormal(A)
        assert_orthonormal(B)
        # same subspaces as the reference SVD's top-dim vectors (projectors agree)
        assert torch.allclose(A @ A.T, U[:, :dim] @ U[:, :dim].T, atol=1e-5)
        assert torch.allclose(B @ B.T, Vh[:dim].T @ Vh[:dim], atol=1e-5)
        # and paired as singular vectors: Aᵀ W B is the diagonal of the top singular values
        assert torch.allclose(A.T @ W @ B, torch.diag(S[:dim]), atol=1e-5)


def test_psv_basis_applies_and_records_the_checkpoint(model, tmp_path):
    path = tmp_path / "qkv.safetensors"
    summary = psv_basis(model, path, 4, targets=r"aggregator\.frame_blocks\.0\.attn\.qkv", checkpoint_sha256="ab" * 32)
    assert summary.modules == [QKV]
    fresh = VGGT(VGGTConfig.preset("tiny"))
    fresh.load_state_dict(model.state_dict())
    with pytest.raises(BasisError, match="another checkpoint"):
        apply_basis(fresh, path, checkpoint_sha256="cd" * 32)
    assert apply_basis(fresh, path, checkpoint_sha256="ab" * 32) == 4 * 4


@pytest.mark.parametrize("make", [psv_basis, random_basis])
def test_dim_is_checked(model, tmp_path, make):
    # qkv is [192, 64]: 64 directions at most on its input side
    make(model, tmp_path / "ok.safetensors", 64, targets=r".*attn\.qkv")
    with pytest.raises(ValueError, match=r"dim 65 is larger than min\(out, in\) = 64 of aggregator\.frame_blocks\.0\.attn\.qkv"):
        make(model, tmp_path / "big.safetensors", 65, targets=r".*attn\.qkv")
    with pytest.raises(ValueError, match="positive integer"):
        make(model, tmp_path / "zero.safetensors", 0)
    with pytest.raises(ValueError, match="match no nn.Linear"):
        make(model, tmp_path / "none.safetensors", 2, targets=r"nothing\.here")
    assert not (tmp_path / "big.safetensors").exists()


def test_random_basis_is_orthonormal_and_a_function_of_its_seed(model, tmp_path):
    a = read_basis(random_basis(model, tmp_path / "a.safetensors", 5, seed=3).path)
    b = read_basis(random_basis(model, tmp_path / "b.safetensors", 5, seed=3).path)
    c = read_basis(random_basis(model, tmp_path / "c.safetensors", 5, seed=4).path)
    assert a.attributes == ["random"] and a.dims == {"random": {n: 5 for n in targets_of(model)}}
    assert a.metadata["model_config"] == json.loads(json.dumps(model.config.to_dict()))
    for name in a.modules:
        assert torch.equal(a.A[name], b.A[name]) and torch.equal(a.B[name], b.B[name])
        for side in ("A", "B"):
            qa, qc = getattr(a, side)[name], getattr(c, side)[name]
            assert_orthonormal(qa)
            # another seed: another subspace, not the same one in another basis
            assert np.max(scipy.linalg.subspace_angles(qa.double().numpy(), qc.double().numpy())) > 0.3
    # layers of one shape draw their own subspaces, not one shared draw
    other = "aggregator.global_blocks.1.attn.qkv"
    assert np.max(scipy.linalg.subspace_angles(a.A[QKV].double().numpy(), a.A[other].double().numpy())) > 0.3
    # a layer's random basis does not depend on which other layers are targeted
    one = read_basis(random_basis(model, tmp_path / "one.safetensors", 5, targets=QKV.replace(".", r"\."), seed=3).path)
    assert torch.equal(one.A[QKV], a.A[QKV]) and torch.equal(one.B[QKV], a.B[QKV])
    # and random is not principal: far from the PSV subspace of the same layer
    psv = read_basis(psv_basis(model, tmp_path / "psv.safetensors", 5).path)
    assert np.max(scipy.linalg.subspace_angles(psv.A[QKV].double().numpy(), a.A[QKV].double().numpy())) > 0.3


def test_model_without_config_records_none(tmp_path):
    layer = torch.nn.Sequential(torch.nn.Linear(8, 6))
    psv_basis(layer, tmp_path / "p.safetensors", 3, targets="0")
    basis = read_basis(tmp_path / "p.safetensors")
    assert "model_config" not in basis.metadata and "checkpoint_sha256" not in basis.metadata
    assert basis.A["0"].shape == (6, 3) and basis.B["0"].shape == (8, 3)
