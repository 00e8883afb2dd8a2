"""PyTorch backends: eager (any device/dtype, optional channels_last) and torch.compile."""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn

from fomm_model.animation import FrameGenerator
from fomm_model.models import Models

from .base import Backend, BackendError, Keypoints

log = logging.getLogger(__name__)

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}

CUDA_HINT = ('install a CUDA build of PyTorch matching your driver, e.g. '
             'pip install torch --index-url https://download.pytorch.org/whl/cu124 (see https://pytorch.org), '
             'or run with --device cpu')


class KeypointOutputs(nn.Module):
    """The keypoint detector with tuple outputs (value, jacobian): exportable and compilable."""

    def __init__(self, kp_detector: nn.Module):
        super().__init__()
        self.kp_detector = kp_detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.kp_detector(image)
        return out['value'], out['jacobian']


def check_device(device: str) -> torch.device:
    """A usable torch device, or a BackendError saying how to get it (never a silent CPU fallback)."""
    dev = torch.device(device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        build = torch.__version__
        why = 'this PyTorch build has no CUDA support' if torch.version.cuda is None else \
            'no CUDA GPU is visible (driver missing or CUDA_VISIBLE_DEVICES empty)'
        raise BackendError(f'--device {device} requested but {why} (torch {build}): {CUDA_HINT}')
    if dev.type not in ('cpu', 'cuda'):
        raise BackendError(f'unsupported device {device!r}: use cpu or cuda')
    return dev


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise BackendError(f'unknown dtype {name!r}: choose one of {", ".join(DTYPES)}')
    return DTYPES[name]


class TorchBackend(Backend):
    """Eager PyTorch (``compile=True``: the two per-frame graphs go through ``torch.compile``)."""

    def __init__(self, models: Models, size: tuple[int, int], device: str = 'cpu', dtype: str = 'float32',
                 channels_last: bool = False, compile: bool = False, copy_models: bool = True):
        self.name = 'compile' if compile else 'torch'
        self.device, self.dtype, self.channels_last = str(device), dtype, channels_last
        self._device = check_device(device)
        self._dtype = parse_dtype(dtype)
        if self._dtype == torch.float16 and self._device.type == 'cpu':
            raise BackendError('float16 needs a CUDA device; on the CPU use --dtype bfloat16 or float32')
        self.size = size
        if self._device.type == 'cpu' and torch.set_flush_denormal(True):
            # denormal floats (common in untrained or fine-tuned weights' activations) run ~10x slower on x86
            log.debug('flush-to-zero for denormal floats enabled (process-wide)')
        fmt = torch.channels_last if channels_last else torch.preserve_format
        kp = copy.deepcopy(models.kp_detector) if copy_models else models.kp_detector
        gen = copy.deepcopy(models.generator) if copy_models else models.generator
        kp.to(device=self._device, dtype=self._dtype, memory_format=fmt).eval()
        gen.to(device=self._device, dtype=self._dtype, memory_format=fmt).eval()
        self._generator = gen
        self._kp = KeypointOutputs(kp).eval()
        self._frame = FrameGenerator(gen).eval()
        if compile:
            self._kp = torch.compile(self._kp, dynamic=False)
            self._frame = torch.compile(self._frame, dynamic=False)
        self._source: tuple[torch.Tensor, ...] | None = None

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        if image.shape[:2] != tuple(self.size) or image.dtype != np.uint8:
            raise ValueError(f'expected a {self.size[1]}x{self.size[0]} uint8 RGB image, got {image.shape} '
                             f'{image.dtype}')
        # HWC -> NCHW view: its strides are already channels_last, so no copy is needed for that layout
        t = torch.from_numpy(image).to(self._device, non_blocking=True).permute(2, 0, 1)[None]
        t = t.to(self._dtype).mul_(1.0 / 255.0)
        return t if self.channels_last else t.contiguous()

    @staticmethod
    def _kp_numpy(value: torch.Tensor, jacobian: torch.Tensor) -> Keypoints:
        return Keypoints(value[0].float().cpu().numpy(), jacobian[0].float().cpu().numpy())

    @torch.inference_mode()
    def set_source(self, image: np.ndarray) -> Keypoints:
        x = self._to_tensor(image)
        value, jacobian = self._kp(x)
        prepared = self._generator.prepare_source(x, {'value': value, 'jacobian': jacobian})
        self._source = FrameGenerator.source_inputs(prepared)
        return self._kp_numpy(value, jacobian)

    @torch.inference_mode()
    def keypoints(self, image: np.ndarray) -> Keypoints:
        value, jacobian = self._kp(self._to_tensor(image))
        return self._kp_numpy(value, jacobian)

    @torch.inference_mode()
    def generate(self, kp: Keypoints) -> np.ndarray:
        if self._source is None:
            raise RuntimeError('set_source() must be called before generate()')
        value = torch.from_numpy(np.ascontiguousarray(kp.value, dtype=np.float32))[None].to(self._device)
        jacobian = torch.from_numpy(np.ascontiguousarray(kp.jacobian, dtype=np.float32))[None].to(self._device)
        pred = self._frame(*self._source, value, jacobian)
        out = pred[0].float().clamp_(0, 1).mul_(255).add_(0.5).to(torch.uint8).permute(1, 2, 0)
        return np.ascontiguousarray(out.cpu().numpy())
