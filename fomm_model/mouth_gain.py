"""Mouth gain: scale the mouth keypoints' own motion, the part the rest of the face's motion does not explain.

Why (assets/models/MODEL_CARD.md, "Mouth gain"): driven by relative motion from a closed-mouth anchor, the small
face model opens a closed avatar mouth to about half of the driver's opening (0.4-0.6 by amplitude), though it
opens it fully from the keypoints of a real open-mouthed frame. Each driving frame's mouth keypoints are compared
with where an affine motion fitted to the other keypoints (anchor -> frame) would put them; that residual, the
lips' own movement, is multiplied by the gain. Head turns, nods and moves are affine on all keypoints and pass
unchanged; gain 1 is the original motion.

The mouth keypoints are those ``train_params.landmark_keypoints`` ties to the lips and mouth corners; a model
without them (the original checkpoints) has no mouth gain. The default gain is the config's
``animate_params.normalization_params.mouth_gain`` (1 when absent).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .training.landmark_targets import ANCHOR_NAMES

MOUTH_ANCHORS = ('upper_lip', 'lower_lip', 'mouth_right', 'mouth_left')
MAX_MOUTH_GAIN = 5.0


def mouth_keypoints(config: dict) -> list[int] | None:
    """The keypoints a model ties to the lips and mouth corners (from ``train_params.landmark_keypoints``), or None."""
    indices = (config.get('train_params') or {}).get('landmark_keypoints')
    if not indices:
        return None
    return [int(indices[ANCHOR_NAMES.index(name)]) for name in MOUTH_ANCHORS]


def default_mouth_gain(config: dict) -> float:
    """The gain a model was calibrated with (``animate_params.normalization_params.mouth_gain``), else 1."""
    params = (config.get('animate_params') or {}).get('normalization_params') or {}
    return check_mouth_gain(params.get('mouth_gain', 1.0))


def check_mouth_gain(gain: float) -> float:
    """A gain in [0, MAX_MOUTH_GAIN] (0 keeps the anchor's mouth, 1 the driver's motion as it is), else ValueError."""
    gain = float(gain)
    if not 0.0 <= gain <= MAX_MOUTH_GAIN:
        raise ValueError(f'mouth gain must be between 0 and {MAX_MOUTH_GAIN:g} (1 = the driver\'s lip motion as it '
                         f'is, 2 = twice as wide); got {gain:g}')
    return gain


class MouthGain:
    """Scales the mouth keypoints' residual motion against the affine motion of the other keypoints.

    Built once per anchor: the least-squares affine fit from the anchor's other keypoints to a frame's is linear in
    the frame's keypoints, so the mouth keypoints' rigid prediction is one precomputed (M, K - M) matrix product.
    Works on one keypoint set (K, 2) or a batch (..., K, 2).
    """

    def __init__(self, anchor_value: np.ndarray, mouth: Sequence[int], gain: float):
        anchor = np.asarray(anchor_value, np.float64)
        num_kp = anchor.shape[-2]
        self.mouth = [int(i) for i in mouth]
        self.rest = [i for i in range(num_kp) if i not in self.mouth]
        if len(self.rest) < 3:
            raise ValueError(f'mouth gain needs at least 3 keypoints besides the mouth to fit the face\'s motion; '
                             f'the model has {num_kp}')
        self.gain = check_mouth_gain(gain)
        anchor = anchor.reshape(-1, num_kp, 2)[0]   # the first batch item anchors a batch, as adapt-scale does

        def homogeneous(points: np.ndarray) -> np.ndarray:
            return np.concatenate([points, np.ones((len(points), 1))], axis=1)
        # affine A (3x2) with homogeneous(anchor_rest) @ A ~= frame_rest: A = pinv(homogeneous(anchor_rest)) @ frame_rest
        fit = np.linalg.pinv(homogeneous(anchor[self.rest]))
        self._predict = (homogeneous(anchor[self.mouth]) @ fit).astype(np.float32)   # (M, K - M)

    def residual(self, value: np.ndarray) -> np.ndarray:
        """(..., M, 2) the mouth keypoints' own motion in ``value``: their offset from the affine fit's prediction."""
        value = np.asarray(value, np.float32)
        return value[..., self.mouth, :] - self._predict @ value[..., self.rest, :]

    def __call__(self, value: np.ndarray) -> np.ndarray:
        """Keypoint values with the mouth keypoints' own motion scaled by the gain (a new array; gain 1: ``value``)."""
        if self.gain == 1.0:
            return value
        value = np.array(value, np.float32)
        value[..., self.mouth, :] += np.float32(self.gain - 1.0) * self.residual(value)
        return value
