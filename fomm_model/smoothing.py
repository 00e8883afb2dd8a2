"""Smoothing over time: the One-Euro filter (Casiez et al., CHI 2012) on numpy arrays of any shape, and the driver's
keypoints through it.

Low cut-off when still (no jitter), cut-off rising with speed (little lag on fast motion). The live app smooths its
face crop and (a setting) the driver's keypoints with it; ``fomm evaluate --kp_smoothing`` scores the same keypoint
smoothing, so both live here.
"""
from __future__ import annotations

import math

import numpy as np

from .keypoints import Keypoints


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filter one signal (scalar or array) sampled at irregular times.

    ``min_cutoff`` (Hz) sets the smoothing of a still signal; ``beta`` how fast the cut-off follows speed.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError('min_cutoff and d_cutoff must be > 0 and beta >= 0')
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:
            dt = 1e-3  # repeated timestamps: treat as a fast sample rather than dividing by zero
        self._t = t
        a_d = _alpha(self.d_cutoff, dt)
        dx = (x - self._x) / dt
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        tau = 1.0 / (2.0 * np.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        self._x = a * x + (1 - a) * self._x
        return self._x.copy()


def smoothing_cutoff(strength: float) -> float:
    """Keypoint One-Euro min cut-off (Hz) for a 0..1 strength: 0.01 -> ~9 Hz (barely), 1 -> 0.3 Hz (strong)."""
    return float(10.0 ** (1.0 - 1.5 * min(max(strength, 0.0), 1.0)))


def check_kp_smoothing(strength: float) -> float:
    """A keypoint smoothing strength in [0, 1] (0: off), else ValueError."""
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f'keypoint smoothing must be between 0 (off) and 1 (strongest); got {strength:g}')
    return strength


class KeypointSmoother:
    """The driver's keypoints (values and jacobians) through one One-Euro filter, causally, at their timestamps.

    ``strength`` 0..1 (0 passes keypoints unchanged); changing it starts the filter afresh.
    """

    def __init__(self, strength: float = 0.0):
        self._strength = 0.0
        self._filter: OneEuroFilter | None = None
        self.strength = strength

    @property
    def strength(self) -> float:
        return self._strength

    @strength.setter
    def strength(self, value: float) -> None:
        value = check_kp_smoothing(value)
        if value != self._strength:
            self._strength, self._filter = value, None

    def __call__(self, kp: Keypoints, t: float) -> Keypoints:
        if self._strength <= 0:
            return kp
        if self._filter is None:
            self._filter = OneEuroFilter(min_cutoff=smoothing_cutoff(self._strength), beta=0.5, d_cutoff=1.0)
        flat = np.concatenate([kp.value.ravel(), kp.jacobian.ravel()])
        out = self._filter(flat, t).astype(np.float32)
        n = kp.value.size
        return Keypoints(out[:n].reshape(kp.value.shape), out[n:].reshape(kp.jacobian.shape))
