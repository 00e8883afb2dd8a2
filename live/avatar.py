"""Avatar images: load anything (file or array, any size, RGB/RGBA/grey), crop the face like the driving
video, resize to the model size. The model-side preparation (keypoints, encoder features) is the backend's."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cv2_compat import cv2

log = logging.getLogger(__name__)


class AvatarError(ValueError):
    """An avatar image that cannot be used; the message says why."""


@dataclass
class AvatarInfo:
    image: np.ndarray                          # model-size RGB, what the model animates
    face_found: bool
    warning: str | None = None
    crop_box: tuple[int, int, int, int] | None = None   # in ``full_image`` (None: the whole image)
    name: str = ''
    full_image: np.ndarray | None = None       # the whole avatar RGB (at most AVATAR_MAX_SIDE)

    def compositor(self):
        """Pastes animated face crops back into the whole avatar, or None when there is nothing around the crop
        worth keeping (no face crop, or an image no larger than the model's output)."""
        if self.full_image is None or self.crop_box is None:
            return None
        if max(self.full_image.shape[:2]) <= max(self.image.shape[:2]):
            return None
        try:
            from fomm_model.paste_back import PasteBack
        except ImportError:
            return None
        return PasteBack(self.full_image, self.crop_box, self.image.shape[:2])


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Grey, grey+alpha, RGB or RGBA (uint8, or float in [0, 1]) -> HxWx3 uint8 RGB (alpha over white)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
        else:
            raise AvatarError(f'unsupported image dtype {arr.dtype}: give uint8 or float in [0, 1]')
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise AvatarError(f'expected an image (HxW, HxWx1/2/3/4), got shape {arr.shape}')
    if arr.shape[2] in (2, 4):
        alpha = arr[:, :, -1:].astype(np.float32) / 255.0
        colour = arr[:, :, :-1].astype(np.float32)
        arr = (colour * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def _square_pad(image: np.ndarray) -> np.ndarray:
    """Pad to a square with the border colour so the whole image survives the resize undistorted."""
    h, w = image.shape[:2]
    if h == w:
        return image
    d = abs(h - w)
    a, b = d // 2, d - d // 2
    pads = (a, b, 0, 0) if h < w else (0, 0, a, b)
    return cv2.copyMakeBorder(image, *pads, borderType=cv2.BORDER_REPLICATE)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    interp = cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_CUBIC
    return cv2.resize(image, (w, h), interpolation=interp)


def load_avatar(image: np.ndarray | str | Path, size: tuple[int, int], detector=None,
                keep_full_image: bool = False) -> AvatarInfo:
    """An avatar at the model size, cropped around its face (framed like the training clips:
    ``fomm_model.face_detection.FACE_FRAMING``).

    No face found (or no detector): the centre square is used and ``warning`` says so;
    ``keep_full_image`` skips the face crop and pads the whole image to a square instead.
    """
    name = ''
    if isinstance(image, (str, Path)):
        from fomm_model.video_io import read_image
        path = Path(image).expanduser()
        if not path.is_file():
            raise AvatarError(f'avatar image not found: {path}')
        try:
            image = read_image(path)
        except Exception as exc:  # noqa: BLE001 - reported with the fix
            raise AvatarError(f'cannot read avatar {path}: {exc}') from exc
        name = path.name
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    if min(h, w) < 16:
        raise AvatarError(f'avatar image is too small ({w}x{h})')
    from fomm_model.face_detection import limit_avatar_side
    rgb = limit_avatar_side(rgb)
    h, w = rgb.shape[:2]
    if keep_full_image:
        return AvatarInfo(_resize(_square_pad(rgb), size), face_found=False, warning=None, name=name)
    square = None
    if detector is not None:
        from fomm_model.face_detection import face_square
        square = face_square(detector, rgb)
    if square is not None:
        x0, y0, side = square
        crop = rgb[y0:y0 + side, x0:x0 + side]
        return AvatarInfo(_resize(crop, size), True, None, (x0, y0, x0 + side, y0 + side), name, rgb)
    why = 'no face found in the avatar' if detector is not None else 'face detector unavailable'
    warning = (f'{why}: using the centre square of the image (animation needs a clearly visible, roughly '
               f'frontal face; use --keep-full-avatar to animate the whole picture)')
    log.info('%s%s', f'{name}: ' if name else '', warning)  # the caller shows it to the user
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
    return AvatarInfo(_resize(rgb[y0:y0 + side, x0:x0 + side], size), False, warning,
                      (x0, y0, x0 + side, y0 + side), name, rgb)
