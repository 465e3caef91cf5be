"""A contact sheet per partition: one row per sample — every view's RGB, then view 0's depth and
normals — so a person sees at a glance which attribute varies down the rows."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.atomic import write_bytes
from common.images import depth_to_color, encode_png

from .dataset import Sample


def normal_to_color(normal: np.ndarray) -> np.ndarray:
    return np.rint((np.clip(normal, -1, 1) * 0.5 + 0.5) * 255 * (np.abs(normal).sum(-1, keepdims=True) > 0)).astype(np.uint8)


def make_contact_sheet(samples: list[Sample], title: str, max_rows: int = 12, tile: int = 96) -> np.ndarray:
    rows = []
    for k, s in enumerate(samples[:max_rows]):
        tiles = list(s.images) + [depth_to_color(s.depths[0]), normal_to_color(s.normals[0])]
        tiles = [cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA) for t in tiles]
        row = np.concatenate(tiles, axis=1)
        cv2.putText(row, f"s{k}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    sheet = np.concatenate(rows, axis=0)
    header = np.full((18, sheet.shape[1], 3), 32, np.uint8)
    cv2.putText(header, title, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([header, sheet], axis=0)


def write_contact_sheet(path: Path, samples: list[Sample], title: str) -> None:
    write_bytes(path, encode_png(make_contact_sheet(samples, title)))
