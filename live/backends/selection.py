"""``--backend auto|torch|compile|tensorrt|onnx``: build the requested backend, check it against eager float32,
and for ``auto`` measure the candidates and keep the fastest, saying why."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from fomm_model.models import Models

from .base import Backend, BackendError, time_steps, verify_backend
from .torch_backend import TorchBackend, check_device

log = logging.getLogger(__name__)

BACKEND_NAMES = ('auto', 'torch', 'compile', 'tensorrt', 'onnx')


@dataclass
class Selection:
    backend: Backend
    reason: str
    verification: dict[str, float] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)   # auto: candidate -> ms per step


def _build(name: str, models: Models, size, model_key: str, device: str, dtype: str,
           channels_last: bool) -> Backend:
    if name == 'torch':
        return TorchBackend(models, size, device, dtype, channels_last)
    if name == 'compile':
        return TorchBackend(models, size, device, dtype, channels_last, compile=True)
    if name == 'onnx':
        from .onnx_backend import OnnxBackend
        return OnnxBackend(models, size, model_key, device, dtype)
    if name == 'tensorrt':
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(models, size, model_key, device, 'float16' if dtype == 'float32' else dtype)
    raise BackendError(f'unknown backend {name!r}: choose one of {", ".join(BACKEND_NAMES)}')


def _candidates(device: str) -> list[tuple[str, str, bool]]:
    if device.startswith('cuda'):
        return [('tensorrt', 'float16', False), ('torch', 'float16', True), ('torch', 'float32', False)]
    cands = [('torch', 'float32', False), ('torch', 'bfloat16', True)]
    try:
        import onnxruntime  # noqa: F401
        cands.append(('onnx', 'float32', False))
    except ImportError:
        log.info('auto: onnxruntime not installed, not a candidate')
    return cands


def _label(name: str, dtype: str, channels_last: bool) -> str:
    return f"{name} {dtype}{'+channels_last' if channels_last else ''}"


def create_backend(name: str, models: Models, size: tuple[int, int], model_key: str, device: str = 'cpu',
                   dtype: str = 'float32', channels_last: bool = False, verify: bool = True) -> Selection:
    """The backend to run, verified against eager float32 on a test input."""
    if name not in BACKEND_NAMES:
        raise BackendError(f'unknown backend {name!r}: choose one of {", ".join(BACKEND_NAMES)}')
    check_device(device)
    reference = TorchBackend(models, size, 'cpu', 'float32')
    if name != 'auto':
        backend = _build(name, models, size, model_key, device, dtype, channels_last)
        report = verify_backend(backend, reference, size) if verify else {}
        reason = f'requested --backend {name}'
        backend.selection_reason = reason
        log.info('backend: %s (%s)', backend.describe(), reason)
        return Selection(backend, reason, report)
    timings: dict[str, float] = {}
    rejected: list[str] = []
    best: tuple[float, Backend, dict] | None = None
    for cand, cdtype, ccl in _candidates(device):
        label = _label(cand, cdtype, ccl)
        try:
            backend = _build(cand, models, size, model_key, device, cdtype, ccl)
            report = verify_backend(backend, reference, size)
            ms = time_steps(backend, size)
        except BackendError as exc:
            rejected.append(f'{label}: {exc}')
            log.info('auto: %s rejected: %s', label, exc)
            continue
        timings[label] = ms
        if best is None or ms < best[0]:
            best = (ms, backend, report)
    if best is None:
        raise BackendError('no backend works on this machine: ' + '; '.join(rejected))
    ms, backend, report = best
    others = ', '.join(f'{k} {v:.1f} ms' for k, v in timings.items() if k != _label(backend.name, backend.dtype,
                                                                                       backend.channels_last))
    reason = (f'auto: fastest on {device} at {ms:.1f} ms per model step'
              + (f' (vs {others})' if others else '') + (f'; skipped: {"; ".join(rejected)}' if rejected else ''))
    backend.selection_reason = reason
    log.info('backend: %s - %s', backend.describe(), reason)
    return Selection(backend, reason, report, timings)


