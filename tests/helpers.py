"""Helpers shared by the tests (plain functions and paths; no tests here): tiny checkpoints, short real clips,
running the ``fomm`` entry point, and the in-memory virtual-camera backend."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
TINY_CONFIG = SHARED / 'fixtures/reference/tiny-128.yaml'
CLIPS = sorted((SHARED / 'data/faces/test').glob('*.mp4'))
FACE_CLIP = SHARED / 'data' / 'faces' / 'test' / 'dpe_d#misc__dpe_d.mp4'
AVATAR = SHARED / 'data' / 'avatars' / 'mona_lisa.png'
EINSTEIN = SHARED / 'data' / 'avatars' / 'einstein.png'

_LAUNCHER = [sys.executable, '-m', 'fomm_model']


def fomm(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m fomm_model ARGS`` (threads limited: the test machine is shared)."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOG_minloglevel': '2'}
    return subprocess.run([*_LAUNCHER, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


def make_checkpoint(path: Path, config: str | Path = 'face-128', seed: int = 0,
                    with_discriminator: bool = False) -> Path:
    """A random-weight checkpoint of ``config`` (tests must not depend on the trained default model)."""
    import torch

    from fomm_model import build_models, save_checkpoint
    torch.manual_seed(seed)
    save_checkpoint(path, build_models(str(config), with_discriminator=with_discriminator))
    return path


def skip_unless_installed(backend: str) -> None:
    """Skip the calling test, saying why, when the optional runtime behind ``backend`` (onnx, openvino) is missing."""
    import pytest

    from fomm_model.inference import select
    missing = select.installed(backend)
    if missing:
        pytest.skip(missing)


def load_bundled(with_discriminator: bool | None = None):
    """The bundled default model (``fomm_model.defaults``: whichever model the project ships)."""
    from fomm_model import load_checkpoint
    from fomm_model.defaults import DEFAULT_CONFIG, default_checkpoint_path
    return load_checkpoint(DEFAULT_CONFIG, default_checkpoint_path(), with_discriminator=with_discriminator)


def bundled_num_kp() -> int:
    """How many keypoints the bundled model has (tests that count them follow the shipped model)."""
    from fomm_model import load_config
    from fomm_model.defaults import DEFAULT_CONFIG
    return load_config(DEFAULT_CONFIG)['model_params']['common_params']['num_kp']


def make_clip(path: Path, frames: int = 12, clip: Path | None = None, tone: bool = False) -> Path:
    """A short real face clip; with ``tone`` a 440 Hz sine is muxed in as its sound track."""
    import imageio_ffmpeg

    from fomm_model.video_io import read_video, write_video
    data, fps = read_video(clip or CLIPS[0], max_frames=frames)
    if not tone:
        write_video(path, data, fps)
        return path
    silent = path.with_name('silent_' + path.name)
    write_video(silent, data, fps)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-loglevel', 'error', '-y', '-i', str(silent), '-f', 'lavfi',
                    '-i', 'sine=frequency=440:duration=5', '-map', '0:v', '-map', '1:a', '-c:v', 'copy',
                    '-c:a', 'aac', '-shortest', str(path)], check=True)
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
        self.sent_at: list[float] = []    # time.perf_counter() of each frame
        self.closed = False
        RecordingBackend.instances.append(self)

    def send(self, frame):
        if self.closed:
            raise RuntimeError('send after close')
        self.frames.append(frame.copy())
        self.sent_at.append(time.perf_counter())

    def device(self):
        return self._device or 'recording0'

    def native_fourcc(self):
        return self.fourcc

    def close(self):
        self.closed = True


def loss_test_config(root: Path, loss: dict, **train) -> dict:
    """tiny-128 on the clips of ``root`` (no augmentation) for a few quick steps of one training term: pixel L1
    plus ``loss`` (no perceptual net), ``train`` added to or overriding train_params."""
    import yaml
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config['dataset_params'].update(root_dir=str(root), augmentation_params={})
    config['dataset_params'].pop('pairs_list', None)
    config['train_params'].update(num_epochs=1, num_repeats=8, batch_size=2, checkpoint_freq=1, epoch_milestones=[],
                                  lr_generator=1e-3, lr_kp_detector=1e-3, lr_discriminator=1e-3)
    config['train_params'].update(train)
    config['train_params']['loss_weights'] = {'perceptual': [0], 'l1': 1, 'equivariance_value': 0,
                                              'equivariance_jacobian': 0, **loss}
    return config
