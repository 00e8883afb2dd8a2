"""TensorRT runner through torch-tensorrt: fp16 engines built once and cached on disk, keyed by weights hash,
GPU name and TensorRT version (an engine is only valid for the GPU and TensorRT it was built with).

torch-tensorrt is imported lazily: it is optional and cannot be installed everywhere.
"""
from __future__ import annotations

import logging

import torch

from ..devices import check_device, dtype_name
from ..models import Models
from .cache import atomic_write, cache_dir
from .graphs import FrameGenerator, SourceInputs
from .runner import EagerPreparer, Runner, RunnerError

log = logging.getLogger(__name__)

TRT_HINT = ('pip install torch-tensorrt (matching your torch version; needs an NVIDIA GPU, CUDA PyTorch and '
            'TensorRT, see https://pytorch.org/TensorRT), or use --backend onnx / --backend torch')


def _import_trt():
    try:
        import torch_tensorrt
    except Exception as exc:  # ImportError, or a broken install raising OSError on its libraries
        raise RunnerError(f'--backend tensorrt needs torch-tensorrt, which is not usable here ({exc}): '
                          f'{TRT_HINT}') from exc
    return torch_tensorrt


def _safe(text: str) -> str:
    return ''.join(c if c.isalnum() or c in '.-' else '_' for c in text)


class TensorRTRunner(Runner):
    """Engines for the two per-frame graphs; the avatar is prepared in eager float32 on the GPU."""

    name = 'tensorrt'

    def __init__(self, models: Models, size: tuple[int, int], model_key: str, device: torch.device | str = 'cuda',
                 dtype: torch.dtype = torch.float16):
        if torch.device(device).type != 'cuda':
            raise RunnerError(f'--backend tensorrt runs on NVIDIA GPUs only: use --device cuda (got --device '
                              f'{device})')
        trt = _import_trt()
        self.device = check_device(device)
        self.dtype, self.channels_last = dtype, False
        gpu = torch.cuda.get_device_name(self.device)
        trt_version = getattr(trt, '__version__', 'unknown')
        folder = cache_dir('tensorrt') / _safe(f'{model_key}-{size[0]}x{size[1]}-{dtype_name(dtype)}-{gpu}-'
                                              f'trt{trt_version}')
        folder.mkdir(parents=True, exist_ok=True)
        self._prepare = EagerPreparer(models, self.device)
        frame = FrameGenerator(self._prepare._generator).eval()
        x = torch.rand(1, 3, *size, device=self.device)
        source = self._prepare(x)
        self._kp = self._engine(trt, self._prepare._kp, (x,), folder / 'kp.ep')
        self._frame = self._engine(trt, frame, tuple(source) + (source.kp_value, source.kp_jacobian),
                                   folder / 'generator.ep')
        log.info('TensorRT engines for %s (TensorRT %s) in %s', gpu, trt_version, folder)

    def _engine(self, trt, module, inputs, path):
        if path.is_file():
            try:
                return torch.export.load(str(path)).module()
            except Exception as exc:  # noqa: BLE001 - stale or corrupt cache entry: rebuild, and say so
                log.warning('cached TensorRT engine %s unusable (%s); rebuilding', path, exc)
        log.info('building TensorRT engine %s (minutes the first time)', path.name)
        compiled = trt.compile(module, ir='dynamo', inputs=list(inputs), enabled_precisions={self.dtype},
                               truncate_double=True)
        atomic_write(path, lambda p: trt.save(compiled, str(p), inputs=list(inputs),
                                              output_format='exported_program'))
        return compiled

    @torch.inference_mode()
    def keypoints(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        value, jacobian = self._kp(image.float())
        return value.float(), jacobian.float()

    def prepare_source(self, image: torch.Tensor) -> SourceInputs:
        return self._prepare(image)

    @torch.inference_mode()
    def generate(self, source: SourceInputs, kp_value: torch.Tensor, kp_jacobian: torch.Tensor) -> torch.Tensor:
        pred = self._frame(*source, kp_value.to(self.device), kp_jacobian.to(self.device))
        return pred[0] if isinstance(pred, (tuple, list)) else pred
