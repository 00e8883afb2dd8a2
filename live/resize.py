"""Fast area-quality downscaling for per-frame crops.

OpenCV's ``INTER_AREA`` is fast only for integer ratios; a 248 -> 128 face crop took 0.37 ms, a third of the
engine's whole budget besides the model, against 0.04 ms for ``INTER_LINEAR``. Halving with ``INTER_AREA``
(its fast 2x path: each output pixel the mean of a 2x2 block) until less than a factor of two is left, then
one bilinear step, gives nearly the same image (mean difference ~1/255) in about a tenth of the time.
"""
from __future__ import annotations

import numpy as np

from .cv2_compat import cv2


def downscale(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` resized to ``width`` x ``height``: area-like when shrinking, bilinear otherwise."""
    h, w = image.shape[:2]
    while w >= 2 * width and h >= 2 * height:
        w, h = w // 2, h // 2
        image = cv2.resize(image[:2 * h, :2 * w], (w, h), interpolation=cv2.INTER_AREA)
    if (w, h) == (width, height):
        return np.ascontiguousarray(image)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
