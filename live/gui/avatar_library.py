"""The avatars the user can pick: bundled ones (read from installed packages) plus a user folder.

Adding copies the file into the user folder (the original is never touched and an existing avatar is
never overwritten); removing moves the copy to ``.removed/`` inside that folder, so nothing the user
added is ever lost by a mis-click.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')
AVATAR_DIR_ENV = 'FOMM_LIVE_AVATAR_DIR'
REMOVED_DIR = '.removed'


class AvatarLibraryError(ValueError):
    """An avatar that cannot be added or removed; the message says why and what to do."""


def _astronaut() -> np.ndarray:
    from skimage import data  # public domain (NASA); read from the installed package, never copied
    return data.astronaut()


@dataclass(frozen=True)
class Bundled:
    loader: Callable[[], np.ndarray]
    package: str          # the installed package the image is read from
    install_hint: str


BUNDLED: dict[str, Bundled] = {'astronaut': Bundled(_astronaut, 'skimage', 'pip install scikit-image')}


@dataclass(frozen=True)
class AvatarEntry:
    key: str                      # 'bundled:<name>' or 'user:<file name>': what the settings remember
    name: str
    path: Path | None = None      # user avatars
    loader: Callable[[], np.ndarray] | None = field(default=None, compare=False, repr=False)

    @property
    def bundled(self) -> bool:
        return self.path is None

    def source(self) -> np.ndarray | Path:
        """What ``Engine.set_avatar`` takes."""
        if self.path is not None:
            return self.path
        assert self.loader is not None
        return self.loader()


def default_user_dir() -> Path:
    """``$FOMM_LIVE_AVATAR_DIR`` or ``<AppDataLocation>/avatars`` (per-user, survives updates)."""
    env = os.environ.get(AVATAR_DIR_ENV)
    if env:
        return Path(env).expanduser()
    from PyQt6.QtCore import QStandardPaths
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / '.local' / 'share' / 'fomm-live') / 'avatars'


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _check_image(path: Path) -> None:
    if not path.is_file():
        raise AvatarLibraryError(f'{path} is not a file')
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise AvatarLibraryError(f'{path.name} is not a supported image ({", ".join(IMAGE_SUFFIXES)})')
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise AvatarLibraryError(f'{path.name} cannot be read as an image ({exc}); pick another file') from exc


class AvatarLibrary:
    """Lists, adds and removes avatars; knows nothing about Qt widgets."""

    def __init__(self, user_dir: str | Path | None = None,
                 bundled: dict[str, Bundled] | None = None) -> None:
        self.user_dir = Path(user_dir) if user_dir is not None else default_user_dir()
        self._bundled = BUNDLED if bundled is None else bundled
        self.notices: list[str] = []

    def entries(self) -> list[AvatarEntry]:
        """Bundled avatars first, then the user's in name order."""
        out = []
        self.notices = []
        for name, item in self._bundled.items():
            if importlib.util.find_spec(item.package) is None:
                self.notices.append(f'The bundled "{name}" avatar needs {item.package}: {item.install_hint}')
                continue
            out.append(AvatarEntry(f'bundled:{name}', name, None, item.loader))
        if self.user_dir.is_dir():
            files = [p for p in self.user_dir.iterdir()
                     if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith('.')]
            for p in sorted(files, key=lambda p: p.name.lower()):
                out.append(AvatarEntry(f'user:{p.name}', p.stem, p))
        return out

    def find(self, key: str) -> AvatarEntry | None:
        return next((e for e in self.entries() if e.key == key), None)

    def add(self, path: str | Path) -> AvatarEntry:
        """Copy an image into the user folder; the same image added twice returns the existing entry."""
        src = Path(path).expanduser()
        _check_image(src)
        try:
            self.user_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AvatarLibraryError(f'cannot create the avatar folder {self.user_dir}: {exc}') from exc
        digest = _digest(src)
        for existing in self.user_dir.iterdir():
            if existing.is_file() and existing.stat().st_size == src.stat().st_size and _digest(existing) == digest:
                return AvatarEntry(f'user:{existing.name}', existing.stem, existing)
        stem, suffix = src.stem or 'avatar', src.suffix.lower()
        target = self.user_dir / f'{stem}{suffix}'
        n = 2
        while target.exists():
            target = self.user_dir / f'{stem}-{n}{suffix}'
            n += 1
        fd, tmp = tempfile.mkstemp(dir=self.user_dir, prefix='.adding-', suffix=suffix)
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise AvatarLibraryError(f'cannot copy {src} into {self.user_dir}: {exc}') from exc
        return AvatarEntry(f'user:{target.name}', target.stem, target)

    def remove(self, entry: AvatarEntry) -> Path:
        """Move a user avatar to ``.removed/`` (recoverable); bundled avatars cannot be removed."""
        if entry.path is None:
            raise AvatarLibraryError(f'"{entry.name}" is bundled with the app and cannot be removed')
        if entry.path.parent.resolve() != self.user_dir.resolve():
            raise AvatarLibraryError(f'{entry.path} is not in the avatar folder {self.user_dir}')
        trash = self.user_dir / REMOVED_DIR
        trash.mkdir(exist_ok=True)
        target = trash / entry.path.name
        n = 2
        while target.exists():
            target = trash / f'{entry.path.stem}-{n}{entry.path.suffix}'
            n += 1
        os.replace(entry.path, target)
        return target
