"""Which config a checkpoint belongs to, found from its state-dict names and shapes.

A published ``.pth.tar`` (``vox-adv-cpk.pth.tar``) carries no config. The config is found by building every
candidate's networks on the ``meta`` device (shapes only, no memory, no weights) and keeping those whose key
point detector and generator have exactly the checkpoint's parameter names and shapes. Candidates: the YAML
files beside the checkpoint (``fomm train`` writes ``config.yaml`` into its log folder), then the bundled
configs.

Several bundled configs build the same two networks (vox-256, vox-adv-256, taichi-256, taichi-adv-256,
bair-256, fashion-256, nemo-256 and ted-256 differ only in the discriminator and training settings). One is
chosen by these rules, in order, and the log says which rule decided:

1. the checkpoint's discriminator, when it has one: configs whose discriminator fits it too;
2. a config beside the checkpoint (the one the run was trained with);
3. the file name: the bundled config whose dataset name is the longest prefix of it
   (``vox-adv-cpk.pth.tar`` -> vox-adv-256, ``taichi-cpk.pth.tar`` -> taichi-256);
4. :data:`PREFERENCE`, then alphabetical order.

Whatever rule 3 or 4 picks animates exactly as the others would when their inference settings (common,
keypoint and generator parameters, frame shape) are equal, as for the bundled twins; when they are not, a
warning says so and asks for ``--config``.
"""
from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import (
    CheckpointError,
    read_checkpoint,
    state_dict_mismatches,
    strip_prefixes,
)
from .config import ConfigError, available_configs, load_config
from .defaults import DEFAULT_CONFIG
from .models import common_params

log = logging.getLogger(__name__)

NETWORKS = ('kp_detector', 'generator')
# ties broken last by this order (the face models first), then by name
PREFERENCE = (DEFAULT_CONFIG, 'face-128', 'vox-256', 'vox-adv-256')


class ConfigDetectionError(CheckpointError):
    """No known config builds networks with the checkpoint's parameter names and shapes."""


@dataclass(frozen=True)
class Detection:
    """The chosen config (a bundled name or a YAML path), why it was chosen, and every config that fits."""

    config: str
    reason: str
    fits: tuple[str, ...]


@dataclass(frozen=True)
class _Candidate:
    ref: str            # what load_config takes: a bundled name or a YAML path
    label: str          # how messages name it
    beside: bool        # a YAML beside the checkpoint
    config: dict


def expected_state(config: dict, network: str) -> dict[str, torch.Tensor]:
    """The state dict (meta tensors: names and shapes only) that ``config`` builds for ``network``."""
    mp = config['model_params']
    params = {'kp_detector': mp['kp_detector_params'], 'generator': mp['generator_params'],
              'discriminator': mp.get('discriminator_params')}[network]
    if params is None:
        return {}
    key = json.dumps([network, common_params(config), params], sort_keys=True, default=str)
    return _meta_state(key)


@functools.cache
def _meta_state(key: str) -> dict[str, torch.Tensor]:
    from .modules import KPDetector, MultiScaleDiscriminator, OcclusionAwareGenerator
    network, common, params = json.loads(key)
    cls = {'kp_detector': KPDetector, 'generator': OcclusionAwareGenerator,
           'discriminator': MultiScaleDiscriminator}[network]
    # meta: shapes without memory or initialisation. The (small) discriminator is built on the CPU: spectral
    # norm's initialisation on the meta device imports torch._dynamo, which takes seconds
    with torch.device('cpu' if network == 'discriminator' else 'meta'):
        return dict(cls(**params, **common).state_dict())


def _candidates(path: Path | None) -> list[_Candidate]:
    """YAML configs beside the checkpoint (its own name's first, then ``config.yaml``, then the others),
    then the bundled configs. Files there that are not first-order-model configs are skipped."""
    found = []
    if path is not None:
        stem = _stem(path.name)
        yamls = sorted((p for p in path.parent.glob('*.y*ml') if p.suffix in ('.yaml', '.yml') and p.is_file()),
                       key=lambda p: (p.stem != stem, p.name != 'config.yaml', p.name))
        for yaml_path in yamls:
            try:
                config = load_config(yaml_path)
                for network in NETWORKS:
                    expected_state(config, network)
            except (ConfigError, TypeError, KeyError, ValueError) as exc:
                log.debug('%s beside %s is not a usable config: %s', yaml_path, path, exc)
                continue
            found.append(_Candidate(str(yaml_path), str(yaml_path), True, config))
    return found + [_Candidate(name, name, False, load_config(name)) for name in available_configs()]


def _stem(file_name: str) -> str:
    for suffix in ('.pth.tar', '.pth', '.pt', '.tar', '.ckpt'):
        if file_name.lower().endswith(suffix):
            return file_name[:-len(suffix)]
    return Path(file_name).stem


def _given(ckpt: dict, network: str) -> dict | None:
    state = ckpt.get(network)
    return strip_prefixes(state) if isinstance(state, dict) and state else None


def _mismatches(candidate: _Candidate, ckpt: dict, networks: tuple[str, ...], limit: int) -> list[str]:
    problems = []
    for network in networks:
        expected = expected_state(candidate.config, network)
        problems += [f'{network} {p}' for p in state_dict_mismatches(expected, _given(ckpt, network) or {}, 0)]
        if limit and len(problems) >= limit:
            break
    return problems[:limit] if limit else problems


def fitting_configs(ckpt: dict, path: str | Path | None = None) -> list[str]:
    """Every candidate config (beside ``path``, then bundled) whose kp detector and generator fit ``ckpt``."""
    return [c.ref for c in _fits(ckpt, _candidates(Path(path) if path else None))]


def _fits(ckpt: dict, candidates: list[_Candidate]) -> list[_Candidate]:
    return [c for c in candidates if not _mismatches(c, ckpt, NETWORKS, 1)]


def detect_config(ckpt: dict, path: str | Path | None = None) -> Detection:
    """The config whose networks have exactly ``ckpt``'s parameter names and shapes (rules: module docstring).

    ``ckpt`` is a loaded checkpoint (the original layout: ``kp_detector``, ``generator`` and optionally
    ``discriminator`` state dicts, wrapper prefixes allowed). ``path`` is where it came from: YAML files
    beside it are candidates too, and its name breaks ties. Raises ConfigDetectionError naming the nearest
    config and the first differing parameter.
    """
    path = Path(path) if path is not None else None
    candidates = _candidates(path)
    fits = _fits(ckpt, candidates)
    what = f'checkpoint {path}' if path is not None else 'the checkpoint'
    if not fits:
        raise ConfigDetectionError(_no_fit_message(what, ckpt, candidates))
    names = tuple(c.ref for c in fits)
    chosen, reason = _choose(fits, ckpt, path)
    _warn_if_inference_differs(chosen, fits, what)
    log.info('%s: config %s (%s)', what, chosen.label, reason)
    return Detection(chosen.ref, reason, names)


def detect_checkpoint_config(path: str | Path) -> Detection:
    """:func:`detect_config` for a file, read with ``weights_only=True`` (unsafe files are refused)."""
    return detect_config(read_checkpoint(path, mmap=True), path)


def _choose(fits: list[_Candidate], ckpt: dict, path: Path | None) -> tuple[_Candidate, str]:
    if len(fits) == 1:
        return fits[0], 'the only config whose keypoint detector and generator fit'
    why = [f'{len(fits)} configs fit ({", ".join(c.label for c in fits)})']
    if _given(ckpt, 'discriminator') is not None:
        with_disc = [c for c in fits if expected_state(c.config, 'discriminator')
                     and not _mismatches(c, ckpt, ('discriminator',), 1)]
        if with_disc:
            fits = with_disc
            why.append(f'its discriminator fits {", ".join(c.label for c in with_disc)}')
        else:
            why.append('its discriminator fits none of them')
        if len(fits) == 1:
            return fits[0], '; '.join(why)
    beside = [c for c in fits if c.beside]
    if beside:
        return beside[0], '; '.join(why + ['it is the config saved beside the checkpoint'])
    if path is not None:
        prefixed = sorted((c for c in fits if _name_starts_with(path.name.lower(), _dataset(c.ref))),
                          key=lambda c: (-len(_dataset(c.ref)), c.ref))
        if prefixed:
            return prefixed[0], '; '.join(why + [f'the file name starts with {_dataset(prefixed[0].ref)!r}'])
    rank = {name: i for i, name in enumerate(PREFERENCE)}
    chosen = min(fits, key=lambda c: (rank.get(c.ref, len(rank)), c.ref))
    order = ', '.join(PREFERENCE)
    return chosen, '; '.join(why + [f'{chosen.label} comes first in the preference order ({order}, then by name)'])


def _dataset(config_name: str) -> str:
    """'vox-adv-256' -> 'vox-adv': the config name without its frame size."""
    return re.sub(r'-\d+$', '', config_name)


def _name_starts_with(file_name: str, dataset: str) -> bool:
    return file_name.startswith(dataset) and file_name[len(dataset):len(dataset) + 1] in ('', '-', '_', '.')


def _inference_settings(config: dict) -> str:
    mp = config['model_params']
    return json.dumps([common_params(config), mp['kp_detector_params'], mp['generator_params'],
                       list(config['dataset_params']['frame_shape'])], sort_keys=True, default=str)


def _warn_if_inference_differs(chosen: _Candidate, fits: list[_Candidate], what: str) -> None:
    differ = [c.label for c in fits if _inference_settings(c.config) != _inference_settings(chosen.config)]
    if differ:
        log.warning('%s also fits %s, whose inference settings (e.g. frame size or keypoint temperature) differ '
                    'from %s: pass --config if the animation looks wrong', what, ', '.join(differ), chosen.label)


def _no_fit_message(what: str, ckpt: dict, candidates: list[_Candidate]) -> str:
    def count(c: _Candidate) -> int:
        return len(_mismatches(c, ckpt, NETWORKS, 0))
    rank = {name: i for i, name in enumerate(PREFERENCE)}
    nearest = min(candidates, key=lambda c: (count(c), rank.get(c.ref, len(rank)), c.ref))
    first = _mismatches(nearest, ckpt, NETWORKS, 1)[0]
    total = sum(len(expected_state(nearest.config, n)) for n in NETWORKS)
    known = 'the bundled ones and the YAML files beside it' if any(c.beside for c in candidates) else 'the bundled ones'
    return (f'{what} fits none of the known configs ({known}): the nearest is {nearest.label}, where '
            f'{count(nearest)} of its {total} keypoint detector and generator tensors differ, first {first}. '
            f'Pass --config with the config it was trained with (a bundled name or a YAML file).')
