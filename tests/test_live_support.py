"""Helpers shared by the live tests (plain functions; no tests here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
FACE_CLIP = SHARED / 'data' / 'faces' / 'test' / 'dpe_d#misc__dpe_d.mp4'
AVATAR = SHARED / 'data' / 'avatars' / 'mona_lisa.png'


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    """A small random-weight face-128 checkpoint (the trained default model may not exist yet)."""
    import torch

    from fomm_model import build_models, save_checkpoint
    torch.manual_seed(seed)
    save_checkpoint(path, build_models('face-128', with_discriminator=False))
    return path


def clip_frames(n: int, path: Path = FACE_CLIP) -> list[np.ndarray]:
    from fomm_model.video_io import read_video
    return list(read_video(path, max_frames=n)[0])


def paste(face: np.ndarray, x: int, y: int, canvas_size=(480, 640), value: int = 90) -> np.ndarray:
    canvas = np.full((*canvas_size, 3), value, np.uint8)
    h, w = face.shape[:2]
    canvas[y:y + h, x:x + w] = face
    return canvas


class RecordingBackend:
    """A real pyvirtualcam backend (registered with ``pyvirtualcam.register_backend``) that keeps frames in
    memory instead of writing to a device: the only part of the virtual-camera path that cannot run here."""
    instances: list = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc, self._device = width, height, fps, fourcc, device
        self.frames: list[np.ndarray] = []
        self.closed = False
        RecordingBackend.instances.append(self)

    def send(self, frame):
        if self.closed:
            raise RuntimeError('send after close')
        self.frames.append(frame.copy())

    def device(self):
        return self._device or 'recording0'

    def native_fourcc(self):
        return self.fourcc

    def close(self):
        self.closed = True
