"""PyTorch runners: eager (any device and dtype, optional channels_last) and ``torch.compile``."""
from __future__ import annotations

import copy
import logging

import torch

from ..devices import DeviceError, check_device
from ..models import Models
from .graphs import FrameGenerator, KeypointGraph, SourceInputs, prepare_source
from .rewrite import subpixel_up_blocks
from .runner import Runner, RunnerError

log = logging.getLogger(__name__)


def flush_denormals_on_cpu(device: torch.device) -> None:
    """Denormal floats (common in fine-tuned weights' activations) run ~10x slower on x86: flush them to zero.
    Process-wide; harmless for inference (values below 1e-38)."""
    if device.type == 'cpu' and torch.set_flush_denormal(True):
        log.debug('flush-to-zero for denormal floats enabled (process-wide)')


class TorchRunner(Runner):
    """Eager PyTorch on a private copy of the networks; ``compile=True`` puts the two per-frame graphs
    through ``torch.compile`` (a slow first call, then fused kernels). ``rewrite`` applies the exact
    inference rewrites of :mod:`.rewrite` (off only for the float32 reference every runner is checked against)."""

    def __init__(self, models: Models, device: torch.device | str = 'cpu', dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, compile: bool = False, rewrite: bool = True):
        try:
            self.device = check_device(device)
        except DeviceError as exc:
            raise RunnerError(str(exc)) from exc
        if dtype == torch.float16 and self.device.type == 'cpu':
            raise RunnerError('float16 needs a CUDA device; on the CPU use float32 (or bfloat16 with AVX512-BF16)')
        self.name = 'compile' if compile else 'torch'
        self.dtype, self.channels_last = dtype, channels_last
        flush_denormals_on_cpu(self.device)
        fmt = torch.channels_last if channels_last else torch.preserve_format
        kp, generator = copy.deepcopy(models.kp_detector).eval(), copy.deepcopy(models.generator).eval()
        if rewrite:   # in float32, before the cast
            subpixel_up_blocks(kp.float())
            subpixel_up_blocks(generator.float())
        kp = kp.to(device=self.device, dtype=dtype, memory_format=fmt)
        generator = generator.to(device=self.device, dtype=dtype, memory_format=fmt)
        self._kp_eager = KeypointGraph(kp).eval()
        self._generator = generator
        self._kp = self._kp_eager
        self._frame = FrameGenerator(generator).eval()
        if compile:
            self._kp = torch.compile(self._kp_eager, dynamic=False)
            self._frame = torch.compile(self._frame, dynamic=False)

    @torch.inference_mode()
    def keypoints(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        value, jacobian = self._kp(image)
        return value.float(), jacobian.float()

    @torch.inference_mode()
    def prepare_source(self, image: torch.Tensor) -> SourceInputs:
        return prepare_source(self._kp_eager, self._generator, image)

    @torch.inference_mode()
    def generate(self, source: SourceInputs, kp_value: torch.Tensor, kp_jacobian: torch.Tensor) -> torch.Tensor:
        return self._frame(*source, kp_value.to(self.device), kp_jacobian.to(self.device))
