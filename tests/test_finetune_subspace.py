"""finetune.adapters.subspace: the forward is W x + A M Bᵀ x, M starts at zero, only M trains, dA ≠ dB,
every refusal of a basis that does not fit, M files round trip and refuse another basis, merging gives the
wrapped outputs with the plain keys, and peft itself loads the export with the same outputs."""
from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from finetune import (SubspaceLinear, apply_basis, export_peft, load_middle, merge_basis, middle_state,
                      save_middle, wrapped_layers)
from finetune.adapters.subspace import MIDDLE_FORMAT
from mining.basis import BasisError, file_sha256, read_basis, write_basis
from model import VGGT, VGGTConfig

QKV = "aggregator.frame_blocks.0.attn.qkv"
FC2 = "aggregator.global_blocks.1.mlp.fc2"
PROJ = "aggregator.frame_blocks.1.attn.proj"
# (dA, dB) per module: unequal on purpose, and different per module so peft's rank_pattern matters
DIMS = {QKV: (3, 5), FC2: (4, 2), PROJ: (2, 2)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model is 100× slower with two threads fighting over shared cores; restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(seed=0):
    torch.manual_seed(seed)
    return VGGT(VGGTConfig.preset("tiny")).eval()


def images(seed=1):
    return torch.rand(1, 2, 3, 28, 28, generator=torch.Generator().manual_seed(seed))


def write_uneven_basis(path, model, dims=DIMS, seed=0, **meta):
    """A basis with the given (dA, dB) per module: attribute "x" brings min(dA, dB) directions on both
    sides; attribute "y" brings |dA − dB| more on one side and copies of x's on the other, which
    write_basis drops as dependent."""
    rng = np.random.default_rng(seed)
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules() if n in dims}
    x, y = {}, {}
    for module, (dA, dB) in dims.items():
        out, inp = shapes[module]
        d, extra = min(dA, dB), abs(dA - dB)
        A, B = rng.standard_normal((out, d)), rng.standard_normal((inp, d))
        x[module] = (A, B)
        if extra:
            new_a, new_b = rng.standard_normal((out, extra)), rng.standard_normal((inp, extra))
            y[module] = (new_a, B[:, :extra]) if dA > dB else (A[:, :extra], new_b)
        else:
            y[module] = (A[:, :1], B[:, :1])
    write_basis(path, {"x": x, "y": y}, attributes=["x", "y"], **meta)
    basis = read_basis(path)
    assert {m: (basis.A[m].shape[1], basis.B[m].shape[1]) for m in dims} == dims
    return path


def randomise_middle(model, seed=2, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in wrapped_layers(model).values():
            layer.M.copy_(torch.randn(layer.M.shape, generator=g) * scale)


def outputs(model, x):
    with torch.no_grad():
        out = model(x)
    return {k: v for k, v in out.items() if torch.is_tensor(v) and k != "images"}


def assert_outputs_close(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-5), f"{k}: max diff {(a[k] - b[k]).abs().max():.2e}"


def max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ---- the layer ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_forward_is_base_plus_dense_update(bias):
    torch.manual_seed(0)
    base = nn.Linear(7, 5, bias=bias).double()
    A, B = torch.linalg.qr(torch.randn(5, 3, dtype=torch.float64))[0], torch.linalg.qr(torch.randn(7, 2, dtype=torch.float64))[0]
    layer = SubspaceLinear(base, A, B)
    assert layer.weight is base.weight and layer.bias is base.bias          # taken over, not copied
    assert layer.M.shape == (3, 2) and torch.equal(layer.M, torch.zeros(3, 2, dtype=torch.float64))
    with torch.no_grad():
        layer.M.copy_(torch.randn(3, 2))
    x = torch.randn(4, 6, 7, dtype=torch.float64)                           # batch dims kept
    dense = F.linear(x, base.weight + A @ layer.M @ B.T, base.bias)
    assert torch.allclose(layer(x), dense, atol=1e-12)
    assert torch.allclose(layer.delta_weight(), A @ layer.M.detach() @ B.T, atol=1e-12)
    # A and B are buffers, not parameters or state: the layer's state is the Linear's plus M
    names = ["weight", "bias", "M"] if bias else ["weight", "M"]
    assert [n for n, _ in layer.named_parameters()] == names and list(layer.state_dict()) == names
    assert {n for n, _ in layer.named_buffers()} == {"A", "B"}


def test_layer_rejects_factors_of_another_shape():
    with pytest.raises(ValueError, match="do not fit"):
        SubspaceLinear(nn.Linear(7, 5), torch.zeros(7, 2), torch.zeros(5, 2))


def test_layer_follows_dtype_and_autocast():
    torch.manual_seed(0)
    layer = SubspaceLinear(nn.Linear(16, 8), torch.linalg.qr(torch.randn(8, 3))[0], torch.linalg.qr(torch.randn(16, 4))[0])
    with torch.no_grad():
        layer.M.normal_()
    x = torch.randn(5, 16)
    with torch.no_grad():
        ref = layer(x)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(x)
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), ref, atol=0.05 * float(ref.abs().max()))
    layer.to(torch.float64)                                                  # A, B move with .to()
    assert {layer.A.dtype, layer.B.dtype, layer.M.dtype, layer.weight.dtype} == {torch.float64}
    with torch.no_grad():
        assert torch.allclose(layer(x.double()).float(), ref, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_layer_on_cuda_under_bf16_autocast():
    torch.manual_seed(0)
    layer = SubspaceLinear(nn.Linear(16, 8), torch.linalg.qr(torch.randn(8, 3))[0], torch.linalg.qr(torch.randn(16, 4))[0])
    with torch.no_grad():
        layer.M.normal_()
    x = torch.randn(5, 16)
    with torch.no_grad():
        ref = layer(x)
    layer.cuda()
    assert layer.A.is_cuda and layer.B.is_cuda and layer.M.is_cuda
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer(x.cuda())
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert layer.M.grad is not None and layer.M.grad.dtype == torch.float32
    assert torch.allclose(y.float().cpu(), ref, atol=0.05 * float(ref.abs().max()))


# ---- applying a basis to VGGT ---------------------------------------------------------------------------

def test_zero_middle_gives_the_base_model_exactly(tmp_path):
    model, x = tiny(), images()
    before = outputs(model, x)
    keys = list(model.state_dict())
    apply_basis(model, write_uneven_basis(tmp_path / "b.safetensors", model))
    assert all(torch.equal(before[k], v) for k, v in outputs(model, x).items())
    # the base weights keep their keys and positions; only the M's are added
    assert [k for k in model.state_dict() if not k.endswith(".M")] == keys
    assert sorted(k for k in model.state_dict() if k.endswith(".M")) == sorted(f"{m}.M" for m in DIMS)


def test_only_middle_trains(tmp_path):
    model, x = tiny(), images()
    n = apply_basis(model, write_uneven_basis(tmp_path / "b.safetensors", model))
    assert n == sum(a * b for a, b in DIMS.values()) == 3 * 5 + 4 * 2 + 2 * 2
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert sorted(trainable) == sorted(f"{m}.M" for m in DIMS)
    assert sum(p.numel() for p in trainable.values()) == n
    for name, layer in wrapped_layers(model).items():
        assert [p for p in layer.parameters() if p.requires_grad] == [layer.M]
        assert layer.M.shape == DIMS[name]
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(".M")}

    model.train()
    opt = torch.optim.Adam(trainable.values(), lr=1e-2)
    out = model(x)
    (out["depth"].mean() + out["world_points"].pow(2).mean() + out["pose_enc"].pow(2).mean()).backward()
    for name, p in trainable.items():
        assert p.grad is not None and float(p.grad.abs().max()) > 0, f"no gradient reaches {name}"
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert all(float(p.detach().abs().max()) > 0 for p in trainable.values())   # every M moved off zero


def test_apply_accepts_a_read_basis_and_refuses_twice(tmp_path):
    model = tiny()
    path = write_uneven_basis(tmp_path / "b.safetensors", model)
    assert apply_basis(model, read_basis(path)) == 27
    with pytest.raises(BasisError, match="already has a basis applied") as e:
        apply_basis(model, path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def _basis_with_shapes(path, shapes):
    """A one-attribute basis with random factors for {module: (out, in)}."""
    rng = np.random.default_rng(0)
    write_basis(path, {"x": {m: (rng.standard_normal((o, 2)), rng.standard_normal((i, 2))) for m, (o, i) in shapes.items()}},
                attributes=["x"])
    return path


@pytest.mark.parametrize("case, match", [
    ("shape", f"module {QKV}: basis has A rows 64"),
    ("unknown", "module aggregator.frame_blocks.7.attn.qkv is not in the model"),
    ("config", "mined on a model with dpt_features=24; this model has dpt_features=16"),
    ("checkpoint", "basis was mined on another checkpoint"),
])
def test_basis_that_does_not_fit_is_refused_in_one_line(tmp_path, case, match):
    model = tiny()
    path = tmp_path / f"{case}.safetensors"
    kwargs = {}
    if case == "shape":
        _basis_with_shapes(path, {QKV: (64, 64)})
    elif case == "unknown":
        _basis_with_shapes(path, {"aggregator.frame_blocks.7.attn.qkv": (192, 64)})
    elif case == "config":        # same aggregator shapes, another head: the config check must catch it
        write_uneven_basis(path, model, model_config=dataclasses.replace(model.config, dpt_features=24))
    else:
        write_uneven_basis(path, model, checkpoint_sha256="ab" * 32)
        kwargs["checkpoint_sha256"] = "cd" * 32
    with pytest.raises(BasisError, match=match) as e:
        apply_basis(model, path, **kwargs)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(path))
    assert not wrapped_layers(model) and all(p.requires_grad for p in model.parameters())   # nothing changed


def test_matching_config_and_checkpoint_are_accepted(tmp_path):
    model = tiny()
    # fields that change no shape (loop counts, chunking) may differ; the sha check is case-blind hex
    config = dataclasses.replace(model.config, camera_iterations=2, dpt_frames_chunk=4)
    path = write_uneven_basis(tmp_path / "b.safetensors", model, model_config=config, checkpoint_sha256="ab" * 32)
    assert apply_basis(model, path, checkpoint_sha256="AB" * 32) == 27


# ---- the M file -----------------------------------------------------------------------------------------

def test_middle_round_trip(tmp_path):
    model, x = tiny(), images()
    basis = write_uneven_basis(tmp_path / "b.safetensors", model)
    apply_basis(model, basis)
    randomise_middle(model)
    want = outputs(model, x)
    saved = save_middle(model, tmp_path / "m.safetensors", basis)

    from safetensors import safe_open
    with safe_open(str(saved), "pt") as f:
        meta, keys = f.metadata(), sorted(f.keys())
    assert meta["format"] == MIDDLE_FORMAT and meta["basis_sha256"] == file_sha256(basis)
    assert json.loads(meta["modules"]) == list(wrapped_layers(model))
    assert keys == sorted(f"{m}.M" for m in DIMS)                         # only the M's, nothing of the model
    state = middle_state(model)
    assert list(state) == [f"{m}.M" for m in wrapped_layers(model)]

    fresh = tiny()
    apply_basis(fresh, basis)
    load_middle(fresh, saved, basis_path=basis)
    for k, v in middle_state(fresh).items():
        assert torch.equal(v, state[k])
    assert all(torch.equal(want[k], v) for k, v in outputs(fresh, x).items())


def test_middle_refuses_another_basis(tmp_path):
    model = tiny()
    basis = write_uneven_basis(tmp_path / "b.safetensors", model)
    other = write_uneven_basis(tmp_path / "other.safetensors", model, seed=1)     # same shapes, other directions
    apply_basis(model, basis)
    saved = save_middle(model, tmp_path / "m.safetensors", basis)
    with pytest.raises(BasisError, match="not the basis applied"):
        save_middle(model, tmp_path / "m2.safetensors", other)
    with pytest.raises(BasisError, match=f"another basis than {other}"):
        load_middle(model, saved, basis_path=other)
    fresh = tiny()
    apply_basis(fresh, other)
    with pytest.raises(BasisError, match="trained on another basis") as e:
        load_middle(fresh, saved)
    assert "\n" not in str(e.value) and str(saved) in str(e.value)
    with pytest.raises(BasisError, match="no basis applied"):
        load_middle(tiny(), saved)


@pytest.mark.parametrize("change, match", [("drop", f"lacks {QKV}.M"), ("shape", f"{QKV}.M is \\[5, 3\\]"),
                                           ("extra", "has aggregator.x.M, which is not a wrapped layer"),
                                           ("format", "not a middle-matrix file")])
def test_middle_refuses_other_modules_or_shapes(tmp_path, change, match):
    """Files with the right basis hash but the wrong content (hand-made: save_middle cannot write them)."""
    model = tiny()
    basis = write_uneven_basis(tmp_path / "b.safetensors", model)
    apply_basis(model, basis)
    state = middle_state(model)
    meta = {"format": MIDDLE_FORMAT, "basis_sha256": file_sha256(basis), "modules": json.dumps(list(DIMS))}
    if change == "drop":
        del state[f"{QKV}.M"]
    elif change == "shape":
        state[f"{QKV}.M"] = torch.zeros(5, 3)
    elif change == "extra":
        state["aggregator.x.M"] = torch.zeros(1, 1)
    else:
        meta["format"] = "something/1"
    path = tmp_path / "m.safetensors"
    save_file(state, str(path), metadata=meta)
    with pytest.raises(BasisError, match=match) as e:
        load_middle(model, path)
    assert "\n" not in str(e.value)


# ---- leaving the adapter --------------------------------------------------------------------------------

def test_merge_gives_the_wrapped_outputs_and_the_plain_keys(tmp_path):
    model, x = tiny(), images()
    base_out, keys = outputs(model, x), list(model.state_dict())
    apply_basis(model, write_uneven_basis(tmp_path / "b.safetensors", model))
    randomise_middle(model)
    wrapped = outputs(model, x)
    assert max_diff(wrapped, base_out) > 1e-3                               # M does something to merge
    assert merge_basis(model) == len(DIMS)
    assert list(model.state_dict()) == keys
    assert not wrapped_layers(model)
    assert all(type(model.get_submodule(m)) is nn.Linear for m in DIMS)
    assert_outputs_close(outputs(model, x), wrapped)
    # a plain model again: it checkpoints and loads as any VGGT
    from model import load_model, save_checkpoint
    save_checkpoint(model, tmp_path / "merged.safetensors")
    assert_outputs_close(outputs(load_model(tmp_path / "merged.safetensors").eval(), x), wrapped)


def test_peft_loads_the_export_with_the_same_outputs(tmp_path):
    peft = pytest.importorskip("peft")
    model, x = tiny(), images()
    fresh = copy.deepcopy(model)
    apply_basis(model, write_uneven_basis(tmp_path / "b.safetensors", model))
    randomise_middle(model)
    want = outputs(model, x)
    out_dir = export_peft(model, tmp_path / "peft")

    from safetensors.torch import load_file
    tensors = load_file(str(out_dir / "adapter_model.safetensors"))
    for m, (dA, dB) in DIMS.items():
        layer = wrapped_layers(model)[m]
        assert tensors[f"base_model.model.{m}.lora_A.weight"].shape == (dB, layer.in_features)
        assert tensors[f"base_model.model.{m}.lora_B.weight"].shape == (layer.out_features, dB)
    assert len(tensors) == 2 * len(DIMS)

    loaded = peft.PeftModel.from_pretrained(fresh, str(out_dir)).eval()
    for m, (dA, dB) in DIMS.items():
        lora = loaded.base_model.model.get_submodule(m)
        assert lora.r["default"] == dB and lora.scaling["default"] == 1.0
    assert_outputs_close(outputs(loaded, x), want)
    assert max_diff(want, outputs(tiny(), x)) > 1e-3                       # not trivially the base model

    # the mining side reads the same folder back as ΔW = A M Bᵀ (its reader applies peft's scaling)
    from mining.members import load_member_factors
    for m, (lora_b, lora_a_t) in load_member_factors(out_dir).items():
        assert np.allclose(lora_b @ lora_a_t.T, wrapped_layers(model)[m].delta_weight().numpy(), atol=1e-6)
