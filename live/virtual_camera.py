"""Virtual camera output through pyvirtualcam: the square avatar pillarboxed into e.g. 1280x720, RGB.

When no virtual-camera backend exists the caller gets status 'unavailable' with the platform's fix; the app
keeps running (the most common complaint about these apps is a missing/grey virtual camera with no reason).
"""
from __future__ import annotations

import logging
import sys
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
    """Places a square frame centred on a fixed canvas (pillarbox / letterbox); the canvas and the target
    region are allocated once, each frame is one resize into the region."""

    def __init__(self, width: int, height: int):
        self.canvas = np.zeros((height, width, 3), np.uint8)
        side = min(width, height)
        self.x0, self.y0, self.side = (width - side) // 2, (height - side) // 2, side
        self.region = self.canvas[self.y0:self.y0 + side, self.x0:self.x0 + side]

    def place(self, frame: np.ndarray, mirror: bool = False) -> np.ndarray:
        src = frame[:, ::-1] if mirror else frame
        if src.shape[0] == self.side and src.shape[1] == self.side:
            self.region[...] = src
        else:
            interp = cv2.INTER_AREA if src.shape[0] > self.side else cv2.INTER_LINEAR
            cv2.resize(np.ascontiguousarray(src), (self.side, self.side), dst=self.region, interpolation=interp)
        return self.canvas


class VirtualCamera:
    """An open virtual camera. ``send`` takes model-size RGB frames."""

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
        log.info('virtual camera on: %s %dx%d@%g (%s backend)', self.device, width, height, fps, self._cam.backend)

    def send(self, frame: np.ndarray) -> None:
        self._cam.send(self._box.place(frame, self.mirror))
        self.frames_sent += 1

    def status(self) -> VirtualCameraStatus:
        return VirtualCameraStatus('on', f'sending to {self.device}', self.device, self.width, self.height,
                                   self.fps, self.frames_sent)

    def close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None
