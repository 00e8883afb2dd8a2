"""Devices and precisions: the one place that says what runs where, for ``fomm`` and the live app alike.

The default device is CUDA when this PyTorch build sees a GPU, else the CPU, and the choice is always said
with its reason; asking for a device that is not there is an error with the fix, never a silent fallback.
"""
from __future__ import annotations

import functools
import os

import torch

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}

CUDA_HINT = ('install a CUDA build of PyTorch matching your driver (see https://pytorch.org/get-started), '
             'or use --device cpu')


class DeviceError(ValueError):
    """A device or precision that cannot be used here; the message says what to do."""


def default_device() -> tuple[torch.device, str]:
    """CUDA when available, else the CPU, with the reason (to be logged or printed by the caller)."""
    if torch.cuda.is_available():
        return torch.device('cuda'), f'CUDA GPU found ({torch.cuda.get_device_name(0)}); --device cpu to use the CPU'
    why = ('this PyTorch build has no CUDA support' if torch.version.cuda is None
           else 'no CUDA GPU is visible (driver missing or CUDA_VISIBLE_DEVICES empty)')
    return torch.device('cpu'), f'{why}, so the model runs on the CPU'


def device_name(text: str) -> str:
    """A device name that can exist somewhere ('auto', 'cpu', 'cuda', 'cuda:N'); whether it exists here is
    :func:`check_device`'s question."""
    if text == 'auto':
        return text
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ('cpu', 'cuda'):
        raise DeviceError(f'unknown device {text!r}: use auto, cpu or cuda (cuda:N for the N-th GPU)')
    return text


def check_device(name: str | torch.device | None) -> torch.device:
    """A usable torch device (None: :func:`default_device`), or a DeviceError with the fix."""
    if name is None or str(name) == 'auto':
        return default_device()[0]
    dev = torch.device(device_name(str(name)))
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise DeviceError(f'--device {name}: {default_device()[1].split(",")[0]} (torch {torch.__version__}); '
                              f'{CUDA_HINT}')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f'--device {name}: only {torch.cuda.device_count()} GPU(s) visible')
    return dev


def available_devices() -> list[str]:
    """Devices that work here, for pickers: cpu, plus cuda / cuda:N when a GPU is visible."""
    devices = ['cpu']
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices += ['cuda'] if count == 1 else [f'cuda:{i}' for i in range(count)]
    return devices


def parse_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """Inference dtype by name; float16 only on CUDA (CPU half-precision convolutions are slow or missing)."""
    if name not in DTYPES:
        raise DeviceError(f'unknown dtype {name!r}: choose one of {", ".join(DTYPES)}')
    if name == 'float16' and torch.device(device).type != 'cuda':
        raise DeviceError('float16 needs a CUDA device; on the CPU use float32 (or bfloat16 on CPUs with '
                          'AVX512-BF16/AMX)')
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


@functools.cache
def cpu_features() -> frozenset[str]:
    """The CPU's instruction-set flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_model() -> str:
    """The CPU's model name, for benchmark tables and logs."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


ISA_CAP_ENV = 'ONEDNN_MAX_CPU_ISA'


def isa_cap() -> str | None:
    """The instruction-set cap oneDNN was given (``ONEDNN_MAX_CPU_ISA=AVX2`` and the like), or None.

    oneDNN (PyTorch's and OpenVINO's convolutions) honours it, so an AVX512 machine can be measured as an
    AVX2 one; ONNX Runtime's own kernels do not. Read from the environment, as oneDNN reads it at load."""
    value = os.environ.get(ISA_CAP_ENV, '').strip().upper()
    return None if value in ('', 'ALL') else value


def cpu_has_fast_bfloat16() -> bool:
    """bfloat16 convolutions are fast only with AVX512-BF16 or AMX; elsewhere they are 5-10x slower than
    float32 (measured on an AVX2-only EPYC), so bfloat16 must not be picked there (nor under an
    :func:`isa_cap` below them)."""
    cap = isa_cap()
    if cap is not None and not any(level in cap for level in ('BF16', 'AMX', 'AVX10')):
        return False
    flags = cpu_features()
    return bool(flags & {'avx512_bf16', 'amx_bf16'}) or torch.cpu._is_avx512_bf16_supported()


def describe_cpu() -> str:
    """'AMD EPYC (AVX2; no AVX512)' and the like, for logs and benchmark tables."""
    flags = cpu_features()
    simd = 'AVX512-BF16' if cpu_has_fast_bfloat16() else 'AVX512' if 'avx512f' in flags else \
        'AVX2' if 'avx2' in flags else 'no AVX2'
    extra = '' if 'avx512f' in flags else '; no AVX512'
    cap = isa_cap()
    if cap is not None:
        extra += f'; oneDNN capped at {cap} by {ISA_CAP_ENV}'
    return f'{cpu_model()} ({simd}{extra}, {torch.get_num_threads()} torch threads)'
