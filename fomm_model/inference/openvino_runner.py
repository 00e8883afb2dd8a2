"""OpenVINO runner: the two graphs of the ONNX runner (:func:`.onnx_runner.export_onnx`, exported once per
weights), except that in float32 wide residual blocks take Winograd's form (:func:`.rewrite.winograd_res_blocks`,
faster in OpenVINO only), compiled by OpenVINO's CPU plugin. On an AVX2 CPU it ran the per-frame step ~1.4x faster
than ONNX Runtime and ~2x faster than eager PyTorch (see ``benchmarks/bench_animator.py``), at float32
accuracy (max difference to eager float32 under 1e-5). In float32 the graphs also take the uint8 frame and return
it (:func:`uint8_frame_graphs`): the scaling, clipping, rounding and layout changes run fused inside OpenVINO,
about 0.4 ms a frame less than doing them in NumPy around the calls (face-128, 2-core AMD EPYC).

OpenVINO is optional (``pip install openvino``) and imported only when this runner is built.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ..devices import check_device, cpu_has_fast_bfloat16, dtype_name
from ..models import Models
from .cache import cache_dir
from .convert import SCALE
from .onnx_runner import PreparedFeeds, as_array, export_onnx
from .runner import EagerPreparer, Runner, RunnerError

log = logging.getLogger(__name__)

OPENVINO_HINT = 'pip install openvino (or pip install "fomm-live[live]"), plus onnx and onnxscript for the export'
PRECISIONS = {torch.float32: 'f32', torch.bfloat16: 'bf16'}
FRAME_GRAPHS_VERSION = 'v1'  # in the IR files' names: changes when uint8_frame_graphs changes


def _import_openvino():
    """``import openvino``, without its usage telemetry.

    Unless ``~/intel/openvino_telemetry`` opts out, the first ``import openvino`` of a process sends an event to
    Google Analytics from a forked process (``openvino_telemetry``, a dependency of the wheel) and writes
    ``~/intel/``. A webcam app must not report its users' starts anywhere, so while openvino is first imported,
    ``openvino_telemetry`` is made unimportable and OpenVINO binds its own no-op stub instead; other code can still
    import the real package afterwards."""
    if sys.modules.get('openvino') is not None:  # None: a test made it unimportable
        return sys.modules['openvino']
    blocked = 'openvino_telemetry' not in sys.modules
    if blocked:
        sys.modules['openvino_telemetry'] = None  # an import of it now raises ImportError
    try:
        import openvino
    except ImportError as exc:
        raise RunnerError(f'--backend openvino needs OpenVINO, which is not installed: {OPENVINO_HINT}') from exc
    finally:
        if blocked:
            del sys.modules['openvino_telemetry']
    return openvino


def compile_config(threads: int, dtype: torch.dtype) -> dict:
    """CPU plugin settings for one latency-bound stream.

    * ``INFERENCE_PRECISION_HINT`` is always explicit: on CPUs with AVX512-BF16/AMX OpenVINO would otherwise
      run float32 models in bfloat16 on its own.
    * no CPU pinning: a pinned thread whose core another process keeps busy cannot move to a free core."""
    return {'INFERENCE_NUM_THREADS': int(threads), 'NUM_STREAMS': 1, 'PERFORMANCE_HINT': 'LATENCY',
            'INFERENCE_PRECISION_HINT': PRECISIONS[dtype], 'ENABLE_CPU_PINNING': False}


def uint8_frame_graphs(kp_model, gen_model) -> tuple:
    """Copies of the per-frame graphs for uint8 frames, computing exactly what :mod:`.convert` does in NumPy:
    a keypoint graph taking a (1, H, W, 3) uint8 frame (scaled by the same float32 1/255) and a generator with
    a second output, the (1, H, W, 3) uint8 frame (clipped to [0, 1], times 255, plus 0.5, rounded down)."""
    ov = _import_openvino()
    from openvino import opset13 as ops
    from openvino.preprocess import PrePostProcessor
    kp_model, gen_model = kp_model.clone(), gen_model.clone()
    ppp = PrePostProcessor(kp_model)
    ppp.input(0).tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout('NHWC'))
    ppp.input(0).model().set_layout(ov.Layout('NCHW'))
    ppp.input(0).preprocess().convert_element_type(ov.Type.f32).custom(
        lambda x: ops.multiply(x, ops.constant(SCALE)).output(0))
    kp_model = ppp.build()
    frame = ops.clamp(gen_model.get_results()[0].input_value(0), 0.0, 1.0)
    frame = ops.floor(ops.add(ops.multiply(frame, ops.constant(np.float32(255))), ops.constant(np.float32(0.5))))
    frame = ops.transpose(ops.convert(frame, 'u8'), ops.constant(np.array([0, 2, 3, 1], np.int64)))
    gen_model.add_results([ops.result(frame)])
    return kp_model, gen_model


class OpenVinoRunner(Runner):
    """float32 (or, on CPUs with fast bfloat16, bfloat16) graphs compiled by OpenVINO for the CPU.

    The avatar is prepared in eager float32 PyTorch; its feeds are bound to the generator's infer request
    once, so a frame sets only the two driving-keypoint inputs. Compiled models are cached on disk by
    OpenVINO (``CACHE_DIR``), and per thread count in memory for :meth:`set_threads`."""

    name = 'openvino'

    def __init__(self, models: Models, size: tuple[int, int], model_key: str, device: torch.device | str = 'cpu',
                 dtype: torch.dtype = torch.float32, threads: int | None = None):
        ov = _import_openvino()
        self.device = check_device(device)
        if self.device.type != 'cpu':
            raise RunnerError(f'--backend openvino runs on the CPU (got --device {device}); on NVIDIA GPUs use '
                              f'--backend tensorrt or onnx')
        if dtype not in PRECISIONS:
            raise RunnerError(f'--backend openvino runs float32 or bfloat16 (got --dtype {dtype_name(dtype)})')
        if dtype == torch.bfloat16 and not cpu_has_fast_bfloat16():
            raise RunnerError('--backend openvino --dtype bfloat16 needs a CPU with AVX512-BF16 or AMX (this one '
                              'has neither, and would emulate it in float32); use --dtype float32')
        self.dtype, self.channels_last = dtype, False
        # bfloat16 would compute the in-graph x * 255 + 0.5 with an 8-bit mantissa: its frames convert in NumPy
        self.images_in_graph = dtype == torch.float32
        # Winograd's transforms scale values by up to 8x before the products: fine in float32 (~1e-5), not at
        # bfloat16's 8-bit mantissa, so bfloat16 graphs keep the direct convolutions
        self._paths = export_onnx(models, size, model_key, openvino=True, winograd=dtype == torch.float32)
        self._core = ov.Core()
        # graph files (not in-memory models), so that OpenVINO's disk cache serves every thread count
        self._graph_files = dict(zip(('kp', 'generator'), self._paths))
        if self.images_in_graph:
            self._graph_files['generator'], self._graph_files['kp_image'] = self._frame_graph_files()
        self._core.set_property({'CACHE_DIR': str(cache_dir('openvino'))})
        self._requests: dict[int, dict] = {}   # per thread count, per graph
        self.threads = 0
        self._bound: PreparedFeeds | None = None
        self.set_threads(threads or torch.get_num_threads())
        # an input port can carry several tensor names after OpenVINO's front end (e.g. '/Cast_5_output_0')
        self._gen_inputs = set().union(*(port.get_names() for port in self._request('generator').model_inputs))
        self._prepare = EagerPreparer(models, 'cpu')

    def _frame_graph_files(self) -> list[Path]:
        """The generator and keypoint graphs of :func:`uint8_frame_graphs` as OpenVINO IR beside the ONNX export,
        written once (a compiled in-memory model took twice as long to compile from the cache)."""
        folder = self._paths[0].parent
        files = [folder / f'generator-uint8-{FRAME_GRAPHS_VERSION}.xml', folder / f'kp-uint8-{FRAME_GRAPHS_VERSION}.xml']
        if not all(f.is_file() and f.with_suffix('.bin').is_file() for f in files):
            ov = _import_openvino()
            kp, generator = uint8_frame_graphs(*(self._core.read_model(str(p)) for p in self._paths))
            for model, path in zip((generator, kp), files):
                tmp = path.with_name(f'{path.stem}.{os.getpid()}.tmp.xml')
                ov.save_model(model, str(tmp), compress_to_fp16=False)
                tmp.with_suffix('.bin').replace(path.with_suffix('.bin'))
                tmp.replace(path)
        return files

    def set_threads(self, threads: int) -> None:
        """Run with ``threads`` inference threads from now on. The thread count is fixed per compiled model, so
        a new count is compiled once (from OpenVINO's disk cache when it was compiled before) and kept."""
        self.threads = max(1, int(threads))
        if self.threads not in self._requests:
            for role in ('kp_image' if self.images_in_graph else 'kp', 'generator'):   # what each frame runs
                self._request(role)
            log.info('OpenVINO models compiled for %d thread(s) (%s)', self.threads, PRECISIONS[self.dtype])
        self._bound = None  # the new generator request has no avatar bound yet

    def _request(self, role: str):
        """The infer request of one graph (``kp``, ``generator``, ``kp_image``) at the current thread count,
        compiled on first use: frames from the app never need the float keypoint graph."""
        requests = self._requests.setdefault(self.threads, {})
        if role not in requests:
            compiled = self._core.compile_model(str(self._graph_files[role]), 'CPU',
                                                compile_config(self.threads, self.dtype))
            requests[role] = compiled.create_infer_request()
        return requests[role]

    def describe(self) -> str:
        return f'openvino on cpu ({dtype_name(self.dtype)}, {self.threads} threads)'

    def keypoints(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._request('kp').infer({0: as_array(image)}, share_inputs=True)
        return torch.from_numpy(out[0]), torch.from_numpy(out[1])

    def prepare_source(self, image: torch.Tensor) -> PreparedFeeds:
        return PreparedFeeds(self._prepare(image.cpu()), self._gen_inputs)

    def generate(self, source: PreparedFeeds, kp_value: torch.Tensor, kp_jacobian: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.array(self._generate(source, kp_value, kp_jacobian)[0]))

    def keypoints_of_image(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.images_in_graph:
            return super().keypoints_of_image(image)
        out = self._request('kp_image').infer({0: np.ascontiguousarray(image)[None]}, share_inputs=True)
        return torch.from_numpy(out[0]), torch.from_numpy(out[1])

    def generate_image(self, source: PreparedFeeds, kp_value: torch.Tensor, kp_jacobian: torch.Tensor) -> np.ndarray:
        if not self.images_in_graph:
            return super().generate_image(source, kp_value, kp_jacobian)
        return np.array(self._generate(source, kp_value, kp_jacobian)[1][0])

    def _generate(self, source: PreparedFeeds, kp_value: torch.Tensor, kp_jacobian: torch.Tensor):
        """The generator's outputs, in the request's own memory (valid until its next call)."""
        generator = self._request('generator')
        if self._bound is not source:  # bind the avatar's inputs once, not every frame
            ov = _import_openvino()
            for name, array in source.feeds.items():
                generator.set_tensor(name, ov.Tensor(array, shared_memory=True))
            self._bound = source
        return generator.infer({'kp_driving_value': as_array(kp_value), 'kp_driving_jacobian': as_array(kp_jacobian)},
                               share_inputs=True, share_outputs=True)

    def close(self) -> None:
        self._requests.clear()
        self._bound = None
