"""The animator: one avatar, prepared once, moved by driving frames through any runner.

This is the one core behind ``fomm animate``, ``fomm reconstruct``, the original-API ``make_animation`` and
the live app: it takes and returns uint8 images (the runner's per-frame calls convert them: in NumPy, or inside
the runtime's graphs where it can), prepares the source, applies relative motion
(:class:`~fomm_model.keypoints.RelativeMotion`) and calls the runner's two graphs. Runners
(:mod:`fomm_model.inference`) supply only the keypoint call and the per-frame generator call.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .config import frame_size
from .inference import FrameGenerator, Runner, create_runner
from .inference.convert import image_to_tensor, tensor_to_image
from .keypoints import Keypoints, RelativeMotion
from .models import Models
from .mouth_gain import check_mouth_gain, default_mouth_gain
from .mouth_gain import mouth_keypoints as mouth_keypoint_indices

__all__ = ['Animator', 'FrameGenerator', 'image_to_tensor', 'tensor_to_image']


class Animator:
    """Animate one source image by driving frames, with the per-avatar and per-anchor work cached.

    ``backend``: ``'auto'`` (default: the fastest runner verified against eager float32 on this machine, timed
    interleaved; bfloat16 is a candidate only on CPUs with AVX512-BF16/AMX), a backend name (``'torch'``,
    ``'compile'``, ``'onnx'``, ``'openvino'``, ``'tensorrt'``) or a ready :class:`~fomm_model.inference.Runner`.
    ``device``/``dtype``/``channels_last``: None lets the backend choose (CUDA when available, float32 unless
    ``auto`` measures better). The ``models`` are never changed: each runner works on its own copy, with the
    exact inference rewrites of :mod:`fomm_model.inference.rewrite`. ``selection_reason`` says what was chosen
    and why. A ready
    runner that holds no model here (a remote one) can come with ``models=None`` and the frame ``size``.
    ``mouth_gain``: scale of the driver's lip motion in relative mode (:mod:`fomm_model.mouth_gain`); None takes
    the model config's calibrated gain; ``mouth_keypoints`` (default: the config's) names the lip keypoints.
    """

    def __init__(self, models: Models | None, *, backend: str | Runner = 'auto',
                 device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
                 channels_last: bool | None = None, relative: bool = True, adapt_scale: bool = True,
                 relative_jacobian: bool = True, verify: bool = True, model_key: str | None = None,
                 size: tuple[int, int] | None = None, mouth_gain: float | None = None,
                 mouth_keypoints: list[int] | None = None):
        if models is None and (size is None or not isinstance(backend, Runner)):
            raise ValueError('Animator without models needs a ready runner and the frame size')
        self.size = tuple(size) if size is not None else frame_size(models.config)
        if isinstance(backend, Runner):
            self.runner, self.selection_reason = backend, 'runner given by the caller'
        else:
            selection = create_runner(models, self.size, backend, device, dtype, channels_last, model_key, verify)
            self.runner, self.selection_reason = selection.runner, selection.reason
        self._relative, self._adapt_scale, self.relative_jacobian = relative, adapt_scale, relative_jacobian
        config = models.config if models is not None else {}
        self.mouth_keypoints = mouth_keypoints if mouth_keypoints is not None else mouth_keypoint_indices(config)
        self.default_mouth_gain = default_mouth_gain(config)
        self._mouth_gain = self.default_mouth_gain if mouth_gain is None else check_mouth_gain(mouth_gain)
        self.prepared: Any = None
        self.kp_source: Keypoints | None = None
        self.kp_anchor: Keypoints | None = None
        self.motion: RelativeMotion | None = None

    # -- conversions (other than the runner's per-frame calls) --------------------------------------------
    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        r = self.runner
        return image_to_tensor(image, self.size, r.device, r.dtype, r.channels_last)

    # -- avatar and anchor ----------------------------------------------------------------------------
    def set_source(self, image: np.ndarray) -> Keypoints:
        """Prepare an avatar (any size, uint8 or float RGB) once; returns its keypoints."""
        self.prepared = self.runner.prepare_source(self.to_tensor(image))
        self.kp_source = Keypoints.from_torch((self.prepared.kp_value, self.prepared.kp_jacobian))
        self._update_motion()
        return self.kp_source

    def keypoints(self, image: np.ndarray | torch.Tensor) -> Keypoints:
        """Keypoints of a driving frame (an image, or a tensor from :meth:`to_tensor`)."""
        if _is_model_frame(image, self.size):   # the per-frame case: the runner converts (maybe in its graph)
            return Keypoints.from_torch(self.runner.keypoints_of_image(image))
        x = image if isinstance(image, torch.Tensor) else self.to_tensor(image)
        return Keypoints.from_torch(self.runner.keypoints(x))

    def set_anchor(self, frame: np.ndarray | Keypoints) -> Keypoints:
        """Anchor relative motion on a frame (or on its keypoints): that pose maps onto the avatar's pose."""
        self.kp_anchor = frame if isinstance(frame, Keypoints) else self.keypoints(frame)
        self._update_motion()
        return self.kp_anchor

    def clear_anchor(self) -> None:
        self.kp_anchor, self.motion = None, None

    @property
    def relative(self) -> bool:
        return self._relative

    @relative.setter
    def relative(self, on: bool) -> None:
        self._relative = bool(on)

    @property
    def adapt_scale(self) -> bool:
        return self._adapt_scale

    @adapt_scale.setter
    def adapt_scale(self, on: bool) -> None:
        if bool(on) != self._adapt_scale:
            self._adapt_scale = bool(on)
            self._update_motion()

    @property
    def mouth_gain(self) -> float:
        """Scale of the driver's lip motion (1: as it is); stays 1 for a model that names no mouth keypoints."""
        return self._mouth_gain if self.mouth_keypoints is not None else 1.0

    @mouth_gain.setter
    def mouth_gain(self, gain: float) -> None:
        gain = check_mouth_gain(gain)
        if gain != self._mouth_gain:
            self._mouth_gain = gain
            self._update_motion()

    def _update_motion(self) -> None:
        if self.kp_source is None or self.kp_anchor is None:
            self.motion = None
        else:
            self.motion = RelativeMotion(self.kp_source, self.kp_anchor, self._adapt_scale, self.relative_jacobian,
                                         self.mouth_keypoints, self.mouth_gain)

    # -- frames ---------------------------------------------------------------------------------------
    def normalize(self, kp_driving: Keypoints) -> Keypoints:
        """Driving keypoints -> keypoints for the avatar (relative to the anchor in relative mode)."""
        if not self._relative:
            return kp_driving
        if self.motion is None:
            raise RuntimeError('relative motion needs an anchor: call set_anchor() first')
        return self.motion(kp_driving)

    @torch.inference_mode()
    def predict(self, kp: Keypoints) -> torch.Tensor:
        """The avatar moved to already normalised keypoints: (1, 3, H, W) in [0, 1] on the runner's device."""
        return self.runner.generate(*self._generator_inputs(kp))

    @torch.inference_mode()
    def generate(self, kp: Keypoints) -> np.ndarray:
        """As :meth:`predict`, as an HxWx3 uint8 RGB image."""
        return self.runner.generate_image(*self._generator_inputs(kp))

    def _generator_inputs(self, kp: Keypoints) -> tuple:
        """(prepared avatar, keypoint value, jacobian) for the runner's generator call."""
        if self.prepared is None:
            raise RuntimeError('call set_source() before animating')
        return (self.prepared, *kp.to_torch(self.runner.device))

    def animate(self, frame: np.ndarray) -> np.ndarray:
        """One driving frame (HxWx3 RGB) -> the animated avatar (uint8, model size). In relative mode the first
        frame animated becomes the anchor unless :meth:`set_anchor` was called."""
        kp = self.keypoints(frame)
        if self._relative and self.kp_anchor is None:
            self.set_anchor(kp)
        return self.generate(self.normalize(kp))

    def describe(self) -> str:
        return self.runner.describe()

    def close(self) -> None:
        self.runner.close()


def _is_model_frame(image: Any, size: tuple[int, int]) -> bool:
    """One HxWx3 uint8 frame at the model's size (what :meth:`Runner.keypoints_of_image` takes)."""
    return (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            and tuple(image.shape[:2]) == tuple(size))
