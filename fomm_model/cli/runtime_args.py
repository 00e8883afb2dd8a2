"""``--backend``, ``--device``/``--cpu`` and ``--dtype`` for the commands that animate, and the Animator they ask
for: declared once for ``fomm animate``, ``reconstruct`` and ``evaluate``."""
from __future__ import annotations

import argparse
import sys

from ..animation import Animator
from ..devices import DTYPES, DeviceError, device_name
from ..inference import BACKENDS, RunnerError
from ..models import Models
from . import CliError


def _device(text: str) -> str:
    try:
        return device_name(text)
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_runtime_arguments(parser: argparse.ArgumentParser, backend: str) -> None:
    parser.add_argument('--backend', choices=BACKENDS, default=backend,
                        help=f'runtime (default {backend}; auto times what this machine can run, checks it against '
                             f'float32 and keeps the fastest)')
    parser.add_argument('--device', type=_device, default='auto',
                        help='cpu, cuda or cuda:N (default auto: CUDA when available, else the CPU)')
    parser.add_argument('--cpu', action='store_true', help='same as --device cpu')
    parser.add_argument('--dtype', choices=list(DTYPES), default=None,
                        help='precision (default: chosen with the backend; bfloat16 pays only on CPUs with '
                             'AVX512-BF16/AMX, float16 needs CUDA)')


def animator_for(models: Models, args: argparse.Namespace, quiet: bool = False, **kwargs) -> Animator:
    """The Animator the arguments ask for; what was chosen and why goes to stderr."""
    try:
        animator = Animator(models, backend=args.backend, device='cpu' if args.cpu else args.device,
                            dtype=args.dtype, **kwargs)
    except RunnerError as exc:
        raise CliError(str(exc)) from exc
    if not quiet:
        print(f'model runs on: {animator.describe()} [{animator.selection_reason}]', file=sys.stderr)
    return animator
