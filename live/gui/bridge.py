"""Hand engine frames to the GUI thread: newest frame only, never blocking the engine, never piling up.

The engine calls :meth:`FrameBridge.push` on its own thread. The frame replaces any frame still waiting,
and at most one queued wake-up is in flight, so a slow GUI (a modal dialog, a busy paint) costs dropped
preview frames, never engine latency or memory.
"""
from __future__ import annotations

import threading
from typing import Any

from PyQt6.QtCore import QObject, Qt, pyqtSignal


class FrameBridge(QObject):
    """``frame_ready`` is emitted on the GUI thread with the newest pushed frame."""

    frame_ready = pyqtSignal(object)
    _wake = pyqtSignal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._pending: Any = None
        self._scheduled = False
        self._closed = False
        self.pushed = 0       # frames handed in by the engine
        self.delivered = 0    # frames that reached the GUI
        self._wake.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def push(self, frame: Any) -> None:
        """Thread-safe and non-blocking; called on the engine thread."""
        with self._lock:
            if self._closed:
                return
            self.pushed += 1
            self._pending = frame
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._wake.emit()
        except RuntimeError:  # the Qt side is gone (window closed while the engine still runs)
            with self._lock:
                self._closed = True

    def close(self) -> None:
        """Stop delivering: frames pushed afterwards (an engine still shutting down) are ignored."""
        with self._lock:
            self._closed = True
            self._pending = None

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one before the GUI got to them."""
        with self._lock:
            return self.pushed - self.delivered - (1 if self._pending is not None else 0)

    def _deliver(self) -> None:
        with self._lock:
            frame, self._pending = self._pending, None
            self._scheduled = False
            if self._closed or frame is None:
                return
            self.delivered += 1
        self.frame_ready.emit(frame)
