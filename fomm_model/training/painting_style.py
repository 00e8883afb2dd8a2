"""Painting-like restyling of training pairs: the avatar is often a painting, the driver always a camera.

Why: face-128-v4 was trained on video frames only, and its mouth follows a photographed avatar far better than a
painted one (model card, "After face-128-v4"). A :class:`PaintingStyle` is drawn once per pair and applied alike
to the source and to the frame the generator must reproduce, so the target stays consistent with the source,
while the keypoints of the driving frame are still taken from the unstyled camera frame: that is the live
app's situation (painted source, photographed driver), which plain pairs never show the networks.

The look is built from what the bundled portraits share: smooth skin (a 3x3 mode or median filter flattens fine
texture but keeps lids and lips), few tones (posterisation), yellowed varnish or monochrome, low contrast, dark
surroundings (a vignette), and a canvas texture that stays put between frames. Pure numpy + Pillow + scipy: no
OpenCV in the training dependencies.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy.ndimage import gaussian_filter

from .augmentation import gray

STROKES = ('mode', 'median', None)  # 3x3 filters: a 5x5 one erased lids and lips at 128 px
SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


@dataclass(frozen=True)
class PaintingStyle:
    """One drawn style; calling it on an (H, W, 3) uint8 frame gives the restyled frame (same for equal inputs)."""

    strokes: str | None  # 'mode' or 'median' 3x3 filter (brush strokes flatten texture), or None
    bits: int  # posterisation: bits kept per channel (8: none)
    tone: str  # 'varnish' (towards sepia), 'mono' or 'none'
    tone_strength: float
    contrast: float  # factor around the frame's mean grey (< 1: flatter)
    canvas: np.ndarray  # (H, W) multiplicative canvas texture around 1 and vignette (or ones), shared by the pair

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        out = frame
        if self.strokes:
            filt = (ImageFilter.ModeFilter if self.strokes == 'mode' else ImageFilter.MedianFilter)(3)
            out = np.asarray(Image.fromarray(np.ascontiguousarray(out)).filter(filt))
        x = out.astype(np.float32) / 255.0
        if self.bits < 8:
            levels = float(2 ** self.bits - 1)
            x = np.round(x * levels) / levels
        if self.tone == 'varnish':
            x = (1 - self.tone_strength) * x + self.tone_strength * np.clip(x @ SEPIA.T, 0, 1)
        elif self.tone == 'mono':
            x = (1 - self.tone_strength) * x + self.tone_strength * gray(x)
        x = self.contrast * x + (1 - self.contrast) * float(gray(x).mean())
        x = x * self.canvas[..., None]
        return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def draw_style(rng: np.random.Generator, size: tuple[int, int]) -> PaintingStyle:
    """A random painting look for frames of ``size`` (H, W); every part is optional, so looks vary widely.

    Strengths were set by eye against the bundled portraits at 128 px: a canvas texture above ~3% erased lids and
    lips (as a 5x5 filter did), the very parts the mouth and eye losses need.
    """
    strokes = STROKES[rng.choice(len(STROKES), p=[0.25, 0.35, 0.4])]
    bits = int(rng.choice([5, 8], p=[0.25, 0.75]))
    tone = str(rng.choice(['varnish', 'mono', 'none'], p=[0.55, 0.1, 0.35]))
    tone_strength = float(rng.uniform(0.3, 0.8)) if tone == 'varnish' else float(rng.uniform(0.7, 1.0))
    contrast = float(rng.uniform(0.7, 1.1))
    canvas = np.ones(size, np.float32)
    if rng.random() < 0.4:
        noise = gaussian_filter(rng.standard_normal(size).astype(np.float32), sigma=float(rng.uniform(0.7, 1.5)))
        canvas += float(rng.uniform(0.01, 0.03)) * noise / max(float(noise.std()), 1e-6)
    if rng.random() < 0.4:
        yy, xx = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
        r2 = ((yy / (size[0] - 1) - 0.5) ** 2 + (xx / (size[1] - 1) - 0.5) ** 2) / 0.5  # 0 centre, 1 corner
        canvas *= 1.0 - float(rng.uniform(0.2, 0.6)) * r2
    return PaintingStyle(strokes, bits, tone, tone_strength, contrast, canvas)
