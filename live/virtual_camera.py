"""Virtual camera output through pyvirtualcam: the avatar fitted into e.g. 1280x720 (pillarboxed), RGB.

When no virtual-camera backend exists the caller gets status 'unavailable' with the platform's fix; the app
keeps running (the most common complaint about these apps is a missing/grey virtual camera with no reason).
"""
from __future__ import annotations

import logging
import sys
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from .cv2_compat import cv2

log = logging.getLogger(__name__)

LINUX_FIX = ('load v4l2loopback: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="fomm-live" '
             '(install it with: sudo apt install v4l2loopback-dkms); exclusive_caps=1 is needed for Chrome/Zoom')
OTHER_FIX = 'install OBS Studio (https://obsproject.com) and start its virtual camera once, then stop it and retry'


def platform_fix(platform: str | None = None) -> str:
    return LINUX_FIX if (platform or sys.platform).startswith('linux') else OTHER_FIX


@dataclass
class VirtualCameraStatus:
    state: str                 # 'on' | 'off' | 'unavailable'
    message: str = ''          # what is running, or the fix to apply
    device: str | None = None
    width: int = 0
    height: int = 0
    fps: float = 0.0
    frames_sent: int = 0


class VirtualCameraUnavailable(RuntimeError):
    """No virtual-camera device could be opened; the message has the fix."""


class Letterbox:
    """Fits frames, keeping their aspect ratio, centred on a fixed canvas (pillarbox / letterbox); the canvas is
    allocated once and the target region once per frame shape, so each frame is one resize into the region."""

    def __init__(self, width: int, height: int):
        self.canvas = np.zeros((height, width, 3), np.uint8)
        self._shape: tuple[int, int] | None = None
        self.region = self.canvas

    def _fit(self, h: int, w: int) -> None:
        ch, cw = self.canvas.shape[:2]
        scale = min(cw / w, ch / h)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        x0, y0 = (cw - rw) // 2, (ch - rh) // 2
        self.canvas[...] = 0
        self.region = self.canvas[y0:y0 + rh, x0:x0 + rw]
        self._shape = (h, w)

    def place(self, frame: np.ndarray, mirror: bool = False) -> np.ndarray:
        if self._shape != frame.shape[:2]:
            self._fit(*frame.shape[:2])
        src = frame[:, ::-1] if mirror else frame
        rh, rw = self.region.shape[:2]
        if src.shape[:2] == (rh, rw):
            self.region[...] = src
        else:
            interp = cv2.INTER_AREA if src.shape[0] > rh else cv2.INTER_LINEAR
            cv2.resize(np.ascontiguousarray(src), (rw, rh), dst=self.region, interpolation=interp)
        return self.canvas


class VirtualCamera:
    """An open virtual camera. ``send`` takes model-size RGB frames, at once or held until a due time.

    Holding is the output delay for audio sync (``--output-delay``): each frame goes out a fixed time after its
    camera frame was captured, so the call's microphone can be delayed by the same amount (call apps and OBS
    have an audio delay setting) and the avatar's mouth stays in time with the voice. Held frames go out in
    order from :meth:`flush`, which the owner calls whenever it can (the engine: before each frame and while it
    waits for one)."""

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30, device: str | None = None,
                 mirror: bool = False, backend: str | None = None):
        if width < 16 or height < 16 or fps <= 0:
            raise ValueError(f'invalid virtual camera format {width}x{height}@{fps}')
        try:
            import pyvirtualcam
        except ImportError as exc:
            raise VirtualCameraUnavailable(f'pyvirtualcam is not installed (pip install pyvirtualcam); then '
                                           f'{platform_fix()}') from exc
        try:
            self._cam = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, device=device,
                                            backend=backend)
        except Exception as exc:  # noqa: BLE001 - pyvirtualcam raises RuntimeError listing each backend's error
            raise VirtualCameraUnavailable(f'no virtual camera available ({str(exc).strip()}). Fix: '
                                           f'{platform_fix()}') from exc
        self.mirror = mirror
        self.follow_setting = False  # True: the engine sets ``mirror`` from its mirror_output setting
        self.width, self.height, self.fps = width, height, fps
        self.device = self._cam.device
        self._box = Letterbox(width, height)
        self.frames_sent = 0
        self._held: deque[tuple[float, np.ndarray, bool]] = deque()   # (due, frame, mirror), in order
        log.info('virtual camera on: %s %dx%d@%g (%s backend)', self.device, width, height, fps, self._cam.backend)

    def send(self, frame: np.ndarray, due: float | None = None) -> None:
        """Send ``frame`` now, or hold it until ``due`` (``time.perf_counter()`` seconds); frames are never
        reordered, so one due earlier than a held one waits for it."""
        if due is not None and (self._held or due > time.perf_counter()):
            self._held.append((due, frame, self.mirror))
            self.flush()
            return
        self.flush(until=float('inf'))   # a delay turned off: what was held goes first
        self._send(frame, self.mirror)

    def flush(self, until: float | None = None) -> None:
        """Send the held frames due by ``until`` (default: now)."""
        until = time.perf_counter() if until is None else until
        while self._held and self._held[0][0] <= until:
            _, frame, mirror = self._held.popleft()
            self._send(frame, mirror)

    def next_due(self) -> float | None:
        """When the next held frame is due (None: nothing held)."""
        return self._held[0][0] if self._held else None

    def _send(self, frame: np.ndarray, mirror: bool) -> None:
        self._cam.send(self._box.place(frame, mirror))
        self.frames_sent += 1

    def status(self) -> VirtualCameraStatus:
        return VirtualCameraStatus('on', f'sending to {self.device}', self.device, self.width, self.height,
                                   self.fps, self.frames_sent)

    def close(self) -> None:
        self._held.clear()
        if self._cam is not None:
            self._cam.close()
            self._cam = None
