"""Paste an animated face crop back into the full avatar image, at the image's own resolution.

The model animates a small square crop (e.g. 128 px) of the avatar. Showing that crop upscaled loses the
picture around the face and makes everything in it blurry; :class:`PasteBack` instead composites it into the
full image, so hair, background and shoulders outside the crop box stay exactly as they were, and inside the
box the original's fine detail is kept wherever the model did not change the picture.

Per frame, with ``d`` = animated crop - original crop (both at model size):

* **colour match**: the per-channel median of ``d`` over the outer feather band is subtracted from ``d``. The
  generator's colour drift is a near-uniform offset, and the outer band is where the two images meet, so that
  is where a mismatch would show. An additive offset (not a gain) is used because a gain estimated on dark hair
  or background amplifies noise and explodes near black; the median ignores the few band pixels that real
  motion changes, and the offset is clipped so a band full of motion cannot tint the whole face.
* **detail gate**: where ``|d|`` is small the model left the picture alone, so the original's full-resolution
  detail (original - upscaled original crop, precomputed) is kept; where ``|d|`` is large (an opening mouth, a
  turned head) the model's pixels are used, so old detail does not ghost over new content.
* **feathered mask**: a separable smoothstep that is 0 at the box edge and 1 inside, so there is no seam.

Everything constant is computed once per avatar: the model-size crop, the mask, the original as int16 and its
detail layer. A frame then costs two upscales of model-size layers and five int16 passes over the crop box;
nothing outside the box is read or written (pass ``out`` to skip the copy of the full image). The mask is
applied at model size before the upscale: for a mask this smooth that equals applying it at full resolution
and saves a full-resolution pass.
"""
from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(f'paste-back needs OpenCV ({exc}); install it with: pip install "fomm-live[face]"') \
            from exc
    return cv2


def _smoothstep_ramp(n: int, band: float) -> np.ndarray:
    """0 on the outermost pixel, rising smoothly to 1 at ``band`` pixels from either end."""
    centres = np.arange(n, dtype=np.float64) + 0.5
    distance = np.minimum(centres, n - centres) - 0.5          # 0 for the first and last pixel
    u = np.clip(distance / max(band, 1e-6), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _check_image(image: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f'{what} must be an HxWx3 uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}')
    return arr


class PasteBack:
    """Composites animated crops of one avatar into its full image; build once per avatar.

    ``image``: the full avatar (HxWx3 uint8). ``box``: the crop in image pixels, ``(x0, y0, x1, y1)`` with
    x1, y1 exclusive, inside the image (``live.avatar.AvatarInfo.crop_box`` has this form). ``crop_size``:
    ``(height, width)`` of the animated crops, the model's frame size. ``feather``: width of the soft edge
    as a fraction of the box side. ``max_colour_shift``: limit of the colour correction, in 0-255 levels.
    ``detail_range``: ``|d|`` (0-255 levels) from which the model's pixels start to replace the original's
    detail, and at which they have replaced it fully.
    """

    def __init__(self, image: np.ndarray, box: Box, crop_size: tuple[int, int], *, feather: float = 0.15,
                 match_colour: bool = True, max_colour_shift: float = 32.0,
                 detail_range: tuple[float, float] = (12.0, 48.0)):
        cv2 = self._cv2 = _cv2()
        image = _check_image(image, 'the avatar image')
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (int(v) for v in box)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f'crop box {tuple(box)} must lie inside the {w}x{h} image with x0 < x1, y0 < y1')
        ch, cw = (int(v) for v in crop_size)
        if ch < 4 or cw < 4:
            raise ValueError(f'crop_size must be at least 4x4, got {tuple(crop_size)}')
        if not 0.0 < feather <= 0.5:
            raise ValueError(f'feather must be in (0, 0.5], got {feather}')
        if not 0.0 <= detail_range[0] < detail_range[1]:
            raise ValueError(f'detail_range must be (low, high) with 0 <= low < high, got {detail_range}')
        self.image = image.copy()                   # the caller may reuse its array; outside the box must stay
        self.image.flags.writeable = False
        self.box: Box = (x0, y0, x1, y1)
        self.crop_size = (ch, cw)
        self.match_colour, self.max_colour_shift = match_colour, float(max_colour_shift)
        self.detail_range = (float(detail_range[0]), float(detail_range[1]))
        self._box_wh = (x1 - x0, y1 - y0)

        region = image[y0:y1, x0:x1]
        # what the model gets as the avatar (the identity case pastes exactly this back)
        self.crop = cv2.resize(region, (cw, ch), interpolation=cv2.INTER_AREA)
        self._mask = np.outer(_smoothstep_ramp(ch, feather * ch), _smoothstep_ramp(cw, feather * cw)).astype(
            np.float32)
        self._mask3 = cv2.merge([self._mask] * 3)
        # outer half of the feather, where the two images meet; every 3rd pixel is plenty for a median
        self._band = np.flatnonzero(self._mask.ravel() < 0.5)[::3]
        self._region16 = region.astype(np.int16)
        low_res = cv2.resize(self.crop.astype(np.int16), self._box_wh, interpolation=cv2.INTER_LINEAR)
        self._detail16 = cv2.subtract(self._region16, low_res)       # the detail the model-size crop lacks
        self._work = [np.empty_like(self._region16) for _ in range(3)]

    def _difference(self, crop: np.ndarray) -> np.ndarray:
        return self._cv2.subtract(crop, self.crop, dtype=self._cv2.CV_16S)

    def colour_offset(self, crop: np.ndarray) -> np.ndarray:
        """Per-channel offset (levels) of ``crop`` against the original over the outer feather band."""
        return self._offset(self._difference(_check_image(crop, 'the animated crop')))

    def _offset(self, d: np.ndarray) -> np.ndarray:
        band = np.ascontiguousarray(d.reshape(-1, 3)[self._band].T)
        k = band.shape[1] // 2
        median = np.partition(band, k, axis=1)[:, k]
        return np.clip(median, -self.max_colour_shift, self.max_colour_shift).astype(np.int16)

    def __call__(self, crop: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The full image with ``crop`` (HxWx3 uint8 at ``crop_size``) composited into the box.

        ``out``: write into this array instead of a new copy of the image. Only the box is written, so it must
        hold the avatar outside the box: a copy of the image, or an earlier result of this object.
        """
        cv2 = self._cv2
        crop = _check_image(crop, 'the animated crop')
        if crop.shape[:2] != self.crop_size:
            raise ValueError(f'the animated crop is {crop.shape[1]}x{crop.shape[0]}, expected '
                             f'{self.crop_size[1]}x{self.crop_size[0]} (the crop_size given to PasteBack)')
        if out is None:
            out = self.image.copy()
        elif out.shape != self.image.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f'out must be a C-contiguous uint8 array of the image shape {self.image.shape}, got '
                             f'{out.shape} {out.dtype}')
        # model size: difference, colour match, detail gate, mask
        d = self._difference(crop)
        if self.match_colour:
            d -= self._offset(d)
        a = np.abs(d)
        low, high = self.detail_range
        replace = np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2]).astype(np.float32)
        replace -= low
        replace *= 1.0 / (high - low)
        np.clip(replace, 0.0, 1.0, out=replace)
        replace = cv2.GaussianBlur(replace, (5, 5), 0)          # no hard edges where the gate switches
        weight = cv2.multiply(self._mask, replace, scale=256.0).astype(np.int16)
        change = cv2.multiply(d, self._mask3, dtype=cv2.CV_16S)

        # crop box at full size, int16: region + up(mask * d) - up(256 * mask * replace) * detail / 256
        change_full, weight_full, acc = self._work
        change_full = cv2.resize(change, self._box_wh, dst=change_full, interpolation=cv2.INTER_LINEAR)
        weight_full = cv2.resize(cv2.merge([weight] * 3), self._box_wh, dst=weight_full,
                                 interpolation=cv2.INTER_LINEAR)
        weight_full = cv2.multiply(weight_full, self._detail16, dst=weight_full, scale=1.0 / 256.0,
                                   dtype=cv2.CV_16S)
        acc = cv2.add(self._region16, change_full, dst=acc)
        acc = cv2.subtract(acc, weight_full, dst=acc)
        acc = cv2.max(acc, 0, dst=acc)                          # then convertScaleAbs only saturates at 255
        x0, y0, x1, y1 = self.box
        view = out[y0:y1, x0:x1]
        written = cv2.convertScaleAbs(acc, dst=view)
        if not np.may_share_memory(written, out):               # OpenCV could not write in place
            view[...] = written
        return out
