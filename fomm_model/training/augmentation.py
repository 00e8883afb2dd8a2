"""Clip augmentations of the original (flip, time flip, colour jitter, resize, crop) in numpy, no torchvision.

Every transform takes frames (T, H, W, 3) uint8 and a numpy Generator, and applies the SAME random
parameters to every frame of the clip, so source and driving stay consistent. :class:`Augmentation` can also
carry per-frame points (landmark targets, keypoint coordinates in [-1, 1]) through the same geometric changes.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

SUPPORTED = ('flip_param', 'jitter_param', 'resize_param', 'crop_param')


def draw_flip(rng: np.random.Generator, time_flip: bool = False, horizontal_flip: bool = False) -> str | None:
    """Original semantics: with p=.5 reverse time; otherwise mirror horizontally with p=.5. Returns which."""
    if time_flip and rng.random() < 0.5:
        return 'time'
    if horizontal_flip and rng.random() < 0.5:
        return 'horizontal'
    return None


def apply_flip(frames: np.ndarray, flip: str | None) -> np.ndarray:
    if flip == 'time':
        return frames[::-1]
    if flip == 'horizontal':
        return frames[:, :, ::-1]
    return frames


def random_flip(frames: np.ndarray, rng: np.random.Generator, time_flip: bool = False,
                horizontal_flip: bool = False) -> np.ndarray:
    """The original RandomFlip on a clip."""
    return apply_flip(frames, draw_flip(rng, time_flip, horizontal_flip))


def gray(x: np.ndarray) -> np.ndarray:
    """Luma (ITU-R 601 weights, as PIL's "L") of float RGB (..., 3), keeping a channel axis: (..., 1)."""
    return (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]


def rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    """float RGB in [0,1] -> HSV in [0,1] (vectorised, any leading shape)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    maxc, minc = x.max(-1), x.min(-1)
    v = maxc
    delta = maxc - minc
    s = np.where(maxc > 0, delta / np.maximum(maxc, 1e-12), 0.0)
    safe = np.maximum(delta, 1e-12)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return np.stack([h, s, v], -1)


def hsv_to_rgb(x: np.ndarray) -> np.ndarray:
    h, s, v = x[..., 0], x[..., 1], x[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    choices = [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    out = np.zeros_like(x)
    for k, c in enumerate(choices):
        out = np.where((i == k)[..., None], c, out)
    return out


def color_jitter(frames: np.ndarray, rng: np.random.Generator, brightness: float = 0, contrast: float = 0,
                 saturation: float = 0, hue: float = 0) -> np.ndarray:
    """torchvision ColorJitter semantics: factors in [1-x, 1+x] (hue shift in [-h, h]), random order."""
    x = frames.astype(np.float32) / 255.0
    ops = []
    if brightness:
        f = rng.uniform(max(0.0, 1 - brightness), 1 + brightness)
        ops.append(lambda y, f=f: y * f)
    if contrast:
        f = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)
        # one mean per frame, as adjust_contrast on each PIL image of the clip
        ops.append(lambda y, f=f: f * y + (1 - f) * gray(y).mean(axis=(-3, -2), keepdims=True))
    if saturation:
        f = rng.uniform(max(0.0, 1 - saturation), 1 + saturation)
        ops.append(lambda y, f=f: f * y + (1 - f) * gray(y))
    if hue:
        f = rng.uniform(-hue, hue)

        def shift(y, f=f):
            hsv = rgb_to_hsv(y)
            hsv[..., 0] = (hsv[..., 0] + f) % 1.0
            return hsv_to_rgb(hsv)
        ops.append(shift)
    for k in rng.permutation(len(ops)):
        x = np.clip(ops[k](x), 0.0, 1.0)
    return np.round(x * 255.0).astype(np.uint8)


def random_resize(frames: np.ndarray, rng: np.random.Generator, ratio: tuple[float, float]) -> np.ndarray:
    """Scale every frame by one random ratio (original RandomResize)."""
    r = rng.uniform(ratio[0], ratio[1])
    h, w = frames.shape[1:3]
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize((nw, nh), Image.BILINEAR))
                     for f in frames])


def random_crop(frames: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Crop one random window of ``size`` (zero-padding frames that are smaller, as the original pad_clip)."""
    return random_crop_at(frames, rng, size)[0]


def random_crop_at(frames: np.ndarray, rng: np.random.Generator, size: tuple[int, int]
                   ) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`random_crop`, also returning where the window's top-left corner was in the input (y, x)."""
    th, tw = int(size[0]), int(size[1])
    t, h, w, c = frames.shape
    if h < th or w < tw:
        padded = np.zeros((t, max(h, th), max(w, tw), c), frames.dtype)
        oy, ox = (max(h, th) - h) // 2, (max(w, tw) - w) // 2
        padded[:, oy:oy + h, ox:ox + w] = frames
        frames, h, w = padded, max(h, th), max(w, tw)
    else:
        oy = ox = 0
    y = int(rng.integers(0, h - th + 1))
    x = int(rng.integers(0, w - tw + 1))
    return frames[:, y:y + th, x:x + tw], (y - oy, x - ox)


class Augmentation:
    """The original AllAugmentationTransform order: flip, resize, crop, colour jitter."""

    def __init__(self, flip_param: dict | None = None, jitter_param: dict | None = None,
                 resize_param: dict | None = None, crop_param: dict | None = None, **unsupported):
        if unsupported:
            raise ValueError(f"augmentation_params: unsupported key(s) {sorted(unsupported)}; "
                             f"supported: {', '.join(SUPPORTED)}")
        self.flip = dict(flip_param or {})
        self.jitter = dict(jitter_param or {})
        self.resize = dict(resize_param or {})
        self.crop = dict(crop_param or {})

    def __call__(self, frames: np.ndarray, rng: np.random.Generator, points: np.ndarray | None = None,
                 mirror=None):
        """Augmented frames; with ``points`` (T, N, 2) in keypoint coordinates, (frames, points moved alike).

        ``mirror(points)`` gives the points of a horizontally flipped frame (x negated, and for named points
        left/right twins swapped); it is required with points when flips are on.
        """
        if self.flip:
            flip = draw_flip(rng, **self.flip)
            frames = apply_flip(frames, flip)
            if points is not None and flip == 'time':
                points = points[::-1]
            elif points is not None and flip == 'horizontal':
                if mirror is None:
                    raise ValueError('Augmentation: points need a mirror function when horizontal flips are on')
                points = mirror(points)
        if self.resize:
            frames = random_resize(frames, rng, **self.resize)  # keypoint coordinates do not change with scale
        if self.crop:
            h, w = frames.shape[1:3]
            frames, (y, x) = random_crop_at(frames, rng, **self.crop)
            if points is not None:
                points = _crop_points(points, (h, w), (y, x), frames.shape[1:3])
        if self.jitter:
            frames = color_jitter(frames, rng, **self.jitter)
        frames = np.ascontiguousarray(frames)
        return frames if points is None else (frames, np.ascontiguousarray(points, dtype=np.float32))


def _crop_points(points: np.ndarray, size: tuple[int, int], corner: tuple[int, int],
                 new_size: tuple[int, int]) -> np.ndarray:
    """Keypoint coordinates in an (H, W) image -> in the window of ``new_size`` whose corner is at (y, x)."""
    scale_in = (np.array([size[1], size[0]]) - 1.0) / 2.0
    scale_out = (np.array([new_size[1], new_size[0]]) - 1.0) / 2.0
    pixels = (np.asarray(points, np.float64) + 1.0) * scale_in - np.array([corner[1], corner[0]])
    return (pixels / scale_out - 1.0).astype(np.float32)
