"""Training image grid like the original Visualizer, drawn with numpy/PIL (no matplotlib).

Columns: source + keypoints, driving + keypoints, [transformed driving + keypoints], deformed source,
occlusion map, prediction + driving keypoints. One row per batch item.
"""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw


def kp_colors(num_kp: int) -> list[tuple[int, int, int]]:
    """Distinct colours around the hue circle (stands in for matplotlib's gist_rainbow)."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(0.8 * i / max(1, num_kp - 1), 1.0, 1.0))
            for i in range(num_kp)]


def _to_uint8(img: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    img = img.detach().float()
    if img.shape[0] == 1:
        img = img.repeat(3, 1, 1)
    if tuple(img.shape[1:]) != size:
        img = F.interpolate(img[None], size=size, mode='bilinear', align_corners=False)[0]
    return (img.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def draw_keypoints(image: np.ndarray, kp: np.ndarray, kp_size: int = 3) -> np.ndarray:
    """Dots at (x, y) in [-1, 1] on an (H, W, 3) uint8 image."""
    h, w = image.shape[:2]
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    for (x, y), color in zip(kp, kp_colors(len(kp))):
        cx, cy = (x + 1) / 2 * (w - 1), (y + 1) / 2 * (h - 1)
        draw.ellipse([cx - kp_size, cy - kp_size, cx + kp_size, cy + kp_size], fill=color)
    return np.asarray(pil)


def training_grid(x: dict, generated: dict, kp_size: int = 3, max_rows: int = 4, border: int = 2) -> np.ndarray:
    """(rows*H, cols*W, 3) uint8 grid of one training batch."""
    size = tuple(x['driving'].shape[2:])
    rows = []
    for i in range(min(max_rows, x['driving'].shape[0])):
        def kp(name):
            return generated[name]['value'][i].detach().float().cpu().numpy()
        cols = [draw_keypoints(_to_uint8(x['source'][i], size), kp('kp_source'), kp_size),
                draw_keypoints(_to_uint8(x['driving'][i], size), kp('kp_driving'), kp_size)]
        if 'transformed_frame' in generated:
            cols.append(draw_keypoints(_to_uint8(generated['transformed_frame'][i], size),
                                       kp('transformed_kp'), kp_size))
        if 'deformed' in generated:
            cols.append(_to_uint8(generated['deformed'][i], size))
        if 'occlusion_map' in generated:
            cols.append(_to_uint8(generated['occlusion_map'][i], size))
        cols.append(draw_keypoints(_to_uint8(generated['prediction'][i], size), kp('kp_driving'), kp_size))
        if 'cross_prediction' in generated:  # the source driven by another item's motion, at the keypoints sent
            cols.append(draw_keypoints(_to_uint8(generated['cross_prediction'][i], size), kp('kp_cross'), kp_size))
        cols = [np.pad(c, ((border, border), (border, border), (0, 0)), constant_values=255) for c in cols]
        rows.append(np.concatenate(cols, axis=1))
    return np.concatenate(rows, axis=0)


def save_grid(path: str | Path, x: dict, generated: dict, kp_size: int = 3) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(training_grid(x, generated, kp_size)).save(path)
    return path
