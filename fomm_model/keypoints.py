"""Keypoints and relative motion (animate.py's ``normalize_kp``), in one place for every caller.

:class:`RelativeMotion` is the one implementation of relative motion (value and jacobian, adapt-scale): the
animator, the live pipeline and the original-API :func:`normalize_kp` all use it. It precomputes what only
depends on the source and the anchor (the adapt-scale factor, J_anchor^-1 J_source), so a frame costs a
subtraction and one 2x2 product per keypoint.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError

from .mouth_gain import MouthGain


class Keypoints(NamedTuple):
    """Keypoints of one image (or a batch, with a leading dimension), float32 numpy."""

    value: np.ndarray      # (..., K, 2): (x, y) in [-1, 1]
    jacobian: np.ndarray   # (..., K, 2, 2)

    @classmethod
    def from_torch(cls, kp: dict | tuple, batch_item: int | None = 0) -> 'Keypoints':
        """From the detector's ``{'value', 'jacobian'}`` dict (or a tuple); identity jacobians if it has none.

        ``batch_item`` picks one image of the batch (None keeps the batch dimension)."""
        value, jacobian = (kp['value'], kp.get('jacobian')) if isinstance(kp, dict) else kp
        value = value.detach().float().cpu().numpy()
        if jacobian is None:
            jacobian = np.broadcast_to(np.eye(2, dtype=np.float32), value.shape[:-1] + (2, 2)).copy()
        else:
            jacobian = jacobian.detach().float().cpu().numpy()
        if batch_item is not None:
            value, jacobian = value[batch_item], jacobian[batch_item]
        return cls(np.ascontiguousarray(value), np.ascontiguousarray(jacobian))

    def to_torch(self, device: torch.device | str = 'cpu') -> tuple[torch.Tensor, torch.Tensor]:
        """(value, jacobian) float32 tensors with a batch dimension of 1 added for a single image."""
        value, jacobian = np.ascontiguousarray(self.value, np.float32), np.ascontiguousarray(self.jacobian, np.float32)
        if value.ndim == 2:
            value, jacobian = value[None], jacobian[None]
        return torch.from_numpy(value).to(device), torch.from_numpy(jacobian).to(device)


def _points(kp_value) -> np.ndarray:
    """(K, 2) float64 points of one keypoint set (the first item of a batch), numpy or torch."""
    if isinstance(kp_value, torch.Tensor):
        kp_value = kp_value.detach().float().cpu().numpy()
    arr = np.asarray(kp_value, dtype=np.float64)
    return arr.reshape(-1, arr.shape[-2], 2)[0]


def hull_area(kp_value) -> float:
    """Area of the convex hull of one keypoint set (K, 2) (or the first item of a batch)."""
    points = _points(kp_value)
    try:
        return float(ConvexHull(points).volume)
    except QhullError:  # degenerate (collinear) keypoints: joggle rather than fail
        return float(ConvexHull(points, qhull_options='QJ').volume)


def movement_scale(kp_source, kp_driving_initial) -> float:
    """sqrt(hull area of source keypoints) / sqrt(hull area of the anchor's): the adapt-scale factor.

    Takes keypoint dicts, :class:`Keypoints` or bare value arrays/tensors."""
    def value(kp):
        return kp['value'] if isinstance(kp, dict) else getattr(kp, 'value', kp)
    return float(np.sqrt(hull_area(value(kp_source))) / np.sqrt(hull_area(value(kp_driving_initial))))


class RelativeMotion:
    """Moves the source keypoints by the driving motion relative to an anchor frame.

    value' = s (v_d - v_anchor) + v_source and J' = J_d J_anchor^-1 J_source (``relative_jacobian``), with
    s = sqrt(hull area of source) / sqrt(hull area of anchor) when ``adapt_scale`` (from the first batch item,
    as the original), else 1. Works on single keypoint sets and on batches (numpy broadcasting).
    With ``mouth_keypoints`` and a ``mouth_gain`` other than 1, the driving frame's lip motion is first scaled
    (:class:`~fomm_model.mouth_gain.MouthGain`); the original has no such step.
    """

    def __init__(self, kp_source: Keypoints, kp_anchor: Keypoints, adapt_scale: bool = True,
                 relative_jacobian: bool = True, mouth_keypoints: Sequence[int] | None = None,
                 mouth_gain: float = 1.0):
        self.kp_source = kp_source
        self.kp_anchor = kp_anchor
        self.adapt_scale = adapt_scale
        self.relative_jacobian = relative_jacobian
        self.mouth_gain = (MouthGain(kp_anchor.value, mouth_keypoints, mouth_gain)
                           if mouth_keypoints is not None and mouth_gain != 1.0 else None)
        self.scale = movement_scale(kp_source, kp_anchor) if adapt_scale else 1.0
        anchor_inv = np.linalg.inv(np.asarray(kp_anchor.jacobian, np.float64))
        # J_anchor^-1 J_source: constant until the avatar or the anchor changes
        self._jacobian_factor = (anchor_inv @ np.asarray(kp_source.jacobian, np.float64)).astype(np.float32)

    def __call__(self, kp_driving: Keypoints) -> Keypoints:
        driving = kp_driving.value if self.mouth_gain is None else self.mouth_gain(kp_driving.value)
        value = (driving - self.kp_anchor.value) * np.float32(self.scale) + self.kp_source.value
        jacobian = kp_driving.jacobian @ self._jacobian_factor if self.relative_jacobian else kp_driving.jacobian
        return Keypoints(value.astype(np.float32, copy=False), jacobian.astype(np.float32, copy=False))


def normalize_kp(kp_source: dict, kp_driving: dict, kp_driving_initial: dict, adapt_movement_scale: bool = False,
                 use_relative_movement: bool = False, use_relative_jacobian: bool = False) -> dict:
    """The original ``animate.normalize_kp`` (torch keypoint dicts in and out), through :class:`RelativeMotion`.

    Absolute mode returns ``kp_driving``; relative mode without ``use_relative_jacobian`` keeps the driving
    jacobian, as the original does.
    """
    if not use_relative_movement:
        return dict(kp_driving)
    motion = RelativeMotion(Keypoints.from_torch(kp_source, None), Keypoints.from_torch(kp_driving_initial, None),
                            adapt_movement_scale, use_relative_jacobian)
    moved = motion(Keypoints.from_torch(kp_driving, None))
    ref = kp_driving['value']
    out = dict(kp_driving)
    out['value'] = torch.from_numpy(moved.value).to(ref.device, ref.dtype)
    if 'jacobian' in kp_driving:
        out['jacobian'] = torch.from_numpy(moved.jacobian).to(ref.device, kp_driving['jacobian'].dtype)
    return out


def pose_distance(kp_a, kp_b) -> float:
    """Distance between two keypoint layouts after removing translation and scale.

    Used to pick the driving frame whose pose best matches the source (the original ``find_best_frame`` does
    this with face-alignment landmarks; here the model's own keypoints serve, so no extra model). Takes
    :class:`Keypoints` or value arrays/tensors.
    """
    def norm(kp) -> np.ndarray:
        v = _points(getattr(kp, 'value', kp))
        v = v - v.mean(0, keepdims=True)
        return v / max(np.sqrt(hull_area(v)), 1e-6)

    return float(((norm(kp_a) - norm(kp_b)) ** 2).sum())
