"""Checkpoints in the original ``.pth.tar`` layout: loading with clear errors, atomic saving."""
from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path

import torch

from .config import config_name, load_config
from .models import Models, build_models
from .output_paths import atomic_output
from .output_paths import atomic_write_bytes as _atomic_write_bytes

log = logging.getLogger(__name__)

PREFIXES = ('module.', '_orig_mod.')
REQUIRED_KEYS = ('generator', 'kp_detector')


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or lacks the model's weights."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose weights do not fit the config's architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A file holding pickled Python objects or code besides weights: refused, never executed."""


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


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """``torch.load`` with ``weights_only=True``, turning every failure into an actionable CheckpointError.

    A file the safe loader refuses (it holds Python objects or code, which weights never need) is reported as
    unsafe, distinct from a truncated or corrupt file; loading it another way is never suggested. ``mmap``
    maps a zip-format file instead of reading it (for looking at shapes only); older files are read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        if _WEIGHTS_ONLY_REFUSAL in str(exc):
            raise UnsafeCheckpointError(_unsafe_message(path, str(exc))) from None
        raise CheckpointError(_corrupt_message(path, exc)) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(_corrupt_message(path, exc)) from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        found = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a first-order-model checkpoint: expected keys {REQUIRED_KEYS}, "
                              f"found {found}")
    return ckpt


# how torch (2.4 and later) starts the message of a file its weights-only unpickler refuses to run
_WEIGHTS_ONLY_REFUSAL = 'Weights only load failed'


def _unsafe_message(path: Path, torch_message: str) -> str:
    found = sorted(set(re.findall(r'GLOBAL ([\w.]+)', torch_message)))
    if found:
        what = f"Python objects or code ({', '.join(found)})"
    else:
        operand = re.search(r'Unsupported operand \d+', torch_message)
        what = 'pickle instructions' + (f" ({operand.group(0).lower()})" if operand else '')
    return (f"refused to load checkpoint {path} as unsafe: it contains {what} that a weights file never needs, "
            f"and loading them could run code. It was not loaded. Use a checkpoint from a source you trust "
            f"that holds only weights (the published .pth.tar files and those fomm train writes do).")


def _corrupt_message(path: Path, exc: BaseException) -> str:
    text = ' '.join(str(exc).split()) or type(exc).__name__
    return (f"could not read checkpoint {path} ({path.stat().st_size} bytes): {text}. The file is truncated, "
            f"corrupt or not a PyTorch checkpoint: download or copy it again.")


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
    from .config_detection import fitting_configs
    return fitting_configs(ckpt)


def fitting_state(module: torch.nn.Module, ckpt: dict, key: str, config: dict, path: str | Path) -> dict:
    """``ckpt[key]`` without wrapper prefixes, checked to fit ``module``; the one place that explains a misfit.

    Raises CheckpointMismatchError naming the config, the checkpoint, the first differing keys with both
    shapes and, for the generator and kp detector, the shipped configs the checkpoint does fit.
    """
    state = strip_prefixes(ckpt[key])
    problems = state_dict_mismatches(module.state_dict(), state)
    if problems:
        hint = ''
        if key in REQUIRED_KEYS:
            fits = matching_configs(ckpt)
            hint = (f" The checkpoint fits the shipped config(s): {', '.join(fits)}." if fits else
                    " No shipped config fits it; pass the config it was trained with.")
        raise CheckpointMismatchError(f"checkpoint {path} does not fit config {config_name(config)} ({key}): "
                                      + '; '.join(problems) + '.' + hint)
    return state


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
        module.load_state_dict(fitting_state(module, ckpt, key, config, path))
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
    """Write bytes through a temporary file and a rename (:mod:`fomm_model.output_paths`): never a partial file."""
    _atomic_write_bytes(data, path)


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename: never a half-written file.

    Temporary files of earlier writers killed mid-save are removed first; a failed save keeps the old file
    and raises CheckpointError (disk full, folder not writable).
    """
    try:
        with atomic_output(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"could not write checkpoint {path}: {' '.join(str(exc).split())}. Any earlier file "
                              f"there was kept; check the free disk space and that the folder is writable.") from exc


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
