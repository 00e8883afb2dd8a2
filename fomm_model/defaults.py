"""Where the bundled default model lives and which model a command loads (devices and precisions:
``fomm_model.devices``)."""
from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = 'face-128-v6'
DEFAULT_CHECKPOINT = Path('assets/models/face-128-v6.pth.tar')  # relative to the repository root


def repo_root() -> Path:
    """The directory holding the ``fomm_model`` package (the repository root in a checkout)."""
    import fomm_model
    return Path(fomm_model.__file__).resolve().parents[1]


def default_checkpoint_path() -> Path:
    """Absolute path of the bundled checkpoint (it may not exist yet before training)."""
    return repo_root() / DEFAULT_CHECKPOINT


def resolve_model(config: str | None, checkpoint: str | Path | None) -> tuple[str, Path]:
    """The (config, checkpoint file) to load, with the defaults filled in.

    No checkpoint: the bundled model. A checkpoint that is not a file may name an installed model
    (:mod:`fomm_model.model_store`). No config: the bundled model's own, the one recorded when a model was
    installed, else the one found from the checkpoint's parameter names and shapes
    (:mod:`fomm_model.config_detection`; ConfigDetectionError when none fits).
    Raises FileNotFoundError saying what to do when the checkpoint is neither a file nor an installed model.
    """
    if checkpoint is None:
        path = default_checkpoint_path()
        if not path.is_file():
            raise FileNotFoundError(
                f'the default model {path} does not exist yet: train it (see assets/models/MODEL_CARD.md) or '
                f'pass --checkpoint FILE')
        return (config or DEFAULT_CONFIG), path
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        from .model_store import find_model, models_dir
        entry = find_model(str(checkpoint))
        if entry is None:
            raise FileNotFoundError(f'checkpoint not found: {checkpoint} is neither a file nor an installed model '
                                    f'(python -m fomm_model models list shows those in {models_dir()})')
        return (config or entry.config), entry.path
    if config:
        return config, path
    from .output_paths import same_file
    if same_file(path, default_checkpoint_path()):
        return DEFAULT_CONFIG, path
    from .config_detection import detect_checkpoint_config
    return detect_checkpoint_config(path).config, path
