"""ONNX Runtime backend: the keypoint detector and the per-frame generator exported once (cached on disk by
checkpoint hash + opset), run by ORT's CPU EP here, CUDA/TensorRT EPs where installed."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from fomm_model.animation import FrameGenerator
from fomm_model.models import Models

from .base import Backend, BackendError, Keypoints
from .cache import atomic_write, cache_dir
from .torch_backend import KeypointOutputs

log = logging.getLogger(__name__)

OPSET = 17  # grid_sample needs >= 16
GEN_INPUTS = ('source_image', 'source_down', 'source_features', 'kp_source_value', 'kp_source_jacobian',
              'kp_driving_value', 'kp_driving_jacobian')
ORT_HINT = 'pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA), plus onnx and onnxscript for the export'


def export_onnx(models: Models, size: tuple[int, int], model_key: str, opset: int = OPSET) -> tuple[Path, Path]:
    """Export (or reuse) ``kp.onnx`` and ``generator.onnx`` for this checkpoint; returns their paths."""
    folder = cache_dir('onnx') / f'{model_key}-{size[0]}x{size[1]}-opset{opset}'
    folder.mkdir(parents=True, exist_ok=True)
    kp_path, gen_path = folder / 'kp.onnx', folder / 'generator.onnx'
    if kp_path.is_file() and gen_path.is_file():
        log.info('using cached ONNX models in %s', folder)
        return kp_path, gen_path
    log.info('exporting ONNX models (opset %d) to %s', opset, folder)
    kp_det = KeypointOutputs(models.kp_detector).float().eval()
    frame = FrameGenerator(models.generator).float().eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        value, jacobian = kp_det(x)
        source = FrameGenerator.source_inputs(models.generator.prepare_source(x, {'value': value,
                                                                                 'jacobian': jacobian}))
        try:
            atomic_write(kp_path, lambda p: torch.onnx.export(
                kp_det, (x,), str(p), opset_version=opset, dynamo=False, input_names=['image'],
                output_names=['value', 'jacobian']))
            atomic_write(gen_path, lambda p: torch.onnx.export(
                frame, source + (value, jacobian), str(p), opset_version=opset, dynamo=False,
                input_names=list(GEN_INPUTS), output_names=['prediction']))
        except Exception as exc:  # noqa: BLE001 - surfaced with context
            kp_path.unlink(missing_ok=True)
            raise BackendError(f'ONNX export failed: {exc}') from exc
    return kp_path, gen_path


def providers_for(device: str) -> list[str]:
    """ORT execution providers for a device; a GPU device without a GPU-enabled ORT is an error."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    if device.startswith('cuda'):
        chosen = [p for p in ('TensorrtExecutionProvider', 'CUDAExecutionProvider') if p in available]
        if not chosen:
            raise BackendError(f'--backend onnx --device {device}: onnxruntime has no CUDA provider '
                               f'(available: {", ".join(available)}); pip uninstall onnxruntime && '
                               f'pip install onnxruntime-gpu')
        return chosen + ['CPUExecutionProvider']
    return ['CPUExecutionProvider']


class OnnxBackend(Backend):
    name = 'onnx'

    def __init__(self, models: Models, size: tuple[int, int], model_key: str, device: str = 'cpu',
                 dtype: str = 'float32', threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError(f'--backend onnx needs onnxruntime: {ORT_HINT}') from exc
        if dtype != 'float32':
            raise BackendError(f'--backend onnx runs float32 models (got --dtype {dtype}); TensorRT EP/--backend '
                               f'tensorrt gives half precision on GPUs')
        self.device, self.dtype, self.channels_last, self.size = device, dtype, False, size
        providers = providers_for(device)
        kp_path, gen_path = export_onnx(models, size, model_key)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self._kp = ort.InferenceSession(str(kp_path), options, providers=providers)
        self._gen = ort.InferenceSession(str(gen_path), options, providers=providers)
        self.providers = self._gen.get_providers()
        self._gen_inputs = {i.name for i in self._gen.get_inputs()}  # unused inputs are pruned at export
        self._source_feeds: dict[str, np.ndarray] | None = None
        # the source preparation runs once per avatar in eager float32 (same weights)
        from .torch_backend import TorchBackend
        self._prep = TorchBackend(models, size, 'cpu', 'float32', copy_models=False)
        self._input = np.empty((1, 3, size[0], size[1]), np.float32)

    def describe(self) -> str:
        return f'onnx on {self.device} ({self.dtype}, {self.providers[0]})'

    def _run_kp(self, image: np.ndarray) -> Keypoints:
        if image.shape[:2] != tuple(self.size) or image.dtype != np.uint8:
            raise ValueError(f'expected a {self.size[1]}x{self.size[0]} uint8 RGB image, got {image.shape}')
        np.multiply(image.transpose(2, 0, 1)[None], np.float32(1 / 255), out=self._input)
        value, jacobian = self._kp.run(None, {'image': self._input})
        return Keypoints(value[0], jacobian[0])

    def set_source(self, image: np.ndarray) -> Keypoints:
        kp = self._prep.set_source(image)
        feeds = {name: t.float().cpu().numpy() for name, t in zip(GEN_INPUTS, self._prep._source)}
        self._source_feeds = {k: v for k, v in feeds.items() if k in self._gen_inputs}
        return kp

    def keypoints(self, image: np.ndarray) -> Keypoints:
        return self._run_kp(image)

    def generate(self, kp: Keypoints) -> np.ndarray:
        if self._source_feeds is None:
            raise RuntimeError('set_source() must be called before generate()')
        feeds = dict(self._source_feeds)
        feeds['kp_driving_value'] = np.ascontiguousarray(kp.value, dtype=np.float32)[None]
        feeds['kp_driving_jacobian'] = np.ascontiguousarray(kp.jacobian, dtype=np.float32)[None]
        pred = self._gen.run(None, feeds)[0][0]
        out = np.clip(pred.transpose(1, 2, 0), 0.0, 1.0) * 255 + 0.5
        return out.astype(np.uint8)
