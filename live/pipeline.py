"""Per-frame logic: crop -> keypoints -> smoothing -> calibration / relative motion -> generate -> mirroring.

Everything that depends only on the avatar or the anchor (source keypoints, adapt-scale factor, inverse of the
anchor's jacobians) is computed when they change, not per frame.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from fomm_model.keypoints import movement_scale, pose_distance

from .avatar import AvatarInfo
from .backends import Backend, Keypoints
from .cropper import FaceCropper
from .cv2_compat import cv2
from .one_euro import OneEuroFilter

log = logging.getLogger(__name__)


@dataclass
class EngineSettings:
    """Live-changeable settings (``Engine.update_settings(**changes)``)."""
    relative: bool = True
    adapt_scale: bool = True
    passthrough: bool = False
    mirror_preview: bool = True
    mirror_output: bool = False
    crop_zoom: float = 1.0
    crop_offset: tuple[float, float] = (0.0, 0.0)
    kp_smoothing: float = 0.0    # 0 = off .. 1 = strongest
    auto_calibrate: bool = False
    fps_cap: float | None = None
    overlay_alpha: float = 0.0   # blend avatar over camera crop in preview to match poses


@dataclass
class FrameResult:
    index: int
    timestamp: float
    camera: np.ndarray            # full camera frame RGB (mirrored if mirror_preview)
    crop_box: tuple[int, int, int, int] | None   # x0, y0, x1, y1 in (displayed) camera pixels
    face_found: bool
    driving: np.ndarray           # crop at model size RGB (mirrored if mirror_preview)
    keypoints: np.ndarray | None  # (K, 2) in [-1, 1] driving-crop coords (as displayed)
    output: np.ndarray            # animated avatar at model size RGB (mirrored if mirror_output)
    calibrated: bool
    timings_ms: dict[str, float] = field(default_factory=dict)   # capture, crop, model, output, total
    output_unmirrored: np.ndarray | None = field(default=None, repr=False)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]


def smoothing_cutoff(strength: float) -> float:
    """Keypoint One-Euro min cut-off (Hz) for a 0..1 strength: 0.01 -> ~9 Hz (barely), 1 -> 0.3 Hz (strong)."""
    return float(10.0 ** (1.0 - 1.5 * min(max(strength, 0.0), 1.0)))


class Anchor:
    """The calibration frame's keypoints and what relative motion needs from them, precomputed."""

    def __init__(self, kp: Keypoints, kp_source: Keypoints, adapt_scale: bool):
        self.kp = kp
        self.jacobian_inv = np.linalg.inv(kp.jacobian.astype(np.float64)).astype(np.float32)
        self.distance = pose_distance(_t(kp_source.value), _t(kp.value))
        self.scale = 1.0
        self.update_source(kp_source, adapt_scale)

    def update_source(self, kp_source: Keypoints, adapt_scale: bool) -> None:
        self.adapt_scale = adapt_scale
        self.scale = movement_scale({'value': _t(kp_source.value)}, {'value': _t(self.kp.value)}) \
            if adapt_scale else 1.0
        self.distance = pose_distance(_t(kp_source.value), _t(self.kp.value))
        self._source_jacobian = kp_source.jacobian
        self._jinv_js = self.jacobian_inv @ kp_source.jacobian  # J0^-1 Js, constant until avatar/anchor change

    def normalize(self, kp: Keypoints, kp_source: Keypoints) -> Keypoints:
        """value' = s (v - v0) + vs ; J' = J J0^-1 Js (relative motion with adapt-scale, as the original)."""
        value = (kp.value - self.kp.value) * self.scale + kp_source.value
        jacobian = kp.jacobian @ self._jinv_js
        return Keypoints(value.astype(np.float32), jacobian.astype(np.float32))


class Pipeline:
    """One frame in, one FrameResult out; owns calibration state. Called from one thread."""

    def __init__(self, backend: Backend, cropper: FaceCropper, size: tuple[int, int]):
        self.backend = backend
        self.cropper = cropper
        self.size = size
        self.avatar: AvatarInfo | None = None
        self.kp_source: Keypoints | None = None
        self.anchor: Anchor | None = None
        self._calibrate_next = False
        self._kp_filter: OneEuroFilter | None = None
        self._kp_strength = 0.0
        self.auto_calibrations = 0
        self.last_match: float | None = None   # pose distance of the current frame to the avatar

    # -- state changes (called between frames, on the engine thread) ------------------------------
    def set_avatar(self, avatar: AvatarInfo) -> None:
        self.kp_source = self.backend.set_source(avatar.image)
        self.avatar = avatar
        if self.anchor is not None:
            self.anchor.update_source(self.kp_source, self.anchor.adapt_scale)

    def request_calibration(self) -> None:
        self._calibrate_next = True

    def reset_calibration(self) -> None:
        self.anchor = None
        self.cropper.unlock_scale()

    @property
    def calibrated(self) -> bool:
        return self.anchor is not None

    def set_anchor(self, kp: Keypoints, adapt_scale: bool) -> None:
        if self.kp_source is None:
            return
        self.anchor = Anchor(kp, self.kp_source, adapt_scale)
        self.cropper.lock_scale()
        log.info('calibrated (adapt-scale %.3f, pose distance to avatar %.3f)', self.anchor.scale,
                 self.anchor.distance)

    def _smooth(self, kp: Keypoints, strength: float, t: float) -> Keypoints:
        if strength <= 0:
            self._kp_filter = None
            return kp
        if self._kp_filter is None or strength != self._kp_strength:
            self._kp_filter = OneEuroFilter(min_cutoff=smoothing_cutoff(strength), beta=0.5, d_cutoff=1.0)
            self._kp_strength = strength
        flat = np.concatenate([kp.value.ravel(), kp.jacobian.ravel()])
        out = self._kp_filter(flat, t).astype(np.float32)
        n = kp.value.size
        return Keypoints(out[:n].reshape(kp.value.shape), out[n:].reshape(kp.jacobian.shape))

    # -- the frame ------------------------------------------------------------------------------
    def process(self, image: np.ndarray, index: int, timestamp: float, s: EngineSettings) -> FrameResult:
        t0 = time.perf_counter()
        crop = self.cropper.process(image, timestamp, s.crop_zoom, s.crop_offset)
        t1 = time.perf_counter()
        kp = None
        if s.passthrough or self.avatar is None:
            output = crop.crop
        else:
            kp = self._smooth(self.backend.keypoints(crop.crop), s.kp_smoothing, timestamp)
            if self._calibrate_next or (s.auto_calibrate and self.anchor is None and crop.face_found):
                self._calibrate_next = False
                self.set_anchor(kp, s.adapt_scale)
            elif self.anchor is not None and self.anchor.adapt_scale != s.adapt_scale:
                self.anchor.update_source(self.kp_source, s.adapt_scale)
            if s.auto_calibrate and self.anchor is not None and crop.face_found:
                self.last_match = pose_distance(_t(self.kp_source.value), _t(kp.value))
                if self.last_match < 0.9 * self.anchor.distance:  # hysteresis against flicker
                    self.set_anchor(kp, s.adapt_scale)
                    self.auto_calibrations += 1
            if not s.relative:
                output = self.backend.generate(kp)
            elif self.anchor is None:
                output = self.avatar.image  # before calibration: the avatar, unmoved
            else:
                output = self.backend.generate(self.anchor.normalize(kp, self.kp_source))
        t2 = time.perf_counter()
        result = self._present(image, crop, kp, output, index, timestamp, s)
        # the keypoints tell the cropper whether the face moved (detection due); the asynchronous one detects now
        self.cropper.after_frame(image, timestamp, kp.value if kp is not None and crop.face_found else None)
        t3 = time.perf_counter()
        result.timings_ms.update(crop=(t1 - t0) * 1000, model=(t2 - t1) * 1000, present=(t3 - t2) * 1000)
        return result

    def _present(self, image, crop, kp, output, index, timestamp, s: EngineSettings) -> FrameResult:
        """Preview/output images: mirroring, avatar overlay. Only work the settings ask for."""
        driving = crop.crop
        if s.overlay_alpha > 0 and self.avatar is not None:
            a = float(min(s.overlay_alpha, 1.0))
            driving = cv2.addWeighted(self.avatar.image, a, driving, 1.0 - a, 0.0)
        box = crop.box
        keypoints = kp.value.copy() if kp is not None else None
        camera = image
        if s.mirror_preview:
            w = image.shape[1]
            camera = np.ascontiguousarray(image[:, ::-1])
            driving = np.ascontiguousarray(driving[:, ::-1])
            box = (w - box[2], box[1], w - box[0], box[3])
            if keypoints is not None:
                keypoints[:, 0] = -keypoints[:, 0]
        shown = np.ascontiguousarray(output[:, ::-1]) if s.mirror_output else output
        return FrameResult(index=index, timestamp=timestamp, camera=camera, crop_box=box, face_found=crop.face_found,
                           driving=driving, keypoints=keypoints, output=shown, calibrated=self.calibrated,
                           timings_ms={}, output_unmirrored=output)
