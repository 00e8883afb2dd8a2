"""Face crop for the driving video: detect, frame like the training crops, smooth, hold when lost.

The crop is a square around the face, framed like the model's training clips
(``fomm_model.face_detection.FACE_FRAMING``), smoothed with One-Euro filters on centre and size so a still face
gives a still crop while movement is followed. At calibration the size is locked (the model's keypoints are
relative to the crop, so a changing crop size would read as the face growing or shrinking).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fomm_model.face_detection import FACE_FRAMING, Framing
from fomm_model.smoothing import OneEuroFilter

from .detection_worker import DetectionWorker
from .resize import downscale

log = logging.getLogger(__name__)

# A keypoint moving more than this (in crop units, [-1, 1]) between two frames is not a face moving (talking
# clips: under 0.02 a frame; a face leaving the crop: 0.35): the face probably left, so detection runs at once
# (and the pipeline holds the pose until it has).
KEYPOINT_JUMP = 0.1


@dataclass
class CropResult:
    box: tuple[int, int, int, int]   # x0, y0, x1, y1 in frame pixels (x1, y1 exclusive)
    face_found: bool                 # a face was seen in this frame (or at the last detection, between runs)
    crop: np.ndarray                 # model-size RGB


class FaceCropper:
    """Square face crop at the model size.

    ``detector`` is a ``FaceDetector`` (anything with ``detect(rgb) -> list[FaceBox]``) or None for a fixed
    centre crop (the caller must announce that fallback). Detection runs on a copy downscaled to at most
    ``detect_max_side`` pixels (BlazeFace itself looks at 128x128, so 256 loses nothing): every frame while
    no face is seen, else every ``detect_every`` frames while the face moves in the crop and every
    ``detect_every_still`` frames while it does not, and at once when a keypoint jumps (``KEYPOINT_JUMP``). The
    caller reports that motion through ``after_frame`` (the model's keypoints, a by-product of the frame; without
    them every ``detect_every`` frames).
    A still face needs no new box, and detection (~2 ms) is the costliest step of the engine besides the model.

    With ``asynchronous`` the detector runs on its own thread (:class:`DetectionWorker`): ``process`` uses the
    newest finished detection and never waits, except until the very first face is found; ``after_frame``
    hands the frame over once the caller's own work on it is done, so detection fills the time the engine
    waits for the camera. The crop then follows the face one frame late.
    """

    def __init__(self, size: tuple[int, int], detector=None, *, detect_every: int = 1,
                 detect_every_still: int | None = None, motion_threshold: float = 0.06, detect_max_side: int = 256,
                 framing: Framing = FACE_FRAMING, min_cutoff: float = 0.5, beta: float = 4.0,
                 asynchronous: bool = False):
        if detect_every < 1:
            raise ValueError('detect_every must be >= 1')
        self.size = (int(size[0]), int(size[1]))
        self.detector = detector
        self.detect_every = detect_every
        self.detect_every_still = max(detect_every, detect_every_still or 10 * detect_every)
        self.motion_threshold = motion_threshold  # keypoint centroid shift, in [-1, 1] crop units
        self.detect_max_side = detect_max_side
        self.framing = framing
        # centre and size in units of the frame's shorter side, so the tuning does not depend on resolution
        self._filter = OneEuroFilter(min_cutoff=min_cutoff, beta=beta, d_cutoff=1.0)
        self._locked_side: float | None = None
        self._last: np.ndarray | None = None   # filtered (cx, cy, side), normalised
        self._last_found = False
        self._since_detection = 0               # frames since the last detection ran (or was handed over)
        self._detected_now = False
        self._reference: np.ndarray | None = None  # keypoint centroid at the last detection
        self._moved: bool | None = None            # None: no motion reported (detect every detect_every frames)
        self._previous: np.ndarray | None = None    # the last frame's keypoints
        self._jumped = False                       # a keypoint jumped since the last detection: detect now
        self.detections = 0
        self._worker: DetectionWorker | None = \
            DetectionWorker(self._detect) if asynchronous and detector is not None else None

    @property
    def asynchronous(self) -> bool:
        return self._worker is not None

    def close(self) -> None:
        """Stop the detection thread (asynchronous mode); the detector itself belongs to the caller."""
        if self._worker is not None:
            self._worker.close()

    def reset(self) -> None:
        self._filter.reset()
        self._last = None
        self._locked_side = None
        self._last_found = False
        self._since_detection = 0
        self._reference = None
        self._moved = None
        self._previous, self._jumped = None, False
        if self._worker is not None:
            self._worker.discard()

    def lock_scale(self) -> None:
        """Freeze the crop size at its current value (called at calibration)."""
        if self._last is not None:
            self._locked_side = float(self._last[2])

    def unlock_scale(self) -> None:
        self._locked_side = None

    @property
    def scale_locked(self) -> bool:
        return self._locked_side is not None

    def _detect(self, frame: np.ndarray) -> np.ndarray | None:
        h, w = frame.shape[:2]
        factor = 1.0
        image = frame
        longest = max(h, w)
        if self.detect_max_side and longest > self.detect_max_side:
            factor = longest / self.detect_max_side
            image = downscale(frame, round(w / factor), round(h / factor))
        faces = self.detector.detect(image)
        if not faces:
            return None
        short = float(min(h, w))
        return np.array(self.framing.square(faces[0].scaled(factor))) / short

    def box_for(self, state: np.ndarray, frame_shape: tuple[int, ...], zoom: float = 1.0,
                offset: tuple[float, float] = (0.0, 0.0)) -> tuple[int, int, int, int]:
        """Pixel box for a normalised (cx, cy, side) state with manual zoom/offset (fractions of the side),
        shifted (not shrunk) to stay inside the frame."""
        h, w = int(frame_shape[0]), int(frame_shape[1])
        short = float(min(h, w))
        side_n = self._locked_side if self._locked_side is not None else float(state[2])
        side = side_n * short / max(zoom, 1e-3)
        cx = state[0] * short + offset[0] * side
        cy = state[1] * short + offset[1] * side
        side_px = int(round(min(max(side, 8.0), h, w)))
        x0 = int(round(cx - side_px / 2.0))
        y0 = int(round(cy - side_px / 2.0))
        x0 = min(max(x0, 0), w - side_px)
        y0 = min(max(y0, 0), h - side_px)
        return x0, y0, x0 + side_px, y0 + side_px

    def process(self, frame: np.ndarray, t: float, zoom: float = 1.0,
                offset: tuple[float, float] = (0.0, 0.0)) -> CropResult:
        h, w = frame.shape[:2]
        found = self._last_found
        self._detected_now = False
        if self.detector is None:
            found = False
        elif self._worker is not None and self._last is not None:
            done = self._worker.poll()
            if done is not None:
                found = self._apply(*done)
        elif self._last is None or self._due():
            if self._worker is not None:
                self._worker.wait_idle()  # one detection at a time (after a reset one may still be running)
            found = self._apply(self._detect(frame), t)
            self._since_detection, self._detected_now, self._jumped = 0, True, False
        self._since_detection += 1
        self._last_found = found
        if self._last is None:  # nothing seen yet: centred square of the whole frame
            short = float(min(h, w))
            state = np.array([w / 2.0 / short, h / 2.0 / short, 1.0])
        else:
            state = self._last
        box = self.box_for(state, frame.shape, zoom, offset)
        x0, y0, x1, y1 = box
        crop = downscale(frame[y0:y1, x0:x1], self.size[1], self.size[0])
        return CropResult(box, found, crop)

    def _apply(self, measured: np.ndarray | None, t: float) -> bool:
        self.detections += 1
        if measured is not None:
            self._last = self._filter(measured, t)
        return measured is not None

    def _due(self) -> bool:
        if not self._last_found or self._jumped:
            return True
        if self._since_detection < self.detect_every:
            return False
        return self._moved is not False or self._since_detection >= self.detect_every_still

    def after_frame(self, frame: np.ndarray, t: float, keypoints: np.ndarray | None = None) -> None:
        """Report the frame's keypoints ((K, 2) in [-1, 1] crop coordinates, or None) once the frame is done;
        asynchronous mode: hand ``frame`` (not written to afterwards) to the detection thread if due and free."""
        if keypoints is not None:
            if self._previous is not None and np.abs(keypoints - self._previous).max() > KEYPOINT_JUMP:
                self._jumped = True
            self._previous = keypoints
            centroid = keypoints.mean(axis=0)
            if self._detected_now or self._reference is None:
                self._reference, self._moved = centroid, self._reference is None
            else:
                self._moved = bool(np.abs(centroid - self._reference).max() > self.motion_threshold)
        else:
            self._reference = self._moved = self._previous = None
        if self._worker is None or self._last is None:  # until a first face is found, process() detects
            return
        if self._due() and self._worker.submit(frame, t):
            self._since_detection, self._detected_now, self._jumped = 0, True, False
            if keypoints is not None:
                self._reference = centroid
