"""The interface every inference backend implements, and the start-up check against eager float32.

Backends take and return numpy (uint8 RGB images at the model size, float32 keypoints) so the per-frame
pipeline does not care which runtime runs the networks. The avatar is prepared once per change
(``set_source``); each frame then costs ``keypoints`` + ``generate``.
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """A backend that cannot run here, or that produced wrong output; the message says what to do."""


class Keypoints(NamedTuple):
    value: np.ndarray      # (K, 2) float32 in [-1, 1]
    jacobian: np.ndarray   # (K, 2, 2) float32


class Backend(ABC):
    """Model calls for one runtime. Not thread-safe: the engine calls it from one thread."""

    name: str = ''
    device: str = 'cpu'
    dtype: str = 'float32'
    channels_last: bool = False
    selection_reason: str = ''

    @abstractmethod
    def set_source(self, image: np.ndarray) -> Keypoints:
        """Prepare an avatar (model-size uint8 RGB) once; returns its keypoints."""

    @abstractmethod
    def keypoints(self, image: np.ndarray) -> Keypoints:
        """Keypoints of a driving frame (model-size uint8 RGB)."""

    @abstractmethod
    def generate(self, kp: Keypoints) -> np.ndarray:
        """The prepared avatar moved to the (already normalised) keypoints: model-size uint8 RGB."""

    def describe(self) -> str:
        return f"{self.name} on {self.device} ({self.dtype}{', channels_last' if self.channels_last else ''})"

    def step(self, image: np.ndarray) -> np.ndarray:
        """keypoints + generate: the model's own per-frame work (benchmarks, selection)."""
        return self.generate(self.keypoints(image))


def sample_images(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic textured source and a shifted, slightly zoomed driving image for start-up checks."""
    h, w = size
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx / 7.0 + c) * np.cos(yy / 11.0 - c) for c in (0.0, 1.0, 2.0)], -1)
    blob = np.exp(-(((xx - w * 0.5) / (w * 0.22)) ** 2 + ((yy - h * 0.45) / (h * 0.3)) ** 2))[..., None]
    img = 0.5 + 0.25 * base + 0.3 * blob + 0.05 * rng.standard_normal((h, w, 3)).astype(np.float32)
    source = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    driving = np.roll(source, (h // 16, w // 20), axis=(0, 1))
    return np.ascontiguousarray(source), np.ascontiguousarray(driving)


TOLERANCES = {'float32': (0.02, 0.005), 'bfloat16': (0.15, 0.05), 'float16': (0.15, 0.05)}  # (output, keypoints)


def verify_backend(backend: Backend, reference: Backend, size: tuple[int, int]) -> dict[str, float]:
    """Compare ``backend`` with eager float32 on a test input; raise BackendError on NaN, black frames or a
    difference above the dtype's tolerance (uint8 outputs are compared in [0, 1])."""
    source, driving = sample_images(size)
    ref_src = reference.set_source(source)
    ref_kp = reference.keypoints(driving)
    ref_out = reference.generate(ref_kp)
    got_src = backend.set_source(source)
    got_kp = backend.keypoints(driving)
    for name, kp in (('source keypoints', got_src), ('keypoints', got_kp)):
        if not (np.isfinite(kp.value).all() and np.isfinite(kp.jacobian).all()):
            raise BackendError(f'{backend.describe()} produced NaN/inf {name}; use --backend torch --dtype float32')
    got_out = backend.generate(got_kp)
    if got_out.shape != ref_out.shape or got_out.dtype != np.uint8:
        raise BackendError(f'{backend.describe()} returned {got_out.shape} {got_out.dtype}, expected '
                           f'{ref_out.shape} uint8')
    if got_out.max() <= 3 and ref_out.max() > 3:
        raise BackendError(f'{backend.describe()} produces black frames (a known half-precision problem on some '
                           f'GPUs, e.g. GTX 16xx); use --dtype float32')
    out_tol, kp_tol = TOLERANCES.get(backend.dtype, TOLERANCES['float32'])
    kp_diff = float(max(np.abs(got_src.value - ref_src.value).max(), np.abs(got_kp.value - ref_kp.value).max(),
                        np.abs(got_kp.jacobian - ref_kp.jacobian).max()))
    out_diff = float(np.abs(got_out.astype(np.int16) - ref_out.astype(np.int16)).max()) / 255.0
    report = {'keypoints_max_abs_diff': kp_diff, 'output_max_abs_diff': out_diff}
    if kp_diff > kp_tol or out_diff > out_tol:
        raise BackendError(f'{backend.describe()} does not match eager float32: keypoints differ by {kp_diff:.4f} '
                           f'(limit {kp_tol}), output by {out_diff:.4f} (limit {out_tol}); use --backend torch '
                           f'--dtype float32 and report this')
    log.info('%s matches eager float32 (keypoints %.2e, output %.2e)', backend.describe(), kp_diff, out_diff)
    return report


def time_steps(backend: Backend, size: tuple[int, int], steps: int = 5, warmup: int = 2) -> float:
    """Median milliseconds of one model step (keypoints + generate) on the test input."""
    source, driving = sample_images(size)
    backend.set_source(source)
    for _ in range(warmup):
        backend.step(driving)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        backend.step(driving)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))
