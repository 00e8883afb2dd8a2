"""What a runtime must supply to animate: a keypoint call and a per-frame generator call.

Everything else (source preparation, relative motion, the start-up check against eager float32) is done once,
by :class:`fomm_model.Animator`, for every runner; uint8 frames become tensors and back in one place,
:mod:`.convert`, through :meth:`Runner.keypoints_of_image` and :meth:`Runner.generate_image`. A runtime that can
do that conversion inside its own graphs (OpenVINO) overrides those two and sets :attr:`Runner.images_in_graph`.
A runner owns its copies of the networks: it never changes the :class:`~fomm_model.models.Models` it was built
from.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from ..models import Models
from .convert import image_to_tensor, tensor_to_image
from .graphs import KeypointGraph, SourceInputs, prepare_source
from .rewrite import subpixel_up_blocks


class RunnerError(RuntimeError):
    """A runner that cannot run here, or that produced wrong output; the message says what to do."""


class Runner(ABC):
    """Runs the keypoint detector and the per-frame generator on one runtime.

    Inputs arrive as ``(B, 3, H, W)`` tensors in [0, 1] on :attr:`device` with :attr:`dtype` (and
    channels_last strides when :attr:`channels_last`); keypoints come back as float32 tensors. Not
    thread-safe: call it from one thread.
    """

    name: str = ''
    device: torch.device = torch.device('cpu')
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    # True when keypoints_of_image/generate_image take and return uint8 frames inside the runtime's graphs
    images_in_graph: bool = False

    @abstractmethod
    def keypoints(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(value (B, K, 2), jacobian (B, K, 2, 2)) of the images."""

    @abstractmethod
    def prepare_source(self, image: torch.Tensor) -> Any:
        """The per-avatar work, once. Returns what :meth:`generate` takes as ``source``; it has ``kp_value`` and
        ``kp_jacobian`` (the avatar's keypoints, float32 tensors)."""

    @abstractmethod
    def generate(self, source: Any, kp_value: torch.Tensor, kp_jacobian: torch.Tensor) -> torch.Tensor:
        """The prepared avatar moved to the (already normalised) keypoints: (B, 3, H, W) in [0, 1]."""

    def keypoints_of_image(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`keypoints` of one model-size HxWx3 uint8 RGB frame (the per-frame call of the live app)."""
        return self.keypoints(image_to_tensor(image, image.shape[:2], self.device, self.dtype, self.channels_last))

    def generate_image(self, source: Any, kp_value: torch.Tensor, kp_jacobian: torch.Tensor) -> np.ndarray:
        """:meth:`generate` for one frame, as an HxWx3 uint8 RGB image (rounded, clipped to [0, 255])."""
        return tensor_to_image(self.generate(source, kp_value, kp_jacobian))

    def describe(self) -> str:
        from ..devices import dtype_name
        layout = ', channels_last' if self.channels_last else ''
        return f'{self.name} on {self.device.type} ({dtype_name(self.dtype)}{layout})'

    def close(self) -> None:
        """Free what the runner holds (sessions, GPU memory)."""


class EagerPreparer:
    """Source preparation in eager float32 PyTorch, for runners whose runtime only holds the per-frame graphs
    (ONNX Runtime, OpenVINO, TensorRT), and the networks they export. Owns a copy of the keypoint detector and
    the generator, with the exact rewrites of :mod:`.rewrite` applied."""

    def __init__(self, models: Models, device: torch.device | str = 'cpu'):
        self.device = torch.device(device)
        kp, generator = copy.deepcopy(models.kp_detector).float().eval(), copy.deepcopy(models.generator).float().eval()
        subpixel_up_blocks(kp)
        subpixel_up_blocks(generator)
        self._kp = KeypointGraph(kp).to(self.device).eval()
        self._generator = generator.to(self.device)

    def __call__(self, image: torch.Tensor) -> SourceInputs:
        return prepare_source(self._kp, self._generator, image.to(self.device, torch.float32))


__all__ = ['Runner', 'RunnerError', 'EagerPreparer', 'SourceInputs']
