"""Capture thread: always hands on the newest frame, drops stale ones, reopens lost cameras.

A slow consumer never makes latency grow: the thread keeps one slot and overwrites it (counting drops).
With ``realtime=False`` (offline processing of a file) it waits for the consumer instead, so every frame
is processed. With ``inline=True`` (the engine's choice for a file processed offline) there is no thread: each
``read`` decodes the next frame on the caller's thread, so decoding never competes with the model for the cores
(a decoder thread running beside the model cost OpenVINO's 10 ms step ~2 points more than decoding in turn).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .cameras import SourceSpec
from .cv2_compat import cv2

log = logging.getLogger(__name__)


class ReaderError(RuntimeError):
    """A reader could not open or lost its device."""


class SourceUnreadable(ReaderError):
    """A file that is no video this app can decode: retrying cannot help, so the capture fails at once."""


class FrameReader(Protocol):
    """One opened source. ``read`` returns an RGB frame, None at the end of a (non-looping) file,
    and raises when the device is lost."""
    fps: float | None
    size: tuple[int, int]  # (width, height) actually delivered
    live: bool

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


class CameraReader:
    """A webcam or stream through cv2.VideoCapture, asking for MJPG at the wanted resolution/fps
    (uncompressed 1080p falls to a few fps on many USB cameras)."""

    live = True

    def __init__(self, spec: SourceSpec, width: int | None = 1280, height: int | None = 720,
                 fps: float | None = 30):
        target = spec.index if spec.kind == 'camera' else spec.location
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            self.cap.release()
            raise ReaderError(f'could not open {spec.label}')
        if spec.kind == 'camera':
            self.cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*'MJPG'))
            if width and height:
                self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps:
                self.cap.set(cv2.CAP_PROP_FPS, fps)
            self.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer frames queued inside the driver
        self.size = (int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        reported = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(reported) if reported and reported > 0 else None
        self.label = spec.label

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok or frame is None:
            raise ReaderError(f'{self.label} stopped delivering frames')
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.cap.release()


# Files up to 720p are decoded on one thread: FFmpeg's default (a thread per core) took 0.65 ms of CPU per
# 256x256 frame against 0.36 ms on one, CPU taken from the model running on the same cores; one thread still
# decodes 720p H.264 several times faster than 30 fps.
SINGLE_THREAD_DECODE_PIXELS = 1280 * 720


class FileReader:
    """A video file used as a camera, optionally looping (rewinds at the end)."""

    live = False

    def __init__(self, path: str, loop: bool = True):
        self.path = path
        self.loop = loop
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened() or not self.cap.grab():
            self.cap.release()
            size = Path(path).stat().st_size if Path(path).is_file() else 0
            why = 'it is empty' if size == 0 else 'it is not a video OpenCV can decode (or it is damaged)'
            raise SourceUnreadable(f'cannot read video file {path}: {why}; give a video file such as .mp4, '
                                   f'a camera index or a stream URL')
        self.size = (int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if self.size[0] * self.size[1] <= SINGLE_THREAD_DECODE_PIXELS and hasattr(cv2, 'CAP_PROP_N_THREADS'):
            single = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])  # fixed at opening
            if single.isOpened():
                self.cap.release()
                self.cap = single
            else:
                single.release()
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        reported = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(reported) if reported and reported > 0 else None
        self._frames = 0

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok:
            if not self.loop or self._frames == 0:
                return None
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
            if not ok:
                return None
        self._frames += 1
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.cap.release()


def reader_factory(spec: SourceSpec, loop: bool = True, width: int | None = 1280, height: int | None = 720,
                   fps: float | None = 30) -> Callable[[], FrameReader]:
    if spec.kind == 'file':
        return lambda: FileReader(spec.location, loop=loop)
    return lambda: CameraReader(spec, width, height, fps)


@dataclass
class CapturedFrame:
    index: int          # running number of frames read from the source (gaps = dropped)
    timestamp: float    # time.perf_counter() when the frame was read
    image: np.ndarray   # HxWx3 uint8 RGB
    read_ms: float      # time spent in the reader for this frame


class Capture:
    """Reads frames on a background thread into a newest-frame slot (``inline``: on the reader's thread, no slot).

    States: 'opening', 'running', 'reconnecting' (device lost or not openable; retried with backoff),
    'ended' (a non-looping file finished), 'failed' (a file that cannot be decoded), 'stopped'.
    """

    def __init__(self, factory: Callable[[], FrameReader], *, realtime: bool = True, name: str = 'source',
                 backoff: tuple[float, float] = (0.25, 4.0), pace: bool | None = None,
                 notify: Callable[[], None] | None = None, inline: bool = False):
        self._factory = factory
        self.inline = inline
        self._reader: FrameReader | None = None   # inline mode: the open reader
        self._notify = notify or (lambda: None)  # called (on this thread) when a frame arrives or the state changes
        self.realtime = realtime
        self.name = name
        self._backoff = backoff
        self._pace = pace  # None: pace non-live sources at their fps when realtime
        self._cond = threading.Condition()
        self._slot: CapturedFrame | None = None
        self._slot_taken = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = 'stopped'
        self.message = ''
        self.frames_read = 0
        self.dropped = 0
        self.reopens = 0
        self.size: tuple[int, int] | None = None
        self.nominal_fps: float | None = None
        self.measured_fps = 0.0
        self._last_read: float | None = None

    # -- consumer side --------------------------------------------------------------------------
    def read(self, timeout: float | None = None) -> CapturedFrame | None:
        """The newest frame not yet handed out; None on timeout (0: do not wait) or when the source has ended."""
        if self.inline:
            return self._read_inline()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot_taken:
                if self.state in ('ended', 'stopped', 'failed') and self._slot_taken:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.5)
            self._slot_taken = True
            self._cond.notify_all()
            return self._slot

    @property
    def finished(self) -> bool:
        """True once a non-looping file has ended (or failed) and its last frame was taken."""
        with self._cond:
            return self.state in ('ended', 'stopped', 'failed') and self._slot_taken

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.inline:
            if self._reader is None:
                self._open_inline()
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self.state = 'opening'
        self._thread = threading.Thread(target=self._run, name=f'capture-{self.name}', daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._close_inline()
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.state not in ('ended', 'failed'):   # keep saying why it ended
            self._set_state('stopped', '')

    def _set_state(self, state: str, message: str) -> None:
        with self._cond:
            if state != self.state or message != self.message:
                (log.warning if state == 'reconnecting' else log.info)('capture %s: %s %s', self.name, state,
                                                                       message)
            self.state, self.message = state, message
            self._cond.notify_all()
        self._notify()

    # -- inline mode (no thread) -------------------------------------------------------------------
    def _open_inline(self) -> None:
        self._set_state('opening', '')
        try:
            reader = self._factory()
        except Exception as exc:  # noqa: BLE001 - a file that cannot be opened now will not open on a retry
            self._set_state('failed', str(exc))
            return
        self._reader = reader
        self._opened(reader)

    def _read_inline(self) -> CapturedFrame | None:
        if self._reader is None:
            return None
        t0 = time.perf_counter()
        try:
            image = self._reader.read()
        except Exception as exc:  # noqa: BLE001 - reported as the capture's failure, not raised into the engine
            self._close_inline()
            self._set_state('failed', f'cannot decode {self.name}: {exc}')
            return None
        if image is None:
            self._close_inline()
            self._set_state('ended', 'end of file')
            return None
        return self._captured(image, t0)

    def _close_inline(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    # -- producer side ---------------------------------------------------------------------------
    def _opened(self, reader: FrameReader) -> None:
        self.size = tuple(reader.size) if reader.size and reader.size[0] > 0 else None
        self.nominal_fps = reader.fps
        self._set_state('running', f'{self.size[0]}x{self.size[1]}' if self.size else '')

    def _captured(self, image: np.ndarray, t0: float) -> CapturedFrame:
        """A frame just read (reading began at ``t0``), counted, with the measured rate updated."""
        t1 = time.perf_counter()
        if self.size is None or (image.shape[1], image.shape[0]) != self.size:
            self.size = (image.shape[1], image.shape[0])
        if self._last_read is not None:
            dt = t1 - self._last_read
            inst = 1.0 / dt if dt > 0 else 0.0
            self.measured_fps = inst if self.measured_fps == 0 else 0.9 * self.measured_fps + 0.1 * inst
        self._last_read = t1
        frame = CapturedFrame(self.frames_read, t1, image, (t1 - t0) * 1000)
        self.frames_read += 1
        return frame

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            try:
                reader = self._factory()
            except SourceUnreadable as exc:
                self._set_state('failed', str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - any open failure is retried, and reported
                self._set_state('reconnecting', f'{exc}; retrying in {delay:.1f} s')
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            self._opened(reader)
            try:
                outcome = self._pump(reader)
            finally:
                reader.close()
            if outcome == 'ended':
                self._set_state('ended', 'end of file')
                return
            if outcome == 'lost':
                self.reopens += 1
                delay = self._backoff[0]
                self._stop.wait(delay)
        self._set_state('stopped', '')

    def _pump(self, reader: FrameReader) -> str:
        pace = self._pace if self._pace is not None else (self.realtime and not reader.live)
        period = 1.0 / reader.fps if pace and reader.fps else 0.0
        next_due = time.perf_counter()
        self._last_read = None
        while not self._stop.is_set():
            if period:
                wait = next_due - time.perf_counter()
                if wait > 0:
                    self._stop.wait(wait)
                next_due = max(next_due + period, time.perf_counter() - period)
            t0 = time.perf_counter()
            try:
                image = reader.read()
            except Exception as exc:  # noqa: BLE001 - a lost device: reopen instead of crashing
                self._set_state('reconnecting', f'{exc}; reopening')
                return 'lost'
            if image is None:
                return 'ended'
            frame = self._captured(image, t0)
            with self._cond:
                if not self.realtime:
                    while not self._slot_taken and not self._stop.is_set():
                        self._cond.wait(0.5)
                elif not self._slot_taken:
                    self.dropped += 1
                self._slot, self._slot_taken = frame, False
                self._cond.notify_all()
            self._notify()
        return 'stopped'
