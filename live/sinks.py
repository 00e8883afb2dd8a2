"""Output sinks fed with every output frame (model-size RGB) on the engine thread."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class VideoFileSink:
    """Writes output frames to a video file (H.264 .mp4 via imageio-ffmpeg; .gif/.avi/... by extension).

    Opened lazily on the first frame (the size is known then); ``close`` finalises the file.
    """

    def __init__(self, path: str | Path, fps: float = 30.0, quality: float = 7.0):
        self.path = Path(path).expanduser()
        if fps <= 0:
            raise ValueError(f'fps must be > 0, got {fps}')
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f'output folder does not exist: {self.path.parent}')
        self.fps = fps
        self.quality = quality
        self._writer = None
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            import imageio.v2 as imageio
            kwargs = {'fps': self.fps}
            if self.path.suffix.lower() in ('.mp4', '.mov', '.mkv', '.avi', ''):
                kwargs.update(quality=self.quality, macro_block_size=1, ffmpeg_log_level='error')
            self._writer = imageio.get_writer(str(self.path), **kwargs)
        self._writer.append_data(np.ascontiguousarray(frame))
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            log.info('wrote %d frames to %s', self.frames_written, self.path)
