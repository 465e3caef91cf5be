"""VGGT's pose encoding: its definition, exact round trips (including rotations near 180°, where w -> 0),
and decoding of the network's raw, non-unit quaternions into proper rotations."""
from __future__ import annotations

import math

import torch

from model.pose import (extrinsics_intrinsics_to_pose_encoding, pose_encoding_to_extrinsics_intrinsics,
                        quaternion_to_rotation, rotation_to_quaternion)


def random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    return q * torch.linalg.det(q)[:, None, None]          # det +1


def half_turns() -> torch.Tensor:
    """180° about x, y, z and a diagonal axis, and 179.9° about another: w is (nearly) zero."""
    axes = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, -2, 0.5]], dtype=torch.float64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    angles = torch.tensor([math.pi] * 4 + [math.radians(179.9)], dtype=torch.float64)
    K = torch.zeros(len(axes), 3, 3, dtype=torch.float64)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
    K = K - K.transpose(1, 2)
    s, c = torch.sin(angles)[:, None, None], torch.cos(angles)[:, None, None]
    return torch.eye(3, dtype=torch.float64) + s * K + (1 - c) * K @ K


def cameras(R: torch.Tensor, H: int = 56, W: int = 84):
    n = len(R)
    t = torch.linspace(-2, 3, 3 * n, dtype=torch.float64).reshape(n, 3)
    extrinsics = torch.cat([R, t[..., None]], dim=-1)
    K = torch.zeros(n, 3, 3, dtype=torch.float64)
    K[:, 0, 0] = torch.linspace(40, 90, n, dtype=torch.float64)
    K[:, 1, 1] = K[:, 0, 0] * 1.02                      # slightly non-square pixels survive the round trip
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = W / 2, H / 2, 1
    return extrinsics, K, (H, W)


def test_encoding_matches_its_definition():
    extrinsics, K, (H, W) = cameras(random_rotations(6))
    enc = extrinsics_intrinsics_to_pose_encoding(extrinsics, K, (H, W))
    assert enc.shape == (6, 9)
    torch.testing.assert_close(enc[:, :3], extrinsics[:, :, 3])
    x, y, z, w = enc[:, 3:7].unbind(-1)
    assert bool((w >= 0).all())
    torch.testing.assert_close(enc[:, 3:7].norm(dim=-1), torch.ones(6, dtype=torch.float64))
    # the textbook matrix of the quaternion is the camera's rotation
    R = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                     2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                     2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(6, 3, 3)
    torch.testing.assert_close(R, extrinsics[:, :, :3])
    torch.testing.assert_close(enc[:, 7], 2 * torch.atan(H / 2 / K[:, 1, 1]))
    torch.testing.assert_close(enc[:, 8], 2 * torch.atan(W / 2 / K[:, 0, 0]))


def test_identity_camera_encodes_to_the_unit_quaternion():
    extrinsics, K, hw = cameras(torch.eye(3, dtype=torch.float64)[None])
    enc = extrinsics_intrinsics_to_pose_encoding(extrinsics, K, hw)
    torch.testing.assert_close(enc[0, 3:7], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64))


def test_round_trip_is_exact_including_half_turns():
    R = torch.cat([random_rotations(32, seed=1), half_turns()])
    extrinsics, K, hw = cameras(R)
    back_ext, back_K = pose_encoding_to_extrinsics_intrinsics(extrinsics_intrinsics_to_pose_encoding(extrinsics, K, hw), hw)
    torch.testing.assert_close(back_ext, extrinsics, rtol=0, atol=1e-9)
    torch.testing.assert_close(back_K, K, rtol=0, atol=1e-9)
    # batch dimensions [B, S] pass through
    enc = extrinsics_intrinsics_to_pose_encoding(extrinsics[:36].reshape(4, 9, 3, 4), K[:36].reshape(4, 9, 3, 3), hw)
    assert enc.shape == (4, 9, 9)
    assert pose_encoding_to_extrinsics_intrinsics(enc, hw)[0].shape == (4, 9, 3, 4)


def test_decoding_puts_the_principal_point_at_the_image_centre():
    extrinsics, K, (H, W) = cameras(random_rotations(3))
    K_off = K.clone()
    K_off[:, 0, 2] += 7.0                               # the encoding has no principal point ...
    _, back = pose_encoding_to_extrinsics_intrinsics(extrinsics_intrinsics_to_pose_encoding(extrinsics, K_off, (H, W)),
                                                     (H, W))
    torch.testing.assert_close(back[:, :2, 2], torch.tensor([[W / 2, H / 2]] * 3, dtype=torch.float64))


def test_raw_network_quaternions_decode_to_proper_rotations():
    raw = torch.randn(50, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    R = quaternion_to_rotation(raw)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(50, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(50, dtype=torch.float64))
    # q and -q (and any positive scaling) are the same rotation; encoding picks w >= 0
    torch.testing.assert_close(quaternion_to_rotation(-2 * raw), R)
    q = rotation_to_quaternion(R)
    unit = raw / raw.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(q, unit * torch.sign(unit[:, 3:]))
