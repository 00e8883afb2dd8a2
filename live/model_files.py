"""Which model file the live app loads, and loading it with errors a user can act on."""
from __future__ import annotations

from pathlib import Path

from fomm_model.checkpoint import CheckpointError, load_checkpoint
from fomm_model.config import ConfigError, load_config
from fomm_model.defaults import resolve_model
from fomm_model.inference.cache import file_hash, graph_key
from fomm_model.models import Models

from .options import ModelOptions


def load_model(options: ModelOptions) -> tuple[Models, str]:
    """The models (on the CPU; the runner moves its own copy) and the key of their exported graphs (file content
    and architecture settings)."""
    from .engine import EngineError
    try:
        config_name, path = resolve_model(options.config, options.checkpoint)
        models = load_checkpoint(load_config(config_name), Path(path).expanduser(), device='cpu',
                                 with_discriminator=False)
    except (CheckpointError, ConfigError, FileNotFoundError) as exc:
        raise EngineError(str(exc)) from exc
    return models, graph_key(models, file_hash(path))
