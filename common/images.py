"""Image conventions shared by the renderer, prediction and figures."""
from __future__ import annotations

import cv2
import numpy as np

# Files read as images: user textures (Blender) and prediction inputs (OpenCV). Formats both read
# without extra configuration; OpenCV reads EXR only when enabled before it is imported.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def inverse_depth_limits(depth: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """The 2nd and 98th percentiles of the valid pixels' inverse depth: a colour range robust to a few
    very near or very far pixels. ``valid`` defaults to depth > 0."""
    valid = depth > 0 if valid is None else valid & (depth > 0)
    if not valid.any():
        return 0.0, 1.0
    lo, hi = np.percentile(1.0 / depth[valid], [2, 98])
    return float(lo), float(hi)


def depth_to_color(depth: np.ndarray, valid: np.ndarray | None = None,
                   limits: tuple[float, float] | None = None) -> np.ndarray:
    """Depth [H,W] -> RGB uint8 [H,W,3]: turbo on inverse depth (near warm, far cool), black where not
    ``valid`` (default: depth > 0). ``limits`` is the inverse-depth range the colours span (default:
    :func:`inverse_depth_limits`); give two maps the same limits to compare them."""
    valid = depth > 0 if valid is None else valid & (depth > 0)
    lo, hi = inverse_depth_limits(depth, valid) if limits is None else limits
    inverse = np.where(valid, 1.0 / np.maximum(depth, 1e-12), 0.0)
    t = np.clip((inverse - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = cv2.applyColorMap((t * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1].copy()
    rgb[~valid] = 0
    return rgb


def encode_png(rgb: np.ndarray) -> bytes:
    """RGB (or single-channel, 8- or 16-bit) array -> PNG bytes; raises instead of writing nothing."""
    image = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise ValueError(f"cannot encode a {rgb.dtype} array of shape {rgb.shape} as PNG")
    return buffer.tobytes()
