"""Keypoint normalisation for animation (relative motion, relative jacobian, adapt-scale), as animate.py."""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError


def hull_area(kp_value: torch.Tensor) -> float:
    """Area of the convex hull of one keypoint set (K, 2) (or the first item of a batch)."""
    points = kp_value.detach().float().cpu().numpy().reshape(-1, kp_value.shape[-2], 2)[0].astype(np.float64)
    try:
        return float(ConvexHull(points).volume)
    except QhullError:  # degenerate (collinear) keypoints: joggle rather than fail
        return float(ConvexHull(points, qhull_options='QJ').volume)


def movement_scale(kp_source: dict, kp_driving_initial: dict) -> float:
    """sqrt(hull area of source keypoints) / sqrt(hull area of the anchor's): the adapt-scale factor."""
    return float(np.sqrt(hull_area(kp_source['value'])) / np.sqrt(hull_area(kp_driving_initial['value'])))


def normalize_kp(kp_source: dict, kp_driving: dict, kp_driving_initial: dict, adapt_movement_scale: bool = False,
                 use_relative_movement: bool = False, use_relative_jacobian: bool = False,
                 movement_scale_value: float | None = None) -> dict:
    """Move the source keypoints by the driving motion relative to an anchor frame.

    value' = s (v_d - v_d0) + v_s and J' = J_d J_d0^-1 J_s; absolute mode returns ``kp_driving``.
    ``movement_scale_value`` lets callers pass a precomputed ``s`` (it is constant for a fixed source/anchor).
    """
    if adapt_movement_scale:
        scale = movement_scale_value if movement_scale_value is not None else movement_scale(kp_source,
                                                                                             kp_driving_initial)
    else:
        scale = 1
    kp_new = dict(kp_driving)
    if use_relative_movement:
        kp_value_diff = (kp_driving['value'] - kp_driving_initial['value']) * scale
        kp_new['value'] = kp_value_diff + kp_source['value']
        if use_relative_jacobian:
            jacobian_diff = torch.matmul(kp_driving['jacobian'], torch.inverse(kp_driving_initial['jacobian']))
            kp_new['jacobian'] = torch.matmul(jacobian_diff, kp_source['jacobian'])
    return kp_new


def pose_distance(kp_a: torch.Tensor, kp_b: torch.Tensor) -> float:
    """Distance between two keypoint configurations after removing translation and scale.

    Used to pick the driving frame whose pose best matches the source (the original ``find_best_frame``
    does this with face-alignment landmarks; here the model's own keypoints serve, so no extra model).
    """
    def norm(v):
        v = v.detach().float().reshape(-1, 2)
        v = v - v.mean(0, keepdim=True)
        return v / max(np.sqrt(hull_area(v[None])), 1e-6)

    return float(((norm(kp_a) - norm(kp_b)) ** 2).sum())
