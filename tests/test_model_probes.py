"""The probes of what a VGGT uses (model.probes) and the pretraining param groups: switching the
aggregator blocks off makes every aggregator layer output the patch embedding, the gammas come back
afterwards, branch ratios scale with gamma, and gammas, norms, biases and tokens are not decayed."""
from __future__ import annotations

import pytest
import torch

from model import VGGT, VGGTConfig
from model.probes import aggregator_blocks, aggregator_blocks_off, branch_ratios, layerscale_stats
from training.param_groups import pretraining_groups

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VGGT(VGGTConfig.preset("tiny")).eval()


def test_blocks_off_leaves_the_patch_embedding_and_restores_the_gammas(tiny):
    images = torch.rand(1, 2, 3, 56, 56)
    before = _gammas(tiny)
    with torch.no_grad():
        on = tiny(images)["depth"]
        debug = {}
        with aggregator_blocks_off(tiny):
            off = tiny(images, debug=debug)["depth"]
            assert all(v == 0 for v in layerscale_stats(tiny).values())
        again = tiny(images)["depth"]
    # with every block the identity, each layer's output is the input tokens twice (frame | global)
    patches = debug["patch_embed_out"].reshape(1, 2, -1, 64)
    start = debug["patch_start_idx"]
    for layer in debug["output"]:
        assert torch.equal(layer[..., start:, :64], patches) and torch.equal(layer[..., start:, 64:], patches)
    assert not torch.allclose(on, off)
    assert torch.equal(on, again) and _equal(_gammas(tiny), before)
    assert [name for name, _ in aggregator_blocks(tiny)] == ["frame.0", "frame.1", "global.0", "global.1"]


def test_blocks_off_restores_the_gammas_after_an_error(tiny):
    before = _gammas(tiny)
    with pytest.raises(RuntimeError):
        with aggregator_blocks_off(tiny):
            raise RuntimeError("boom")
    assert _equal(_gammas(tiny), before)


def test_branch_ratio_is_linear_in_gamma(tiny):
    images = torch.rand(1, 2, 3, 56, 56)
    ratios = branch_ratios(tiny, images)
    assert set(ratios) == {f"{b}.{ls}" for b in ("frame.0", "frame.1", "global.0", "global.1") for ls in ("ls1", "ls2")}
    gamma = tiny.aggregator.frame_blocks[0].ls1.gamma
    with torch.no_grad():
        gamma.mul_(3.0)
    try:
        tripled = branch_ratios(tiny, images)
    finally:
        with torch.no_grad():
            gamma.div_(3.0)
    # the first block's input is the patch embedding, which gamma does not touch
    assert tripled["frame.0.ls1"] == pytest.approx(3 * ratios["frame.0.ls1"], rel=1e-5)
    assert 0.001 < ratios["frame.0.ls1"] < 0.1     # init 0.01: the block writes ~1 % into the stream


def test_pretraining_groups_decay_only_matrices(tiny):
    groups = {g["name"]: g for g in pretraining_groups(tiny, weight_decay=0.05, lr=1e-3, gamma_lr_scale=10)}
    names = {id(p): n for n, p in tiny.named_parameters()}
    named = {k: {names[id(p)] for p in g["params"]} for k, g in groups.items()}
    assert sum(len(v) for v in named.values()) == len(names)
    assert "aggregator.frame_blocks.0.ls1.gamma" in named["layerscale"]
    assert {"aggregator.frame_blocks.0.norm1.weight", "aggregator.frame_blocks.0.attn.qkv.bias",
            "aggregator.camera_token", "aggregator.register_token"} <= named["no_decay"]
    assert {"aggregator.frame_blocks.0.attn.qkv.weight", "aggregator.patch_embed.proj.weight",
            "depth_head.projects.0.weight"} <= named["decay"]
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0
    assert groups["layerscale"]["weight_decay"] == 0.0 and groups["layerscale"]["lr"] == pytest.approx(1e-2)
    old = {g["name"]: g for g in pretraining_groups(tiny, 0.05, 1e-3, decay_all=True)}
    assert {g["weight_decay"] for g in old.values()} == {0.05} and old["layerscale"]["lr"] == 1e-3


def _gammas(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith("gamma")}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
