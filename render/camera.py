"""Pinhole cameras of a spec in the OpenCV convention (no ``bpy``).

OpenCV: x right, y down, z forward (the optical axis); world-to-camera ``x_cam = R x_world + t``;
pixel centres at integer coordinates, so the principal point of a W x H image is (W/2 - 0.5, H/2 - 0.5).
The Blender backend derives its camera objects from these matrices, and the tests check, by an
independent ray cast, that the rendered depth agrees with them.
"""
from __future__ import annotations

import math

import numpy as np

from .spec import View

OPENCV_TO_BLENDER = np.diag([1.0, -1.0, -1.0])  # camera axes: Blender looks down -z with +y up


def intrinsics(view: View, width: int, height: int) -> np.ndarray:
    """K [3,3] in pixels; ``fov_deg`` is the horizontal field of view, pixels are square."""
    f = width / (2.0 * math.tan(math.radians(view.fov_deg) / 2.0))
    return np.array([[f, 0.0, width / 2.0 - 0.5], [0.0, f, height / 2.0 - 0.5], [0.0, 0.0, 1.0]])


def cam_to_world_rotation(view: View) -> np.ndarray:
    """Columns are the OpenCV camera axes in world coordinates (world is Z-up)."""
    z = np.subtract(view.look_at, view.position).astype(float)
    z /= np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.999 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)  # image right; y = z x x then points down in the image, as OpenCV wants
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(view.roll), math.sin(view.roll)
    x, y = c * x + s * y, -s * x + c * y  # roll about the optical axis
    return np.stack([x, y, z], axis=1)


def extrinsics(view: View) -> np.ndarray:
    """World-to-camera [3,4] (OpenCV)."""
    R = cam_to_world_rotation(view).T
    t = -R @ np.asarray(view.position, dtype=float)
    return np.concatenate([R, t[:, None]], axis=1)


def blender_matrix_world(view: View) -> np.ndarray:
    """4x4 ``matrix_world`` of a Blender camera object that realises ``view``."""
    M = np.eye(4)
    M[:3, :3] = cam_to_world_rotation(view) @ OPENCV_TO_BLENDER
    M[:3, 3] = view.position
    return M


def blender_lens(view: View, sensor_width: float = 36.0) -> float:
    """Focal length in mm for a horizontal sensor fit."""
    return sensor_width / (2.0 * math.tan(math.radians(view.fov_deg) / 2.0))
