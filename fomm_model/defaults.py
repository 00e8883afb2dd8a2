"""Where the bundled default model lives, and the device choice shared by the CLI and the live app."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

DEFAULT_CONFIG = 'face-128'
DEFAULT_CHECKPOINT = Path('assets/models/face-128.pth.tar')  # relative to the repository root


def repo_root() -> Path:
    """The directory holding the ``fomm_model`` package (the repository root in a checkout)."""
    import fomm_model
    return Path(fomm_model.__file__).resolve().parents[1]


def default_checkpoint_path() -> Path:
    """Absolute path of the bundled face-128 checkpoint (it may not exist yet before training)."""
    return repo_root() / DEFAULT_CHECKPOINT


def resolve_model(config: str | None, checkpoint: str | Path | None) -> tuple[str, Path]:
    """Fill in the defaults: no checkpoint -> the bundled face-128 model; no config -> face-128.

    Raises FileNotFoundError saying what to do when the checkpoint file is missing.
    """
    if checkpoint is None:
        path = default_checkpoint_path()
        if not path.is_file():
            raise FileNotFoundError(
                f'the default model {path} does not exist yet: train it (see assets/models/MODEL_CARD.md) or '
                f'pass --checkpoint FILE with the matching --config')
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f'checkpoint not found: {path}')
    return (config or DEFAULT_CONFIG), path


def select_device(cpu: bool = False, quiet: bool = False) -> torch.device:
    """CPU if asked, else CUDA when available; falling back to the CPU is announced, never silent."""
    if cpu:
        return torch.device('cpu')
    if torch.cuda.is_available():
        return torch.device('cuda')
    if not quiet:
        print('CUDA is not available: running on the CPU (pass --cpu to silence this notice)', file=sys.stderr)
    return torch.device('cpu')


DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def parse_dtype(name: str, device: torch.device) -> torch.dtype:
    """Inference dtype by name; float16 only on CUDA (CPU half-precision convolutions are slow or missing)."""
    if name not in DTYPES:
        raise ValueError(f'unknown dtype {name!r}: choose one of {", ".join(DTYPES)}')
    if name == 'float16' and device.type != 'cuda':
        raise ValueError('float16 needs a CUDA device; on the CPU use --dtype bfloat16')
    return DTYPES[name]
