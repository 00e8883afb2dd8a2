"""Helpers for the CLI tests: tiny checkpoints, short real clips, running the ``fomm`` entry point."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import torch

from fomm_model import build_models, save_checkpoint
from fomm_model.video_io import read_video, write_video

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
TINY_CONFIG = SHARED / 'fixtures/reference/tiny-128.yaml'
CLIPS = sorted((SHARED / 'data/faces/test').glob('*.mp4'))
AVATAR = SHARED / 'data/avatars/einstein.png'

_LAUNCHER = [sys.executable, '-m', 'fomm_model']


def fomm(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m fomm_model ARGS`` (threads limited: the test machine is shared)."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOG_minloglevel': '2'}
    return subprocess.run([*_LAUNCHER, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


def make_checkpoint(config: str | Path, path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, build_models(str(config)))
    return path


def make_clip(path: Path, frames: int = 12, clip: Path | None = None, tone: bool = False) -> Path:
    """A short real face clip; with ``tone`` a 440 Hz sine is muxed in as its sound track."""
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
