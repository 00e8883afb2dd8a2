"""TensorRT backend through torch-tensorrt: fp16 engines built once and cached on disk, keyed by checkpoint hash,
GPU name and TensorRT version (an engine is only valid for the GPU and TensorRT it was built with).

torch-tensorrt is imported lazily: it is optional and cannot be installed everywhere.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from fomm_model.animation import FrameGenerator
from fomm_model.models import Models

from .base import Backend, BackendError, Keypoints
from .cache import atomic_write, cache_dir
from .torch_backend import KeypointOutputs, check_device, parse_dtype

log = logging.getLogger(__name__)

TRT_HINT = ('pip install torch-tensorrt (matching your torch version; needs an NVIDIA GPU, CUDA PyTorch and '
            'TensorRT, see https://pytorch.org/TensorRT), or use --backend onnx / --backend torch')


def _import_trt():
    try:
        import torch_tensorrt
    except Exception as exc:  # ImportError, or a broken install raising OSError on its libraries
        raise BackendError(f'--backend tensorrt needs torch-tensorrt, which is not usable here ({exc}): '
                           f'{TRT_HINT}') from exc
    return torch_tensorrt


def _safe(text: str) -> str:
    return ''.join(c if c.isalnum() or c in '.-' else '_' for c in text)


class TensorRTBackend(Backend):
    name = 'tensorrt'

    def __init__(self, models: Models, size: tuple[int, int], model_key: str, device: str = 'cuda',
                 dtype: str = 'float16'):
        if not str(device).startswith('cuda'):
            raise BackendError(f'--backend tensorrt runs on NVIDIA GPUs only: use --device cuda '
                               f'(got --device {device})')
        trt = _import_trt()
        self._device = check_device(device)
        self.device, self.dtype, self.channels_last, self.size = str(device), dtype, False, size
        precision = parse_dtype(dtype)
        gpu = torch.cuda.get_device_name(self._device)
        trt_version = getattr(trt, '__version__', 'unknown')
        folder = cache_dir('tensorrt') / _safe(f'{model_key}-{size[0]}x{size[1]}-{dtype}-{gpu}-trt{trt_version}')
        folder.mkdir(parents=True, exist_ok=True)
        kp_mod = KeypointOutputs(models.kp_detector).to(self._device).float().eval()
        gen = models.generator.to(self._device).float().eval()
        self._generator = gen
        frame = FrameGenerator(gen).eval()
        x = torch.rand(1, 3, *size, device=self._device)
        with torch.no_grad():
            value, jacobian = kp_mod(x)
            source = FrameGenerator.source_inputs(gen.prepare_source(x, {'value': value, 'jacobian': jacobian}))
        self._kp = self._engine(trt, kp_mod, (x,), folder / 'kp.ep', precision)
        self._frame = self._engine(trt, frame, source + (value, jacobian), folder / 'generator.ep', precision)
        self._prep_kp = kp_mod
        self._source = None
        log.info('TensorRT engines for %s (TensorRT %s) in %s', gpu, trt_version, folder)

    @staticmethod
    def _engine(trt, module, inputs, path, precision):
        if path.is_file():
            try:
                return torch.export.load(str(path)).module()
            except Exception as exc:  # noqa: BLE001 - stale or corrupt cache entry: rebuild, and say so
                log.warning('cached TensorRT engine %s unusable (%s); rebuilding', path, exc)
        log.info('building TensorRT engine %s (minutes the first time)', path.name)
        compiled = trt.compile(module, ir='dynamo', inputs=list(inputs), enabled_precisions={precision},
                               truncate_double=True)
        atomic_write(path, lambda p: trt.save(compiled, str(p), inputs=list(inputs), output_format='exported_program'))
        return compiled

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(image).to(self._device).permute(2, 0, 1)[None].float().mul_(1 / 255)
        return t.contiguous()

    @torch.inference_mode()
    def set_source(self, image: np.ndarray) -> Keypoints:
        x = self._to_tensor(image)
        value, jacobian = self._prep_kp(x)
        self._source = FrameGenerator.source_inputs(
            self._generator.prepare_source(x, {'value': value, 'jacobian': jacobian}))
        return Keypoints(value[0].float().cpu().numpy(), jacobian[0].float().cpu().numpy())

    @torch.inference_mode()
    def keypoints(self, image: np.ndarray) -> Keypoints:
        value, jacobian = self._kp(self._to_tensor(image))
        return Keypoints(value[0].float().cpu().numpy(), jacobian[0].float().cpu().numpy())

    @torch.inference_mode()
    def generate(self, kp: Keypoints) -> np.ndarray:
        if self._source is None:
            raise RuntimeError('set_source() must be called before generate()')
        value = torch.from_numpy(np.ascontiguousarray(kp.value, np.float32))[None].to(self._device)
        jacobian = torch.from_numpy(np.ascontiguousarray(kp.jacobian, np.float32))[None].to(self._device)
        pred = self._frame(*self._source, value, jacobian)
        if isinstance(pred, (tuple, list)):
            pred = pred[0]
        out = pred[0].float().clamp_(0, 1).mul_(255).add_(0.5).to(torch.uint8).permute(1, 2, 0)
        return np.ascontiguousarray(out.cpu().numpy())
