"""Remember the user's choices between runs (QSettings).

Values are stored as JSON text so the native store and an INI file (tests, portable runs) round-trip the
same types (bool, float, tuple, None); a value that no longer parses falls back to the default instead of
breaking start-up.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QByteArray, QSettings

log = logging.getLogger(__name__)

ORGANIZATION = 'fomm-live'
APPLICATION = 'fomm-live'
SETTINGS_ENV = 'FOMM_LIVE_SETTINGS'  # path of an INI file to use instead of the user's native store


@dataclass
class AppPrefs:
    """What the window restores besides the option groups of ``live.options`` (stored by group name)."""
    source: str = ''             # '' = first camera; a camera index ("0"), a video file path or a URL
    source_name: str = ''        # camera name at the time it was chosen: found again if its index moved
    avatar: str = ''             # AvatarEntry.key
    show_keypoints: bool = False
    show_crop_box: bool = True


class SettingsStore:
    """Typed access to QSettings; ``path`` selects an INI file (tests use a temporary one)."""

    def __init__(self, path: str | Path | None = None) -> None:
        path = path if path is not None else os.environ.get(SETTINGS_ENV) or None
        if path is not None:
            self.qsettings = QSettings(str(path), QSettings.Format.IniFormat)
        else:
            self.qsettings = QSettings(ORGANIZATION, APPLICATION)

    @property
    def location(self) -> str:
        return self.qsettings.fileName()

    # -- generic dataclass round-trip -----------------------------------------------------------------
    def _read(self, key: str, default: Any) -> Any:
        raw = self.qsettings.value(key)
        if raw is None:
            return default
        try:
            value = json.loads(str(raw))
        except (TypeError, ValueError):
            log.warning('ignoring unreadable setting %s=%r', key, raw)
            return default
        if isinstance(value, list):  # JSON has no tuples; no stored field is a list
            value = tuple(value)
        if value is None:
            return None if default is None else default
        if default is not None:
            if isinstance(default, bool) != isinstance(value, bool):
                return default
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if not isinstance(value, (int, float)):
                    return default
                value = type(default)(value)
            elif not isinstance(value, type(default)):
                return default
        return value

    def _write(self, key: str, value: Any) -> None:
        self.qsettings.setValue(key, json.dumps(list(value) if isinstance(value, tuple) else value))

    def load_dataclass(self, group: str, defaults: Any) -> Any:
        """A copy of ``defaults`` with every stored field of ``group`` applied; a stored value that its option
        declaration (``live.options``) no longer accepts keeps the default, with a warning."""
        from live.options import check
        changes = {}
        for f in dataclasses.fields(defaults):
            value = self._read(f'{group}/{f.name}', getattr(defaults, f.name))
            try:
                changes[f.name] = check(f, value) if f.metadata else value
            except ValueError as exc:
                log.warning('ignoring remembered %s/%s: %s', group, f.name, exc)
        return dataclasses.replace(defaults, **changes)

    def save_dataclass(self, group: str, obj: Any) -> None:
        for f in dataclasses.fields(obj):
            self._write(f'{group}/{f.name}', getattr(obj, f.name))

    # -- what the window uses ---------------------------------------------------------------------------
    def load_prefs(self) -> AppPrefs:
        return self.load_dataclass('app', AppPrefs())

    def save_prefs(self, prefs: AppPrefs) -> None:
        self.save_dataclass('app', prefs)

    def load_geometry(self) -> tuple[QByteArray | None, QByteArray | None]:
        geometry = self.qsettings.value('window/geometry')
        state = self.qsettings.value('window/state')
        return (geometry if isinstance(geometry, QByteArray) else None,
                state if isinstance(state, QByteArray) else None)

    def save_geometry(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qsettings.setValue('window/geometry', geometry)
        self.qsettings.setValue('window/state', state)

    def sync(self) -> None:
        """Write to disk now; reports a clear error if the file cannot be written."""
        self.qsettings.sync()
        if self.qsettings.status() != QSettings.Status.NoError:
            log.error('could not save settings to %s (%s)', self.location, self.qsettings.status().name)
