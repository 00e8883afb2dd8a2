"""Checkpoints in the original ``.pth.tar`` layout: loading with clear errors, atomic saving."""
from __future__ import annotations

import logging
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .config import available_configs, config_name, load_config
from .models import Models, build_models

log = logging.getLogger(__name__)

PREFIXES = ('module.', '_orig_mod.')
REQUIRED_KEYS = ('generator', 'kp_detector')


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or lacks the model's weights."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose weights do not fit the config's architecture."""


def strip_prefixes(state_dict: dict) -> dict:
    """Drop DataParallel ``module.`` and torch.compile ``_orig_mod.`` prefixes (in any combination)."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load`` with ``weights_only=True``, turning every failure into an actionable CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"could not read checkpoint {path} ({path.stat().st_size} bytes): {exc}. The file is "
                              f"truncated, corrupt or not a PyTorch checkpoint: download or copy it again.") from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        found = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a first-order-model checkpoint: expected keys {REQUIRED_KEYS}, "
                              f"found {found}")
    return ckpt


def state_dict_mismatches(expected: dict, given: dict, limit: int = 5) -> list[str]:
    """Human-readable differences between a module's state dict and a checkpoint's (first ``limit``)."""
    problems = []
    for key, value in expected.items():
        if key not in given:
            problems.append(f"missing {key} {tuple(value.shape)}")
        elif tuple(given[key].shape) != tuple(value.shape):
            problems.append(f"{key}: checkpoint {tuple(given[key].shape)} != config {tuple(value.shape)}")
    problems += [f"unexpected {key} {tuple(given[key].shape)}" for key in given if key not in expected]
    return problems[:limit] if limit else problems


def matching_configs(ckpt: dict) -> list[str]:
    """Shipped configs whose kp detector and generator fit this checkpoint (checked on the meta device)."""
    matches = []
    for name in available_configs():
        with torch.device('meta'):
            models = build_models(name, with_discriminator=False)
        if not any(state_dict_mismatches(m.state_dict(), strip_prefixes(ckpt[k]), 1)
                   for k, m in (('generator', models.generator), ('kp_detector', models.kp_detector))):
            matches.append(name)
    return matches


def load_checkpoint(config: dict | str, path: str | Path, device: str | torch.device = 'cpu',
                    with_discriminator: bool | None = None) -> Models:
    """Build the config's models and load a checkpoint into them, in eval mode.

    The discriminator is loaded when the checkpoint has one that fits (``with_discriminator=None``),
    always (True: a missing or unfitting one is an error) or never (False); otherwise it is None.
    """
    config = load_config(config)
    ckpt = read_checkpoint(path)
    want_disc = with_discriminator is not False and 'discriminator' in ckpt
    models = build_models(config, with_discriminator=want_disc or bool(with_discriminator))
    for key, module in (('kp_detector', models.kp_detector), ('generator', models.generator)):
        state = strip_prefixes(ckpt[key])
        problems = state_dict_mismatches(module.state_dict(), state)
        if problems:
            fits = matching_configs(ckpt)
            hint = (f" The checkpoint fits the shipped config(s): {', '.join(fits)}." if fits else
                    " No shipped config fits it; pass the config it was trained with.")
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit config {config_name(config)} ({key}): "
                + '; '.join(problems) + '.' + hint)
        module.load_state_dict(state)
    if models.discriminator is not None:
        state = strip_prefixes(ckpt.get('discriminator') or {})
        problems = state_dict_mismatches(models.discriminator.state_dict(), state)
        if problems and with_discriminator:
            raise CheckpointMismatchError(f"discriminator of {path} does not fit config {config_name(config)}: "
                                          + '; '.join(problems))
        if problems:
            log.warning("discriminator in %s does not fit %s (%s); not loaded", path, config_name(config),
                        problems[0])
            models.discriminator = None
        else:
            models.discriminator.load_state_dict(state)
    return models.to(device).eval()


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """Write bytes through :func:`atomic_save`'s temp-file-and-rename, so readers never see a partial file."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename: never a half-written file."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def _atomic_write(path: str | Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is not a secret
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, models: Models, optimizers: dict | None = None, epoch: int = 0,
                    half: bool = False, include_discriminator: bool = True) -> None:
    """Write the original layout: module state dicts, ``optimizer_<name>`` states, ``epoch``."""
    def state(module):
        sd = module.state_dict()
        return {k: (v.half() if half and v.is_floating_point() else v) for k, v in sd.items()}

    ckpt = {'kp_detector': state(models.kp_detector), 'generator': state(models.generator), 'epoch': epoch}
    if include_discriminator and models.discriminator is not None:
        ckpt['discriminator'] = state(models.discriminator)
    for name, opt in (optimizers or {}).items():
        ckpt[f'optimizer_{name}'] = opt.state_dict()
    atomic_save(ckpt, path)
