"""ONNX Runtime runner: the keypoint detector and the per-frame generator exported once (cached on disk by
weights hash and opset), run by ORT's CPU provider here, its CUDA/TensorRT providers where installed.

The exported ``.onnx`` files are also what :mod:`.openvino_runner` compiles. Per frame the runner hands ORT
numpy views of the input tensors (no copies) and the prepared avatar's feeds, built once per avatar.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ..devices import check_device
from ..models import Models
from .cache import atomic_write, cache_dir
from .graphs import GENERATOR_INPUTS, FrameGenerator, SourceInputs, prepare_source
from .rewrite import subpixel_export_order, winograd_res_blocks
from .runner import EagerPreparer, Runner, RunnerError

log = logging.getLogger(__name__)

OPSET = 17  # grid_sample needs >= 16
GRAPH_VERSION = 'subpixel4'  # changes when the exported graphs change for the same weights (see .rewrite;
# 3: the keypoint detector's anti-alias downscaling blurs at its stride; 4: Winograd's taps read by index)
ORT_HINT = 'pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA), plus onnx and onnxscript for the export'


def export_onnx(models: Models, size: tuple[int, int], model_key: str, opset: int = OPSET,
                openvino: bool = False, winograd: bool = False) -> tuple[Path, Path]:
    """Export (or reuse) ``kp.onnx`` and ``generator.onnx`` for these weights; returns their paths.

    ``openvino``: the forms OpenVINO runs faster and ONNX Runtime slower: up blocks interleaved in DCR order
    (:func:`.rewrite.subpixel_export_order`) and, with ``winograd`` (float32 only), wide residual blocks in
    Winograd's form (:func:`.rewrite.winograd_res_blocks`)."""
    if winograd and not openvino:
        raise ValueError("Winograd's form is exported for OpenVINO only")
    variant = ('-openvino' if openvino else '') + ('-winograd' if winograd else '')
    folder = cache_dir('onnx') / f'{model_key}-{size[0]}x{size[1]}-opset{opset}-{GRAPH_VERSION}{variant}'
    folder.mkdir(parents=True, exist_ok=True)
    kp_path, gen_path = folder / 'kp.onnx', folder / 'generator.onnx'
    if kp_path.is_file() and gen_path.is_file():
        log.info('using cached ONNX graphs in %s', folder)
        return kp_path, gen_path
    log.info('exporting ONNX graphs (opset %d) to %s', opset, folder)
    prep = EagerPreparer(models)
    if openvino:
        subpixel_export_order(prep._kp, 'DCR')
        subpixel_export_order(prep._generator, 'DCR')
    if winograd:
        winograd_res_blocks(prep._generator)
    kp_graph, frame = prep._kp, FrameGenerator(prep._generator).eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        source = prepare_source(kp_graph, prep._generator, x)
        try:
            atomic_write(kp_path, lambda p: torch.onnx.export(
                kp_graph, (x,), str(p), opset_version=opset, dynamo=False, input_names=['image'],
                output_names=['value', 'jacobian']))
            atomic_write(gen_path, lambda p: torch.onnx.export(
                frame, tuple(source) + (source.kp_value, source.kp_jacobian), str(p), opset_version=opset,
                dynamo=False, input_names=list(GENERATOR_INPUTS), output_names=['prediction']))
        except Exception as exc:  # noqa: BLE001 - surfaced with context
            kp_path.unlink(missing_ok=True)
            raise RunnerError(f'ONNX export failed: {exc}') from exc
    return kp_path, gen_path


def as_array(t: torch.Tensor) -> np.ndarray:
    """A float32 C-contiguous numpy view of a CPU tensor (a copy only when dtype, device or layout differ)."""
    return t.detach().to('cpu', torch.float32).contiguous().numpy()


class PreparedFeeds:
    """A prepared avatar as the generator graph's feeds (numpy, built once); keeps its keypoints as tensors.

    Inputs the export pruned (the full-size source image: the graph skips the ``deformed`` visual) are left
    out, so a frame's feed dict is these plus the two driving keypoint arrays."""

    def __init__(self, source: SourceInputs, graph_inputs: set[str] | list[str]):
        self.feeds = {name: as_array(t) for name, t in zip(GENERATOR_INPUTS, source) if name in graph_inputs}
        self.kp_value, self.kp_jacobian = source.kp_value, source.kp_jacobian


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RunnerError(f'--backend onnx needs onnxruntime, which is not installed: {ORT_HINT}') from exc
    return ort


def providers_for(device: torch.device) -> list[str]:
    """ORT execution providers for a device; a GPU device without a GPU-enabled ORT is an error."""
    ort = _import_ort()
    available = ort.get_available_providers()
    if device.type == 'cuda':
        chosen = [p for p in ('TensorrtExecutionProvider', 'CUDAExecutionProvider') if p in available]
        if not chosen:
            raise RunnerError(f'--backend onnx --device {device}: onnxruntime has no CUDA provider (available: '
                              f'{", ".join(available)}); pip uninstall onnxruntime && pip install onnxruntime-gpu')
        return chosen + ['CPUExecutionProvider']
    return ['CPUExecutionProvider']


def session_options(threads: int):
    """Full graph optimisation, ``threads`` intra-op threads, and no spin-waiting.

    ORT's workers spin between runs by default. With two sessions (keypoints, generator) plus PyTorch's own
    threads that is three busy teams on the cores; on this 2-core machine, shared with other jobs, turning
    spinning off halved the median step (152 -> 77 ms, face-128, 2 threads, interleaved)."""
    ort = _import_ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return options


class OnnxRunner(Runner):
    """float32 graphs in ONNX Runtime; the avatar is prepared in eager float32 PyTorch (same weights).

    A session's thread count is fixed when it is created, so :meth:`set_threads` builds sessions for the new
    count (kept, so switching back is free)."""

    name = 'onnx'

    def __init__(self, models: Models, size: tuple[int, int], model_key: str, device: torch.device | str = 'cpu',
                 threads: int | None = None):
        _import_ort()
        self.device = check_device(device)
        self.dtype, self.channels_last = torch.float32, False
        self._providers = providers_for(self.device)
        self._paths = export_onnx(models, size, model_key)
        self._sessions: dict[int, tuple] = {}
        self.threads = 0
        self.set_threads(threads or torch.get_num_threads())
        self.providers = self._gen.get_providers()
        self._gen_inputs = [i.name for i in self._gen.get_inputs()]  # unused inputs are pruned at export
        self._prepare = EagerPreparer(models, 'cpu')

    def set_threads(self, threads: int) -> None:
        """Run with ``threads`` intra-op threads from now on (sessions built on first use of a count)."""
        threads = max(1, int(threads))
        if threads not in self._sessions:
            ort = _import_ort()
            options = session_options(threads)
            self._sessions[threads] = tuple(ort.InferenceSession(str(p), options, providers=self._providers)
                                            for p in self._paths)
            log.info('ONNX Runtime sessions with %d thread(s) ready', threads)
        self._kp, self._gen = self._sessions[threads]
        self.threads = threads

    def describe(self) -> str:
        return f'onnx on {self.device.type} (float32, {self.providers[0]}, {self.threads} threads)'

    def keypoints(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        value, jacobian = self._kp.run(None, {'image': as_array(image)})
        return torch.from_numpy(value), torch.from_numpy(jacobian)

    def prepare_source(self, image: torch.Tensor) -> PreparedFeeds:
        return PreparedFeeds(self._prepare(image.cpu()), self._gen_inputs)

    def generate(self, source: PreparedFeeds, kp_value: torch.Tensor, kp_jacobian: torch.Tensor) -> torch.Tensor:
        feeds = {**source.feeds, 'kp_driving_value': as_array(kp_value),
                 'kp_driving_jacobian': as_array(kp_jacobian)}
        return torch.from_numpy(self._gen.run(None, feeds)[0])

    def close(self) -> None:
        self._sessions.clear()
