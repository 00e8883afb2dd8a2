"""``--backend``, ``--device``/``--cpu`` and ``--dtype`` for the commands that animate, ``--mouth_gain`` for those
that animate in relative mode, and the Animator they ask for: declared once for ``fomm animate``, ``reconstruct``
and ``evaluate``."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..animation import Animator
from ..devices import DTYPES, DeviceError, device_name
from ..inference import BACKENDS, RunnerError
from ..models import Models
from ..mouth_gain import MAX_MOUTH_GAIN, check_mouth_gain, mouth_keypoints
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


def checked_number(check: Callable[[float], float]) -> Callable[[str], float]:
    """An argparse ``type``: a number that ``check`` accepts; a non-number and ``check``'s ValueError become usage
    errors with their own messages."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'not a number: {text!r}') from None
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def add_mouth_gain_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--mouth_gain', type=checked_number(check_mouth_gain), default=None, metavar='GAIN',
                        help=f'relative mode: scale the driver\'s lip motion (beyond the head\'s) by GAIN, 0 to '
                             f'{MAX_MOUTH_GAIN:g}; 1 = as it is (default: the gain the model was calibrated with; '
                             f'1 for models that name no lip keypoints)')


def check_mouth_gain_for(models: Models, gain: float | None) -> None:
    """A gain other than the default needs a model whose config names its lip keypoints."""
    if gain is not None and gain != 1.0 and mouth_keypoints(models.config) is None:
        raise CliError('--mouth_gain needs a model trained with lip keypoints (train_params.landmark_keypoints in its '
                       'config, as the bundled face model); this one has none: leave out --mouth_gain')


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
