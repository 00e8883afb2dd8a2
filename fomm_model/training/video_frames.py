"""Read one training "video" in any of the original's layouts into a (T, H, W, 3) uint8 array of frame_shape.

A video is a folder of frame images, a video file (.mp4/.mov/.avi/.gif/...), or a single .png/.jpg strip of
frames concatenated horizontally. Frames are resized here, once, so the dataset can cache them cheaply.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_EXTS = ('.mp4', '.mov', '.avi', '.gif', '.mkv', '.webm', '.m4v')
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')


class VideoReadError(RuntimeError):
    """A video that cannot be decoded (corrupt, empty, wrong layout); the message names the file."""


def is_video(path: Path) -> bool:
    """True for anything the dataset treats as one video (frame folder, video file, image strip)."""
    if path.name.startswith('.'):
        return False
    if path.is_dir():
        return True
    return path.suffix.lower() in VIDEO_EXTS + IMAGE_EXTS


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(frame * (255.0 if frame.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        frame = np.stack([frame] * 3, axis=-1)
    if frame.shape[-1] == 4:
        frame = frame[..., :3]
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    return frame


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if frame.shape[:2] == (h, w):
        return np.ascontiguousarray(frame)
    return np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR, reducing_gap=None))


def _read_image(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return _to_rgb(np.asarray(im.convert('RGB')))


def _read_video_file(path: Path) -> list[np.ndarray]:
    import imageio.v2 as iio
    reader = iio.get_reader(str(path))
    try:
        return [_to_rgb(f) for f in reader]
    finally:
        reader.close()


def _split_strip(strip: np.ndarray, frame_shape: tuple[int, int], path: Path) -> list[np.ndarray]:
    h, w = frame_shape
    sh, sw = strip.shape[:2]
    frame_w = round(sh * w / h)  # frames in the strip keep the aspect ratio of frame_shape
    if frame_w <= 0 or sw % frame_w:
        raise VideoReadError(f"{path}: image strip of width {sw} is not a whole number of {sh}x{frame_w} frames "
                             f"(frames must be concatenated horizontally, each with the aspect of frame_shape {h}x{w})")
    return [strip[:, i * frame_w:(i + 1) * frame_w] for i in range(sw // frame_w)]


def read_frames(path: str | Path, frame_shape: tuple[int, int] | list[int]) -> np.ndarray:
    """All frames of one video, sorted and resized to ``frame_shape`` (h, w): (T, h, w, 3) uint8.

    Raises VideoReadError naming the file for anything undecodable, so callers can skip it.
    """
    path = Path(path)
    size = (int(frame_shape[0]), int(frame_shape[1]))
    try:
        if path.is_dir():
            names = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith('.'))
            frames = [_read_image(p) for p in names]
        elif path.suffix.lower() in IMAGE_EXTS:
            frames = _split_strip(_read_image(path), size, path)
        elif path.suffix.lower() in VIDEO_EXTS:
            frames = _read_video_file(path)
        else:
            raise VideoReadError(f"{path}: not a video (expected a frame folder, {'/'.join(VIDEO_EXTS)} "
                                 f"or a {'/'.join(IMAGE_EXTS)} strip)")
    except VideoReadError:
        raise
    except Exception as exc:  # decoders raise many types (OSError, RuntimeError, ValueError, IndexError...)
        raise VideoReadError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise VideoReadError(f"{path}: contains no frames")
    return np.stack([_resize(f, size) for f in frames])
