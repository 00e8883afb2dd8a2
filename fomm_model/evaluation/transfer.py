"""Expression transfer across people: animate avatars with other people's clips and compare the facial signals.

Each (avatar, driving clip) pair is animated as ``fomm animate --relative --adapt_scale`` does, anchored on the
first driving frame; mouth and eye opening are measured per frame on the driver and on the output and scored
with :func:`~fomm_model.evaluation.metrics.score_signal`. An avatar that does not move scores an amplitude
ratio of ~0 and fails, whatever the correlation. The face's change of shape (from each clip's first frame with a
face) is compared too (:func:`~fomm_model.evaluation.metrics.score_shape`): reported, not a pass criterion.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..animation import Animator
from ..keypoints import Keypoints
from ..smoothing import KeypointSmoother
from .landmarks import FaceLandmarker, eye_opening, mouth_opening, shape_change
from .metrics import (AMPLITUDE_RANGE, MAX_NO_FACE_RATE, MIN_CORRELATION, ShapeScore, SignalScore, median,
                      median_interval, score_shape, score_signal)

SIGNALS = ('mouth', 'eyes')
# Below these driver stds (in inter-ocular distances) a signal is "not exercised" by the clip. Measured on the
# shared test clips at 128 px: speaking mouths move 0.018-0.068, blinking eyes 0.008-0.022, still eyes 0.002-0.003.
MIN_DRIVER_STD = {'mouth': 0.015, 'eyes': 0.006}
# Below this mean change of shape (inter-ocular distances) the driver's face is too still for a shape ratio: measured
# on the shared test clips at 128 px, the GRID speakers 0.008-0.010 (landmark jitter), the others 0.016-0.065
# (0.016-0.051 over their first 60 frames).
MIN_DRIVER_SHAPE = 0.013


def animate_clip(animator: Animator, source: np.ndarray, frames: Sequence[np.ndarray],
                 anchor: int = 0, keypoints: Sequence[Keypoints] | None = None) -> list[np.ndarray]:
    """``source`` moved by ``frames`` relative to ``frames[anchor]`` (uint8 frames at the model size), or by their
    ``keypoints`` when given (:func:`driving_keypoints`: detected once per clip, smoothed as the app would)."""
    animator.set_source(source)
    if keypoints is None:
        animator.set_anchor(frames[anchor])
        return [animator.animate(frame) for frame in frames]
    animator.set_anchor(keypoints[anchor])
    return [animator.generate(animator.normalize(kp)) for kp in keypoints]


def driving_keypoints(animator: Animator, frames: Sequence[np.ndarray], fps: float,
                      smoothing: float = 0.0) -> list[Keypoints]:
    """Each frame's keypoints through the live app's keypoint smoothing (:class:`~fomm_model.smoothing.
    KeypointSmoother`, strength ``smoothing``; 0 passes them as detected), the frames timed at ``fps``."""
    smoother = KeypointSmoother(smoothing)
    return [smoother(animator.keypoints(frame), i / fps) for i, frame in enumerate(frames)]


@dataclass
class ClipMeasures:
    """Per-frame landmarks and facial signals of one clip (NaN / None where no face was found); ``shape`` is the
    face's change of shape from the clip's first frame with a face."""
    landmarks: list[np.ndarray | None]
    mouth: np.ndarray
    eyes: np.ndarray
    shape: np.ndarray

    @property
    def no_face_rate(self) -> float:
        return sum(p is None for p in self.landmarks) / max(len(self.landmarks), 1)

    def signal(self, name: str) -> np.ndarray:
        return {'mouth': self.mouth, 'eyes': self.eyes}[name]


def measure_clip(landmarker: FaceLandmarker, frames: Sequence[np.ndarray]) -> ClipMeasures:
    """Landmarks, mouth opening, eye opening and change of shape of every frame."""
    return clip_measures([landmarker.detect(frame) for frame in frames])


def clip_measures(landmarks: Sequence[np.ndarray | None]) -> ClipMeasures:
    """The signals of a clip from its per-frame landmarks (None = no face)."""
    landmarks = list(landmarks)
    reference = next((p for p in landmarks if p is not None), None)
    mouth = np.array([np.nan if p is None else mouth_opening(p) for p in landmarks])
    eyes = np.array([np.nan if p is None else eye_opening(p) for p in landmarks])
    shape = np.array([np.nan if p is None else shape_change(p, reference) for p in landmarks])
    return ClipMeasures(landmarks, mouth, eyes, shape)


@dataclass
class PairScore:
    """Transfer scores of one (avatar, driving clip) pair."""
    avatar: str
    video: str
    frames: int
    no_face_rate: float
    signals: dict[str, SignalScore]
    shape: ShapeScore

    @property
    def passed(self) -> bool:
        """Every signal the driver exercised passed, at least one was exercised, and the face stayed found."""
        exercised = [s for s in self.signals.values() if s.exercised]
        return bool(exercised) and all(s.passed for s in exercised) and self.no_face_rate <= MAX_NO_FACE_RATE

    def as_dict(self) -> dict:
        return {'avatar': self.avatar, 'video': self.video, 'frames': self.frames,
                'no_face_rate': self.no_face_rate, 'passed': self.passed,
                **{name: score.as_dict() for name, score in self.signals.items()}, 'shape': self.shape.as_dict()}


def closed_mouth_frame(measures: ClipMeasures) -> int | None:
    """Index of the clip's frame with the least mouth opening (None: no face in any frame).

    Why: an avatar's mouth is usually closed (every painted portrait in ../shared is), and the model opens a closed
    mouth much less far than it moves an open one, so a held-out person taken at this frame is the harder, truer
    avatar than the clip's first frame, whatever that one shows.
    """
    known = np.isfinite(measures.mouth)
    return int(np.flatnonzero(known)[np.argmin(measures.mouth[known])]) if known.any() else None


def closed_mouth_or_first(measures: ClipMeasures) -> int:
    """:func:`closed_mouth_frame`, or the first frame when no frame has a face: an anchor or avatar frame always."""
    closed = closed_mouth_frame(measures)
    return 0 if closed is None else closed


def score_pair(driver: ClipMeasures, output: ClipMeasures, avatar: str = '', video: str = '') -> PairScore:
    """Compare the driver's signals with the output's, frame by frame."""
    if len(driver.landmarks) != len(output.landmarks):
        raise ValueError(f'driver and output differ in length ({len(driver.landmarks)} vs '
                         f'{len(output.landmarks)} frames)')
    signals = {name: score_signal(driver.signal(name), output.signal(name), MIN_DRIVER_STD[name])
               for name in SIGNALS}
    shape = score_shape(driver.shape, output.shape, MIN_DRIVER_SHAPE)
    return PairScore(avatar, video, len(output.landmarks), output.no_face_rate, signals, shape)


def counted_r(r: float | None) -> float:
    """A pair's correlation as the medians count it: an undefined one (a constant output) as -1, the worst."""
    return -1.0 if r is None else r


def signal_medians(scores: Sequence[SignalScore]) -> tuple[int, float | None, float | None]:
    """(how many exercise the signal, their median r, their median amplitude ratio); an undefined r (a constant
    output) counts as a failure."""
    used = [s for s in scores if s.exercised]
    return len(used), median(counted_r(s.r) for s in used), median(s.ratio for s in used)


def signal_intervals(pairs: Sequence[PairScore], name: str) -> dict:
    """95% intervals of a signal's median r and median amplitude ratio over the pairs that exercise it, avatars and
    driving clips resampled (:func:`~fomm_model.evaluation.metrics.median_interval`); r as :func:`counted_r`
    counts it."""
    used = [p for p in pairs if p.signals[name].exercised]
    r = {(p.avatar, p.video): counted_r(p.signals[name].r) for p in used}
    ratio = {(p.avatar, p.video): p.signals[name].ratio for p in used}
    return {'r_interval': _listed(median_interval(r)), 'ratio_interval': _listed(median_interval(ratio))}


def _listed(interval: tuple[float, float] | None) -> list[float] | None:
    return list(interval) if interval is not None else None


def summarize(pairs: Sequence[PairScore]) -> dict:
    """Medians over pairs (each signal over the pairs that exercised it), their 95% intervals over other avatars
    and drivers like these (:func:`signal_intervals`), and the overall verdict.

    The verdict is that of a median pair: every signal exercised by some pair has a median correlation and a
    median amplitude ratio that would pass, and the median no-face rate is within bounds.
    """
    out: dict = {'pairs': len(pairs), 'pairs_passed': sum(p.passed for p in pairs),
                 'no_face_rate_median': median(p.no_face_rate for p in pairs)}
    verdicts = []
    for name in SIGNALS:
        used, r, ratio = signal_medians([p.signals[name] for p in pairs])
        out[name] = {'pairs_exercised': used, 'r_median': r, 'ratio_median': ratio, **signal_intervals(pairs, name)}
        if used:
            verdicts.append(r is not None and r >= MIN_CORRELATION and ratio is not None
                            and AMPLITUDE_RANGE[0] <= ratio <= AMPLITUDE_RANGE[1])
    shaped = [p.shape for p in pairs if p.shape.exercised]
    out['shape'] = {'pairs_exercised': len(shaped), 'ratio_median': median(s.ratio for s in shaped)}
    no_face = out['no_face_rate_median']
    out['passed'] = bool(verdicts) and all(verdicts) and no_face is not None and no_face <= MAX_NO_FACE_RATE
    return out
