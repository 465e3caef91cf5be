"""The model against the official one: keys and shapes of VGGT-1B, parameter counts, and every output
of small official configurations (fixtures computed with the official code, random weights):
parity_micro is shipped and always runs; parity_tiny and parity_tiny2 (with per-layer aggregator
outputs) run where the reference folder is available."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import FIXTURES, needs_parity, official_1b_keys, parity_params, parity_path
from model import VGGT, VGGTConfig, load_checkpoint, load_model, save_checkpoint
from model.checkpoint import CheckpointError
from test_model_heads import TRACK_TOLERANCE


def test_vggt_1b_has_the_official_keys_shapes_and_parameter_counts():
    with torch.device("meta"):
        model = VGGT(VGGTConfig.preset("vggt-1b"))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = official_1b_keys()
    assert sorted(set(ours) - set(ref)) == [] and sorted(set(ref) - set(ours)) == []
    assert [k for k in ours if ours[k] != ref[k]] == []

    counts = json.loads((FIXTURES / "param_counts.json").read_text())
    size = lambda module: sum(p.numel() for p in module.parameters())
    assert size(model) == counts["total"] == 1_256_537_516
    assert size(model.aggregator) == counts["aggregator"]
    assert size(model.aggregator.patch_embed) == counts["aggregator.patch_embed (DINOv2 ViT-L/14 reg)"]
    assert size(model.aggregator.frame_blocks) == counts["aggregator.frame_blocks"]
    assert size(model.camera_head) == counts["camera_head"]
    assert size(model.depth_head) == counts["depth_head"]
    assert size(model.point_head) == counts["point_head"]
    assert size(model.track_head) == counts["track_head"]


def _fixture(name):
    meta = json.loads(parity_path(name, ".json").read_text())
    tensors = load_file(str(parity_path(name, ".safetensors")))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return meta, tensors, state


@pytest.mark.parametrize("name", parity_params("parity_micro", "parity_tiny", "parity_tiny2"))
def test_forward_matches_the_official_code(name, tmp_path):
    meta, ref, state = _fixture(name)
    model = VGGT(VGGTConfig.from_official(meta["config"]))
    assert len(state) == meta["n_state_keys"]
    path = tmp_path / "official.pt"
    torch.save(state, path)                       # the official checkpoint format: a plain state dict
    load_checkpoint(model, path)
    assert sum(p.numel() for p in model.parameters()) == meta["n_params"]
    model.eval()
    debug = {}
    with torch.no_grad():
        out = model(ref["input.images"], query_points=ref["input.query_points"], debug=debug)

    if "debug.aggregator.patch_start_idx" in ref:  # the larger fixtures also hold every aggregator layer
        assert debug["patch_start_idx"] == int(ref["debug.aggregator.patch_start_idx"])
        torch.testing.assert_close(debug["patch_embed_out"], ref["debug.aggregator.patch_embed_out"], rtol=0, atol=1e-4)
        layers = [k for k in ref if k.startswith("debug.aggregator.output.")]
        assert len(debug["output"]) == len(layers)
        for i, tokens in enumerate(debug["output"]):
            torch.testing.assert_close(tokens, ref[f"debug.aggregator.output.{i}"], rtol=0, atol=1e-4)

    expected = {k[len("out."):]: v for k, v in ref.items() if k.startswith("out.")}
    got = {k: v for k, v in out.items() if k != "pose_enc_list"}
    got.update({f"pose_enc_list.{i}": v for i, v in enumerate(out["pose_enc_list"])})
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key
        # exp / expm1 activations amplify float32 rounding: relative tolerance there (as the fixture advises)
        rtol = 1e-3 if key in ("depth", "world_points") else 0
        # tracks are ill-conditioned in float32: the tolerance measured in test_model_heads.py
        track_tol, score_tol = TRACK_TOLERANCE[name]
        atol = {"track": track_tol, "vis": score_tol, "conf": score_tol}.get(key, 1e-4)
        torch.testing.assert_close(got[key], value, rtol=rtol, atol=atol, msg=lambda m: f"{key}: {m}")


@needs_parity
def test_safetensors_checkpoint_and_frame_chunking_give_the_same_outputs(tmp_path):
    meta, ref, state = _fixture("parity_tiny2")
    cfg = VGGTConfig.from_official(meta["config"])
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    chunked = VGGT(VGGTConfig(**{**cfg.to_dict(), "dpt_frames_chunk": 3}))   # 4 frames -> chunks of 3 and 1
    load_checkpoint(chunked, path)
    chunked.eval()
    with torch.no_grad():
        out = chunked(ref["input.images"])
    torch.testing.assert_close(out["depth_conf"], ref["out.depth_conf"], rtol=0, atol=1e-4)
    torch.testing.assert_close(out["world_points"], ref["out.world_points"], rtol=1e-3, atol=1e-4)
    assert "track" not in out  # no query points, no tracks


def test_single_sequence_input_and_training_mode_outputs():
    torch.manual_seed(0)
    model = VGGT(VGGTConfig.preset("tiny"))
    images = torch.rand(3, 3, 56, 70)
    out = model(images)                                       # [S,3,H,W]: a batch of one, training mode
    assert "images" not in out
    assert out["pose_enc"].shape == (1, 3, 9) and len(out["pose_enc_list"]) == 4
    assert out["depth"].shape == (1, 3, 56, 70, 1) and out["depth_conf"].shape == (1, 3, 56, 70)
    assert out["world_points"].shape == (1, 3, 56, 70, 3)
    assert bool((out["depth"] > 0).all()) and bool((out["depth_conf"] > 1).all())
    assert bool((out["pose_enc"][..., 7:] >= 0).all())        # FoV goes through a ReLU
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.rand(2, 3, 50, 56))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = VGGT(VGGTConfig.preset("tiny"))
    images = torch.rand(1, 2, 3, 28, 42)

    def grads():
        model.zero_grad()
        out = model(images)
        (out["depth"].mean() + out["pose_enc"].square().mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.set_gradient_checkpointing(True)
    recomputed = grads()
    assert plain.keys() == recomputed.keys() and len(plain) > 50
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-7)


def test_bf16_autocast_keeps_the_heads_in_float32():
    torch.manual_seed(0)
    model = VGGT(VGGTConfig.preset("tiny")).eval()
    images = torch.rand(1, 2, 3, 28, 28)
    with torch.no_grad():
        ref = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images)
    assert low["depth"].dtype == torch.float32 and low["pose_enc"].dtype == torch.float32
    # bf16 has ~3 significant digits: the aggregator's rounding reaches the outputs, but only a little
    assert (low["depth"] - ref["depth"]).abs().max() < 0.05 * ref["depth"].abs().max()


def test_checkpoint_mismatch_is_one_clear_error(tmp_path):
    model = VGGT(VGGTConfig.preset("tiny"))
    state = model.state_dict()
    state["aggregator.camera_token"] = torch.zeros(1, 2, 1, 7)          # wrong shape
    del state["depth_head.norm.weight"]                                  # missing
    state["extra.weight"] = torch.zeros(3)                               # unexpected
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "1 missing (depth_head.norm.weight)" in message
    assert "1 unexpected (extra.weight)" in message
    assert "1 mismatched (aggregator.camera_token (1, 2, 1, 7) vs (1, 2, 1, 64))" in message
    report = load_checkpoint(model, path, strict=False)
    assert report["missing"] == ["depth_head.norm.weight"]

    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.safetensors: cannot read checkpoint"):
        load_checkpoint(model, tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(model, tmp_path / "absent.pt")


def test_saved_model_rebuilds_from_its_own_file(tmp_path):
    torch.manual_seed(1)
    model = VGGT(VGGTConfig.preset("tiny")).eval()
    path = tmp_path / "tiny.safetensors"
    old_umask = os.umask(0o022)
    try:
        save_checkpoint(model, path, extra={"note": "test"})
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o644       # readable by others, like any shipped file
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]
    again = load_model(path).eval()
    assert again.config == model.config
    images = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(again(images)["depth"], model(images)["depth"], rtol=0, atol=0)
    assert not list(tmp_path.glob(".*tmp*"))


def test_config_presets_and_validation():
    assert VGGTConfig.preset("vggt-1b") == VGGTConfig()
    small = VGGTConfig.preset("small")
    assert VGGTConfig.from_dict(small.to_dict()) == small
    with pytest.raises(ValueError, match="unknown model preset"):
        VGGTConfig.preset("huge")
    with pytest.raises(ValueError, match="not divisible"):
        VGGTConfig(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="dpt_layers"):
        VGGTConfig(depth=2, dpt_layers=(0, 1, 2, 3), patch_embed="conv")
