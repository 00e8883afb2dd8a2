"""``backend = auto | torch | compile | onnx | openvino | tensorrt``: build the runner, check it against eager
float32, and for ``auto`` time the candidates this machine can run (by CPU capability and installed runtimes),
interleaved, and keep the fastest, saying why."""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field

import torch

from ..devices import (DTYPES, DeviceError, check_device, cpu_has_fast_bfloat16, default_device, describe_cpu,
                       dtype_name)
from ..models import Models
from .runner import Runner, RunnerError
from .torch_runner import TorchRunner
from .verify import AUTO_MAX_OUTPUT_DIFF, time_interleaved, verify_runner

log = logging.getLogger(__name__)

PROBE_ROUNDS, PROBE_WARMUP = 7, 2   # auto's probe: timed steps per candidate (median), untimed first steps

BACKENDS = ('auto', 'torch', 'compile', 'onnx', 'openvino', 'tensorrt')

# optional runtimes: backend -> (module to look for, install hint)
OPTIONAL = {'onnx': ('onnxruntime', 'pip install onnxruntime'), 'openvino': ('openvino', 'pip install openvino')}


@dataclass
class Selection:
    runner: Runner
    reason: str
    verification: dict[str, float] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)   # auto: candidate -> ms per step


def build_runner(name: str, models: Models, size: tuple[int, int], device: torch.device, dtype: torch.dtype,
                 channels_last: bool = False, model_key: str | None = None) -> Runner:
    """One runner by name (no check, no timing)."""
    if name in ('torch', 'compile'):
        return TorchRunner(models, device, dtype, channels_last, compile=name == 'compile')
    if name == 'onnx':
        if dtype != torch.float32:
            raise RunnerError(f'--backend onnx runs float32 graphs (got --dtype {dtype_name(dtype)}); '
                              f'--backend tensorrt gives half precision on NVIDIA GPUs')
        from .onnx_runner import OnnxRunner
        return OnnxRunner(models, size, model_key or _key(models), device)
    if name == 'openvino':
        from .openvino_runner import OpenVinoRunner
        return OpenVinoRunner(models, size, model_key or _key(models), device, dtype)
    if name == 'tensorrt':
        from .tensorrt_runner import TensorRTRunner
        return TensorRTRunner(models, size, model_key or _key(models), device,
                              torch.float16 if dtype == torch.float32 else dtype)
    raise RunnerError(f'unknown backend {name!r}: choose one of {", ".join(BACKENDS)}')


def _key(models: Models) -> str:
    from .cache import graph_key
    return graph_key(models)


def installed(backend: str) -> str | None:
    """None when the optional runtime behind ``backend`` can be imported, else why not (with the install hint).
    Looks the package up without importing it (importing OpenVINO or ORT costs start-up time)."""
    module, hint = OPTIONAL.get(backend, (None, ''))
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return f'{backend}: {module} is not installed ({hint})'


Candidate = tuple[str, torch.dtype, bool]   # (backend, dtype, channels_last)


def candidates(device: torch.device) -> tuple[list[Candidate], list[str]]:
    """(backend, dtype, channels_last) worth timing on ``device``, and why others are left out.

    On the CPU: eager float32 (both layouts), ONNX Runtime and OpenVINO when installed; bfloat16 (eager and
    OpenVINO) only on CPUs with AVX512-BF16 or AMX, where it is fast: elsewhere it runs 5-10x slower than
    float32. int8 is not offered: static int8 (OpenVINO/NNCF, calibrated on 28 frames of the training clips,
    only the decoder's convolutions quantised, keypoint maths and grid sampling left in float32) ran the
    bundled model's generator 1.3-1.8x faster on AVX2 but moved single pixels by up to 3.1-3.7% of the value
    range (mean 0.2-0.35%, held-out clips), above the 2% the issue allows; float32 runtimes: under 1e-5. Only
    the six bottleneck blocks in int8 (NNCF 3.4, 72 calibration frames, 2026-12-05, capped at AVX2) saved 1.7 ms
    of a 9.7 ms generator step but moved pixels by up to 0.80 (mean 1.7%, held-out clips driving the
    portraits; per-tensor activation scales, as OpenVINO's CPU plugin runs int8)."""
    if device.type == 'cuda':
        return [('tensorrt', torch.float16, False), ('torch', torch.float16, True),
                ('torch', torch.float32, False)], []
    found: list[Candidate] = [('torch', torch.float32, False), ('torch', torch.float32, True)]
    skipped = []
    fast_bf16 = cpu_has_fast_bfloat16()
    if fast_bf16:
        found.append(('torch', torch.bfloat16, True))
    else:
        skipped.append('bfloat16: this CPU has no AVX512-BF16/AMX, where it runs 5-10x slower than float32')
    for backend in ('onnx', 'openvino'):
        missing = installed(backend)
        if missing:
            skipped.append(missing)
            continue
        found.append((backend, torch.float32, False))
        if backend == 'openvino' and fast_bf16:
            found.append((backend, torch.bfloat16, False))
    return found, skipped


def label(name: str, dtype: torch.dtype, channels_last: bool) -> str:
    return f"{name} {dtype_name(dtype)}{'+channels_last' if channels_last else ''}"


def create_runner(models: Models, size: tuple[int, int], backend: str = 'auto',
                  device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
                  channels_last: bool | None = None, model_key: str | None = None, verify: bool = True) -> Selection:
    """The runner to use, checked against eager float32 (``verify``); RunnerError says what to do if none."""
    if backend not in BACKENDS:
        raise RunnerError(f'unknown backend {backend!r}: choose one of {", ".join(BACKENDS)}')
    try:
        dev = check_device(device)
    except DeviceError as exc:
        raise RunnerError(str(exc)) from exc
    device_reason = default_device()[1] if device in (None, 'auto') else f'--device {device}'
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype) or _bad_dtype(dtype)
    # the unchanged model in eager float32 (no rewrites): what every runner must agree with
    reference = TorchRunner(models, 'cpu', torch.float32, rewrite=False) if verify else None
    try:
        if backend != 'auto':
            dt = dtype or (torch.float16 if backend == 'tensorrt' else torch.float32)
            runner = build_runner(backend, models, size, dev, dt, bool(channels_last), model_key)
            report = verify_runner(runner, reference, size) if reference is not None else {}
            reason = f'requested --backend {backend}; {device_reason}'
            if dt == torch.bfloat16 and dev.type == 'cpu' and not cpu_has_fast_bfloat16():
                slow = (f'{describe_cpu()} has no AVX512-BF16/AMX: bfloat16 runs 5-10x slower than float32 here; '
                        f'leave --dtype out (auto) or use --dtype float32')
                log.warning('%s', slow)
                reason += f'; {slow}'
            log.info('backend: %s (%s)', runner.describe(), reason)
            return Selection(runner, reason, report)
        return _auto(models, size, dev, device_reason, dtype, channels_last, model_key, reference)
    finally:
        del reference  # the float32 reference copy lives only during the check


def _bad_dtype(name: str):
    raise RunnerError(f'unknown dtype {name!r}: choose one of {", ".join(DTYPES)}')


def _auto(models, size, dev, device_reason, dtype, channels_last, model_key, reference) -> Selection:
    """Build and verify every candidate, time them interleaved (:func:`.verify.time_interleaved`), keep the
    fastest and say why, with what was not tried and what failed."""
    cands, skipped = candidates(dev)
    if dtype is not None:
        cands = [c for c in cands if c[1] == dtype] or [('torch', dtype, bool(channels_last))]
    if channels_last:   # asked for explicitly (False is also every caller's default: no filter then)
        cands = [c for c in cands if c[0] != 'torch' or c[2]] or cands
    runners: dict[str, Runner] = {}
    reports: dict[str, dict] = {}
    rejected: list[str] = []
    for name, cdtype, ccl in cands:
        text = label(name, cdtype, ccl)
        try:
            runner = build_runner(name, models, size, dev, cdtype, ccl, model_key)
            reports[text] = verify_runner(runner, reference, size) if reference is not None else {}
            off = reports[text].get('output_max_abs_diff', 0.0)
            if dtype is None and cdtype != torch.float32 and off > AUTO_MAX_OUTPUT_DIFF:
                runner.close()
                raise RunnerError(f'output differs from float32 by {off:.3f} of the value range, more than the '
                                  f'{AUTO_MAX_OUTPUT_DIFF} auto accepts (--dtype {dtype_name(cdtype)} to use it)')
            runners[text] = runner
        except RunnerError as exc:
            rejected.append(f'{text}: {exc}')
            log.info('auto: %s rejected: %s', text, exc)
    if not runners:
        raise RunnerError('no backend works on this machine: ' + '; '.join(rejected))
    timings = time_interleaved(runners, size, rounds=PROBE_ROUNDS, warmup=PROBE_WARMUP)
    chosen = min(timings, key=timings.get)
    for text, runner in runners.items():
        log.info('auto: %s %.1f ms per model step', text, timings[text])
        if text != chosen:
            runner.close()
    runner = runners[chosen]
    others = ', '.join(f'{k} {v:.1f} ms' for k, v in sorted(timings.items(), key=lambda kv: kv[1]) if k != chosen)
    reason = (f'auto: {chosen} fastest on {dev.type} at {timings[chosen]:.1f} ms per model step (median of '
              f'{PROBE_ROUNDS} interleaved rounds' + (f'; {others}' if others else '') + ')'
              + (f'; {describe_cpu()}' if dev.type == 'cpu' else '') + f'; {device_reason}'
              + (f'; not tried: {"; ".join(skipped)}' if skipped else '')
              + (f'; rejected: {"; ".join(rejected)}' if rejected else ''))
    log.info('backend: %s - %s', runner.describe(), reason)
    return Selection(runner, reason, reports[chosen], timings)
