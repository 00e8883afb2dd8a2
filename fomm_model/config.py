"""YAML configs in the original first-order-model layout, shipped in the package and addressable by name."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

CONFIG_PACKAGE = 'fomm_model.configs'


class ConfigError(ValueError):
    """A config that cannot be found or lacks a section the model needs."""


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
    shipped = resources.files(CONFIG_PACKAGE) / f'{name}.yaml'
    if str(path) in (name, name + '.yaml') and shipped.is_file():
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
    with open(path) as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict) or 'model_params' not in raw:
        raise ConfigError(f"{path} is not a first-order-model config: it has no 'model_params' section")
    for section in ('common_params', 'kp_detector_params', 'generator_params'):
        if section not in raw['model_params']:
            raise ConfigError(f"{path}: model_params has no '{section}'")
    dataset = raw.setdefault('dataset_params', {})
    if 'frame_shape' not in dataset and 'image_shape' in dataset:
        dataset['frame_shape'] = dataset['image_shape']
    dataset.setdefault('frame_shape', [256, 256, 3])
    config = FommConfig(raw)
    config.source = str(path)
    return config


def config_name(config: dict) -> str:
    return getattr(config, 'source', '<dict>')


def frame_size(config: dict) -> tuple[int, int]:
    """(height, width) the model works at."""
    shape = config['dataset_params']['frame_shape']
    return int(shape[0]), int(shape[1])
