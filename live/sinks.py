"""A video file output fed with every output frame on the engine thread.

The encoding runs on its own thread through ``fomm_model.video_io.write_video``, so the file appears only when
complete (a failed or interrupted run never leaves a half file in place of an old one) and an encoder that
dies is an error, not silence. Frames of another size (another avatar) are fitted into the first frame's size.
"""
from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import numpy as np

from .virtual_camera import Letterbox

log = logging.getLogger(__name__)

_END = None


class VideoFileSink:
    """``write(frame)`` per output frame (HxWx3 uint8 RGB), ``close()`` to finish the file; both raise the
    writer's error (no space left, encoder died) so the engine can stop and say why."""

    def __init__(self, path: str | Path, fps: float = 30.0, backlog: int = 8):
        from fomm_model.video_io import check_video_output
        self.path = Path(path).expanduser()
        if fps <= 0:
            raise ValueError(f'fps must be > 0, got {fps}')
        check_video_output(self.path)
        self.fps = fps
        self.frames_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=backlog)   # full: the engine waits (every frame is kept)
        self._fit: Letterbox | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def write(self, frame: np.ndarray) -> None:
        self._raise_if_failed()
        if self._thread is None:
            h, w = frame.shape[:2]
            self._fit = Letterbox(w, h)
            self._thread = threading.Thread(target=self._encode, name='fomm-video-file', daemon=True)
            self._thread.start()
        if frame.shape[:2] != self._fit.canvas.shape[:2]:
            frame = self._fit.place(frame).copy()
        while True:
            try:
                self._queue.put(frame, timeout=0.5)
                break
            except queue.Full:
                self._raise_if_failed()
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file (it appears now); raises if writing failed."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self._queue.put(_END)
            self._thread.join()
        self._thread = None
        self._raise_if_failed()
        log.info('wrote %d frames to %s', self.frames_written, self.path)

    def _frames(self):
        while (frame := self._queue.get()) is not _END:
            yield frame

    def _encode(self) -> None:
        from fomm_model.video_io import write_video
        try:
            write_video(self.path, self._frames(), self.fps)
        except BaseException as exc:  # noqa: BLE001 - handed to the engine thread by write()/close()
            self._error = exc
            while True:   # unblock a writer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise OSError(f'{self._error}') from self._error
