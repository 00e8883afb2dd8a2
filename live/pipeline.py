"""Per-frame logic: crop -> keypoints -> smoothing -> calibration -> relative motion -> generate -> present.

Relative motion is the model package's (:class:`fomm_model.Animator` and its ``RelativeMotion``); this module
adds what a live camera needs: calibration that waits for a face, auto-calibration, and what to show when the
face is lost (the avatar eases back to its resting pose and eases into the tracked pose again when the face
returns, instead of melting on an empty crop).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from fomm_model import Animator, Keypoints
from fomm_model.keypoints import pose_distance
from fomm_model.smoothing import KeypointSmoother

from .avatar import AvatarInfo
from .cropper import KEYPOINT_JUMP, FaceCropper
from .cv2_compat import cv2
from .options import Settings

log = logging.getLogger(__name__)

EASE_OUT_S = 0.6   # time constant of the drift back to the resting pose while no face is seen
EASE_IN_S = 0.15   # time constant of the return to the tracked pose when the face is back
EASE_IN_FRAMES = 12
AUTO_CALIBRATION_GAIN = 0.9   # re-anchor only on a clearly better match (hysteresis against flicker)


@dataclass
class FrameResult:
    index: int
    timestamp: float
    camera: np.ndarray            # full camera frame RGB (mirrored if mirror_preview)
    crop_box: tuple[int, int, int, int] | None   # x0, y0, x1, y1 in (displayed) camera pixels
    face_found: bool
    driving: np.ndarray           # crop at model size RGB (mirrored if mirror_preview)
    keypoints: np.ndarray | None  # (K, 2) in [-1, 1] driving-crop coords (as displayed)
    output: np.ndarray            # what goes out (mirrored if mirror_output): the avatar, animated
    calibrated: bool
    status: str = ''              # 'no face', 'waiting for a face to calibrate', ...
    timings_ms: dict[str, float] = field(default_factory=dict)   # capture, crop, model, output, total
    output_unmirrored: np.ndarray | None = field(default=None, repr=False)


def blend(a: Keypoints, b: Keypoints, weight_b: float) -> Keypoints:
    """(1 - w) a + w b, value and jacobian."""
    w = np.float32(weight_b)
    return Keypoints(a.value + w * (b.value - a.value), a.jacobian + w * (b.jacobian - a.jacobian))


class Pipeline:
    """One frame in, one FrameResult out; owns calibration and face-loss state. Called from one thread."""

    def __init__(self, animator: Animator, cropper: FaceCropper):
        self.animator = animator
        self.cropper = cropper
        self.avatar: AvatarInfo | None = None
        self.anchor_distance: float | None = None   # pose distance of the anchor to the avatar
        self.last_match: float | None = None        # pose distance of the current frame to the avatar
        self.auto_calibrations = 0
        self.compositor = None                      # pastes the animated face into the whole avatar image
        self._calibrate_next = False
        self._kp_smoother = KeypointSmoother()
        self.shown: Keypoints | None = None         # normalised keypoints last animated
        self._lost_since: float | None = None
        self._recovering = 0
        self._last_raw: np.ndarray | None = None   # the previous frame's keypoints, for the glitch guard
        self._last_t: float | None = None

    # -- state changes (between frames) --------------------------------------------------------------
    def set_avatar(self, avatar: AvatarInfo) -> None:
        self.animator.set_source(avatar.image)
        self.avatar = avatar
        self.compositor = avatar.compositor()
        self.shown = None
        self._update_anchor_distance()

    def request_calibration(self) -> None:
        self._calibrate_next = True

    def reset_calibration(self) -> None:
        self.animator.clear_anchor()
        self.anchor_distance = None
        self._calibrate_next = False
        self.cropper.unlock_scale()

    @property
    def calibrated(self) -> bool:
        return self.animator.kp_anchor is not None

    @property
    def calibration_pending(self) -> bool:
        return self._calibrate_next

    def set_anchor(self, kp: Keypoints) -> None:
        self.animator.set_anchor(kp)
        self.cropper.lock_scale()
        self._update_anchor_distance()
        log.info('calibrated (adapt-scale %.3f, pose distance to avatar %.3f)', self.animator.motion.scale,
                 self.anchor_distance)

    def _update_anchor_distance(self) -> None:
        a = self.animator
        self.anchor_distance = pose_distance(a.kp_source, a.kp_anchor) \
            if a.kp_source is not None and a.kp_anchor is not None else None

    def _smooth(self, kp: Keypoints, strength: float, t: float) -> Keypoints:
        self._kp_smoother.strength = strength
        return self._kp_smoother(kp, t)

    # -- the frame ----------------------------------------------------------------------------------
    def process(self, image: np.ndarray, index: int, timestamp: float, s: Settings) -> FrameResult:
        t0 = time.perf_counter()
        crop = self.cropper.process(image, timestamp, s.crop_zoom, s.crop_offset)
        # without a detector (mediapipe missing) there is no face information: treat the crop as a face
        face = crop.face_found or self.cropper.detector is None
        t1 = time.perf_counter()
        kp, status = None, ''
        animator = self.animator
        if animator.relative != s.relative:
            animator.relative = s.relative
        animator.adapt_scale = s.adapt_scale
        animator.mouth_gain = animator.default_mouth_gain if s.mouth_gain is None else s.mouth_gain
        if s.passthrough or self.avatar is None:
            output = crop.crop
        else:
            kp = self._smooth(animator.keypoints(crop.crop), s.kp_smoothing, timestamp)
            status = self._calibrate(kp, face, s)
            output, moving_status = self._animate(kp, face, timestamp, s)
            status = status or moving_status
        t2 = time.perf_counter()
        result = self._present(image, crop, kp, output, index, timestamp, s, face, status)
        # the keypoints tell the cropper whether the face moved (detection due); the asynchronous one detects now
        self.cropper.after_frame(image, timestamp, kp.value if kp is not None and crop.face_found else None)
        t3 = time.perf_counter()
        result.timings_ms.update(crop=(t1 - t0) * 1000, model=(t2 - t1) * 1000, present=(t3 - t2) * 1000)
        return result

    def _calibrate(self, kp: Keypoints, face: bool, s: Settings) -> str:
        """Anchor when asked (or automatically) on a frame with a face; otherwise wait and say so."""
        wanted = self._calibrate_next or (s.auto_calibrate and not self.calibrated)
        if wanted and not face:
            if self._calibrate_next:
                return 'no face: calibration waits for a face'
            return ''
        if wanted:
            self._calibrate_next = False
            self.set_anchor(kp)
            return ''
        if s.auto_calibrate and face and self.calibrated:
            self.last_match = pose_distance(self.animator.kp_source, kp)
            if self.last_match < AUTO_CALIBRATION_GAIN * self.anchor_distance:
                self.set_anchor(kp)
                self.auto_calibrations += 1
        return ''

    def _animate(self, kp: Keypoints, face: bool, t: float, s: Settings) -> tuple[np.ndarray, str]:
        """The model's output for this frame, easing to the resting pose while the face is lost."""
        dt = 1 / 30 if self._last_t is None else min(max(t - self._last_t, 1e-3), 0.5)
        self._last_t = t
        a = self.animator
        if s.relative and not self.calibrated:
            return self.avatar.image, ''  # before calibration: the avatar, unmoved
        jump = np.abs(kp.value - self._last_raw).max() if self._last_raw is not None else 0.0
        self._last_raw = kp.value
        if face and jump > KEYPOINT_JUMP and self.shown is not None:
            return a.generate(self.shown), ''  # hold: the face probably left; the next detection tells
        if face:
            target = a.normalize(kp)
            if self._lost_since is not None:
                log.info('face back after %.1f s', t - self._lost_since)
                self._lost_since, self._recovering = None, EASE_IN_FRAMES
            if self._recovering and self.shown is not None:
                self._recovering -= 1
                target = blend(self.shown, target, 1 - math.exp(-dt / EASE_IN_S) if self._recovering else 1.0)
            status = ''
        else:
            if self._lost_since is None:
                self._lost_since = t
                log.info('no face in the crop: easing the avatar back to its resting pose')
            rest = a.kp_source
            target = blend(self.shown if self.shown is not None else rest, rest, 1 - math.exp(-dt / EASE_OUT_S))
            status = 'no face'
        self.shown = target
        return a.generate(target), status

    def _present(self, image, crop, kp, output, index, timestamp, s: Settings, face: bool,
                 status: str) -> FrameResult:
        """Preview and output images: paste-back, mirroring, avatar overlay. Only work the settings ask for."""
        driving = crop.crop
        if s.overlay_alpha > 0 and self.avatar is not None:
            a = float(min(s.overlay_alpha, 1.0))
            driving = cv2.addWeighted(self.avatar.image, a, driving, 1.0 - a, 0.0)
        if s.paste_back and self.compositor is not None and not s.passthrough:
            output = self.compositor(output)
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
        return FrameResult(index=index, timestamp=timestamp, camera=camera, crop_box=box, face_found=face,
                           driving=driving, keypoints=keypoints, output=shown, calibrated=self.calibrated,
                           status=status, output_unmirrored=output)
