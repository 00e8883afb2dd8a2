"""Where the bundled default model lives (devices and precisions: ``fomm_model.devices``)."""
from __future__ import annotations

from pathlib import Path

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
