"""YAML configs in the original first-order-model layout, shipped in the package and addressable by name."""
from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import yaml

CONFIG_PACKAGE = 'fomm_model.configs'
# Earlier default models' configs, retired to docs/experiments, whose networks the current default has: a name an
# installed model's record or saved settings still hold loads the config that replaced it.
RETIRED_CONFIGS = {'face-128-v3': 'face-128-v6', 'face-128-v4': 'face-128-v6', 'face-128-v5': 'face-128-v6'}

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config that cannot be found, is not valid YAML (``path`` and ``line`` say where) or lacks a section."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


class FommConfig(dict):
    """A plain config dict that remembers where it came from (for error messages)."""

    source: str = '<dict>'


yaml.SafeDumper.add_representer(FommConfig, yaml.representer.SafeRepresenter.represent_dict)


def available_configs() -> list[str]:
    """Names of the configs shipped with the package (``vox-256``, ``taichi-256``, ...)."""
    return sorted(p.name[:-5] for p in resources.files(CONFIG_PACKAGE).iterdir() if p.name.endswith('.yaml'))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A file path as given, else a shipped config by name (with or without ``.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name[:-5] if path.name.endswith('.yaml') else path.name
    if str(path) in (name, name + '.yaml'):
        if name in RETIRED_CONFIGS:
            log.warning("config '%s' was retired (its recipe: docs/experiments/%s.yaml); loading %s, which builds "
                        "the same networks", name, name, RETIRED_CONFIGS[name])
            name = RETIRED_CONFIGS[name]
        shipped = resources.files(CONFIG_PACKAGE) / f'{name}.yaml'
        if shipped.is_file():
            return Path(str(shipped))
    raise ConfigError(f"config '{name_or_path}' not found: give a YAML file path or one of the shipped "
                      f"configs: {', '.join(available_configs())}")


def load_config(name_or_path: str | Path | dict) -> FommConfig:
    """Load a config by shipped name or path. Older configs' ``image_shape`` is read as ``frame_shape``."""
    if isinstance(name_or_path, FommConfig):
        return name_or_path
    if isinstance(name_or_path, dict):
        config = FommConfig(name_or_path)
        config.source = getattr(name_or_path, 'source', '<dict>')
        return config
    path = resolve_config_path(name_or_path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get('model_params'), dict):
        raise ConfigError(f"{path} is not a first-order-model config: it has no 'model_params' section", path)
    for section in ('common_params', 'kp_detector_params', 'generator_params'):
        if not isinstance(raw['model_params'].get(section), dict):
            raise ConfigError(f"{path}: model_params has no '{section}' section", path)
    if raw.get('dataset_params') is None:
        raw['dataset_params'] = {}
    dataset = raw['dataset_params']
    if not isinstance(dataset, dict):
        raise ConfigError(f"{path}: dataset_params must be a section of 'key: value' lines, not {dataset!r}", path)
    if 'frame_shape' not in dataset and 'image_shape' in dataset:
        dataset['frame_shape'] = dataset['image_shape']
    dataset.setdefault('frame_shape', [256, 256, 3])
    config = FommConfig(raw)
    config.source = str(path)
    return config


def _read_yaml(path: Path) -> object:
    """Parse a YAML file; every way it can fail becomes a ConfigError naming the file (and line)."""
    try:
        with open(path, encoding='utf-8') as f:
            return yaml.safe_load(f)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ''
        why = '; '.join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{path}{where}: not valid YAML ({why}). Fix the file there (indentation, a missing ':' "
                          f"or quote) or start from a shipped config: {', '.join(available_configs())}",
                          path, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})", path) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file; a config is a YAML text file", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}", path) from None


def config_name(config: dict) -> str:
    return getattr(config, 'source', '<dict>')


def frame_size(config: dict) -> tuple[int, int]:
    """(height, width) the model works at."""
    shape = config['dataset_params']['frame_shape']
    return int(shape[0]), int(shape[1])
