"""Face detection on its own thread, so the engine thread never waits for it.

The engine hands over a frame after its model step (``submit``), the detector runs while the engine waits for
the next camera frame, and the next frame picks the result up (``poll``): the crop follows the face one frame
late, and detection costs the per-frame loop nothing but a hand-over. mediapipe is not torch, so this thread
does not disturb the torch thread's OpenMP team (see ``live/torch_thread.py``).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

log = logging.getLogger(__name__)
R = TypeVar('R')


class DetectionWorker(Generic[R]):
    """Runs ``detect(frame)`` on the newest submitted frame, one at a time, on a daemon thread.

    ``submit`` never blocks and is refused (returns False) while a detection is running; ``poll`` returns each
    finished ``(result, timestamp)`` once. ``discard`` drops what is running or finished (e.g. after a camera
    switch, when the result would describe the old view).
    """

    def __init__(self, detect: Callable[[np.ndarray], R], name: str = 'fomm-face-detect'):
        self._detect = detect
        self._cond = threading.Condition()
        self._job: tuple[np.ndarray, float, int] | None = None
        self._done: tuple[R, float] | None = None
        self._busy = False
        self._generation = 0
        self._closed = False
        self.runs = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, frame: np.ndarray, timestamp: float) -> bool:
        """Queue ``frame`` (not copied: the caller must not write to it afterwards) unless one is running."""
        with self._cond:
            if self._busy or self._closed:
                return False
            self._busy = True
            self._job = (frame, timestamp, self._generation)
            self._cond.notify()
            return True

    def poll(self) -> tuple[R, float] | None:
        """The finished detection, once, or None."""
        with self._cond:
            done, self._done = self._done, None
            return done

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no detection is running (tests); the result stays for ``poll``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy or self._closed, timeout)

    def discard(self) -> None:
        with self._cond:
            self._generation += 1
            self._done = None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._closed)
                if self._closed:
                    return
                frame, timestamp, generation = self._job
                self._job = None
            try:
                result = self._detect(frame)
            except Exception:  # noqa: BLE001 - a failed detection is logged and counted, the thread lives on
                log.exception('face detection failed')
                self.errors += 1
                result = None
            with self._cond:
                self.runs += 1
                if generation == self._generation:
                    self._done = (result, timestamp)
                self._busy = False
                self._cond.notify_all()
