"""Cameras <-> VGGT's pose encoding ("absT_quaR_FoV", 9 numbers per view).

    [t (3) of the OpenCV world-to-camera (cam-from-world) 3x4 | quaternion x, y, z, w with w >= 0 |
     fov_h = 2 atan(H / 2 fy) | fov_w = 2 atan(W / 2 fx)]

The encoding keeps no principal point: decoding puts it at the image centre (W/2, H/2), as the
official code does. Intrinsics are in pixels of the image the model saw (height H, width W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def extrinsics_intrinsics_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                                           image_hw: tuple[int, int]) -> torch.Tensor:
    """``extrinsics`` [..., 3, 4] OpenCV cam-from-world, ``intrinsics`` [..., 3, 3] pixels -> [..., 9]."""
    H, W = image_hw
    fov_h = 2 * torch.atan(H / 2 / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan(W / 2 / intrinsics[..., 0, 0])
    quat = rotation_to_quaternion(extrinsics[..., :3, :3])
    return torch.cat([extrinsics[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1)


def pose_encoding_to_extrinsics_intrinsics(pose_enc: torch.Tensor, image_hw: tuple[int, int]
                                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., 9] -> (extrinsics [..., 3, 4] OpenCV cam-from-world, intrinsics [..., 3, 3] in pixels)."""
    H, W = (int(v) for v in image_hw)
    t, quat, fov_h, fov_w = pose_enc[..., :3], pose_enc[..., 3:7], pose_enc[..., 7], pose_enc[..., 8]
    extrinsics = torch.cat([quaternion_to_rotation(quat), t[..., None]], dim=-1)
    intrinsics = torch.zeros(*pose_enc.shape[:-1], 3, 3, dtype=pose_enc.dtype, device=pose_enc.device)
    intrinsics[..., 0, 0] = (W / 2) / torch.tan(fov_w / 2)
    intrinsics[..., 1, 1] = (H / 2) / torch.tan(fov_h / 2)
    intrinsics[..., 0, 2] = W / 2
    intrinsics[..., 1, 2] = H / 2
    intrinsics[..., 2, 2] = 1
    return extrinsics, intrinsics


def quaternion_to_rotation(quat: torch.Tensor) -> torch.Tensor:
    """Quaternions [..., 4] (x, y, z, w; need not be unit: the network's are not) -> rotations [..., 3, 3]."""
    x, y, z, w = F.normalize(quat, dim=-1).unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, dim=-1).reshape(*quat.shape[:-1], 3, 3)


def rotation_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> unit quaternions [..., 4] (x, y, z, w), w >= 0. Each of the four
    classic formulas divides by one component; use the one whose component is largest (best conditioned)."""
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # |w|, |x|, |y|, |z| from the diagonal
    magnitudes = 0.5 * torch.sqrt(torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                                               1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1).clamp(min=0))
    w, x, y, z = magnitudes.clamp(min=1e-8).unbind(-1)
    candidates = torch.stack([  # rows: (x, y, z, w) computed from the largest w, x, y or z respectively
        torch.stack([(m21 - m12) / (4 * w), (m02 - m20) / (4 * w), (m10 - m01) / (4 * w), w], dim=-1),
        torch.stack([x, (m01 + m10) / (4 * x), (m02 + m20) / (4 * x), (m21 - m12) / (4 * x)], dim=-1),
        torch.stack([(m01 + m10) / (4 * y), y, (m12 + m21) / (4 * y), (m02 - m20) / (4 * y)], dim=-1),
        torch.stack([(m02 + m20) / (4 * z), (m12 + m21) / (4 * z), z, (m10 - m01) / (4 * z)], dim=-1),
    ], dim=-2)
    best = magnitudes.argmax(dim=-1)[..., None, None].expand(*R.shape[:-2], 1, 4)
    quat = candidates.gather(-2, best).squeeze(-2)
    quat = torch.where(quat[..., 3:] < 0, -quat, quat)
    return F.normalize(quat, dim=-1)
