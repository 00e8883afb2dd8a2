"""The installed models: published or trained ``.pth.tar`` files in a per-user folder, usable by name.

Each model is ``NAME.pth.tar`` plus ``NAME.json`` (its config, size, sha256, display name and where it came
from) and, for a config that is not bundled, ``NAME.yaml``. A file is installed only after it loaded with
``weights_only=True`` into the config found for it (:mod:`fomm_model.config_detection`), so every listed model
can be loaded by name: ``fomm animate --checkpoint NAME``, ``main.py --checkpoint NAME``, the window's picker.
The bundled default model is always listed first and cannot be removed.

The folder is ``$FOMM_LIVE_MODELS``, else the platform's per-user data folder (``~/.local/share/fomm-live/
models`` on Linux, ``~/Library/Application Support/fomm-live/models`` on macOS, ``%LOCALAPPDATA%\\fomm-live\\
models`` on Windows: local, not roaming, as models are large).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .output_paths import atomic_output, atomic_write_text

log = logging.getLogger(__name__)

MODELS_DIR_ENV = 'FOMM_LIVE_MODELS'
MODEL_SUFFIX = '.pth.tar'
CHECKPOINT_SUFFIXES = ('.pth.tar', '.pth', '.pt', '.tar', '.ckpt')   # what the window accepts when dropped
_CHUNK = 1 << 20


class ModelStoreError(ValueError):
    """A model that cannot be installed, found or removed; the message says why and what to do."""


@dataclass(frozen=True)
class ModelEntry:
    """One model: ``config`` is a bundled config name or a YAML path; ``sha256`` is None for the bundled one
    (hashed only when needed)."""

    name: str
    display_name: str
    path: Path
    config: str
    size: int
    sha256: str | None = None
    bundled: bool = False


def models_dir() -> Path:
    """Where installed models live (see the module docstring); not created here."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == 'win32':
        base = Path(os.environ.get('LOCALAPPDATA') or home / 'AppData' / 'Local')
    elif sys.platform == 'darwin':
        base = home / 'Library' / 'Application Support'
    else:
        base = Path(os.environ.get('XDG_DATA_HOME') or home / '.local' / 'share')
    return base / 'fomm-live' / 'models'


def bundled_model() -> ModelEntry:
    """The default model shipped in the repository (assets/models)."""
    from .defaults import DEFAULT_CONFIG, default_checkpoint_path
    path = default_checkpoint_path()
    return ModelEntry(DEFAULT_CONFIG, f'{DEFAULT_CONFIG} (bundled)', path, DEFAULT_CONFIG,
                      path.stat().st_size if path.is_file() else 0, None, True)


def list_models(folder: str | Path | None = None) -> list[ModelEntry]:
    """The bundled model, then the installed ones by display name. Broken entries are skipped with a warning."""
    folder = Path(folder) if folder is not None else models_dir()
    entries = []
    for sidecar in sorted(folder.glob('*.json')) if folder.is_dir() else []:
        entry = _read_sidecar(sidecar)
        if entry is not None:
            entries.append(entry)
    return [bundled_model()] + sorted(entries, key=lambda e: (e.display_name.lower(), e.name))


def find_model(name: str, folder: str | Path | None = None) -> ModelEntry | None:
    """The model called ``name`` (its name or display name), else None."""
    for entry in list_models(folder):
        if name in (entry.name, entry.display_name):
            return entry
    return None


def install(path: str | Path, name: str | None = None, folder: str | Path | None = None) -> ModelEntry:
    """Check that ``path`` loads (``weights_only=True``) into the config found for it, then copy it in.

    Refused, with nothing copied: a missing or unreadable file, an unsafe pickle, a file no known config fits,
    and a file already installed (same sha256). The copy is atomic and its hash is checked against the file
    that was loaded. ``name`` defaults to the file name without its extension, made unique.
    """
    from .checkpoint import CheckpointError, load_checkpoint
    from .config import ConfigError
    from .config_detection import detect_checkpoint_config

    src = Path(path).expanduser()
    folder = Path(folder) if folder is not None else models_dir()
    if not src.is_file():
        raise ModelStoreError(f'cannot install {src}: no such file')
    size, digest = src.stat().st_size, file_sha256(src)
    installed = list_models(folder)
    for entry in installed:
        if entry.size == size and entry.path.is_file() and (entry.sha256 or file_sha256(entry.path)) == digest:
            raise ModelStoreError(f'{src} is already installed as "{entry.name}" (same content); nothing was copied')
    try:
        detection = detect_checkpoint_config(src)
        load_checkpoint(detection.config, src, with_discriminator=False)
    except (CheckpointError, ConfigError) as exc:
        raise ModelStoreError(f'{src} was not installed: {exc}') from None
    name = _unique_name(_clean_name(name or _stem(src.name)), {e.name for e in installed} | _names_in(folder))
    dest = folder / f'{name}{MODEL_SUFFIX}'
    config = detection.config
    if Path(config).suffix in ('.yaml', '.yml'):   # a config beside the file, not a bundled one: keep a copy
        atomic_write_text(Path(config).read_text(encoding='utf-8'), folder / f'{name}.yaml')
        config = f'{name}.yaml'
    with atomic_output(dest) as tmp:
        copied = _copy_hashing(src, tmp)
        if copied != digest:
            raise ModelStoreError(f'{src} changed while it was being installed; nothing was installed. Try again '
                                  f'once whatever writes it has finished.')
    sidecar = {'name': name, 'display_name': name, 'file': dest.name, 'config': config, 'size': size,
               'sha256': digest, 'source': str(src.resolve()), 'installed': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
               'config_reason': detection.reason}
    atomic_write_text(json.dumps(sidecar, indent=1) + '\n', folder / f'{name}.json')
    log.info('installed %s as "%s" in %s (config %s)', src, name, folder, config)
    entry = _read_sidecar(folder / f'{name}.json')
    assert entry is not None
    return entry


def remove(name: str, folder: str | Path | None = None) -> ModelEntry:
    """Delete an installed model (its file, sidecar and config copy); the bundled one cannot be removed."""
    folder = Path(folder) if folder is not None else models_dir()
    entry = find_model(name, folder)
    if entry is None:
        names = [e.name for e in list_models(folder) if not e.bundled]
        raise ModelStoreError(f'no installed model "{name}"; installed: {", ".join(names) or "none"}')
    if entry.bundled:
        raise ModelStoreError(f'"{entry.name}" is the bundled model; it cannot be removed')
    (folder / f'{entry.name}.json').unlink()          # first: a half-removed model is no longer listed
    entry.path.unlink(missing_ok=True)
    (folder / f'{entry.name}.yaml').unlink(missing_ok=True)
    log.info('removed model "%s" from %s', entry.name, folder)
    return entry


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            h.update(chunk)
    return h.hexdigest()


def is_checkpoint_name(path: str | Path) -> bool:
    """Whether a file name looks like a checkpoint (what the window accepts as a dropped model)."""
    return str(path).lower().endswith(CHECKPOINT_SUFFIXES)


def _copy_hashing(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    with open(src, 'rb') as fin, open(dst, 'wb') as fout:
        for chunk in iter(lambda: fin.read(_CHUNK), b''):
            h.update(chunk)
            fout.write(chunk)
    shutil.copystat(src, dst)
    return h.hexdigest()


def _stem(file_name: str) -> str:
    for suffix in CHECKPOINT_SUFFIXES:
        if file_name.lower().endswith(suffix):
            return file_name[:-len(suffix)]
    return Path(file_name).stem


def _clean_name(name: str) -> str:
    cleaned = re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('.-') or 'model'
    return cleaned[:80]


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f'{name}-{n}', n + 1
    return candidate


def _names_in(folder: Path) -> set[str]:
    """Names used by any file in the folder (also orphans without a sidecar), so nothing is overwritten."""
    if not folder.is_dir():
        return set()
    return {_stem(p.name) if p.name.endswith(MODEL_SUFFIX) else p.stem for p in folder.iterdir()}


def _read_sidecar(sidecar: Path) -> ModelEntry | None:
    try:
        meta = json.loads(sidecar.read_text(encoding='utf-8'))
        path = sidecar.parent / meta['file']
        config = meta['config']
        if Path(config).suffix in ('.yaml', '.yml'):
            config = str(sidecar.parent / config)
        entry = ModelEntry(str(meta['name']), str(meta.get('display_name') or meta['name']), path, config,
                           int(meta['size']), meta.get('sha256'))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning('skipping %s: not a readable model description (%s)', sidecar, exc)
        return None
    if not path.is_file():
        log.warning('skipping model "%s": its file %s is missing', entry.name, path)
        return None
    return entry
