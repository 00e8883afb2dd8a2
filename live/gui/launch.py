"""Turn the command line and the remembered settings into a ready main window.

Explicit command-line values win; anything not given comes from the last run (camera, avatar, model,
toggles), so a plain ``python main.py`` starts the way the user left it.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from live.options import CaptureOptions, ModelOptions, OutputOptions, Settings, add_arguments, from_args

from .avatar_library import AvatarLibrary, AvatarLibraryError
from .settings_store import AppPrefs, SettingsStore

log = logging.getLogger(__name__)

GROUPS = {'model': ModelOptions, 'capture': CaptureOptions, 'engine': Settings, 'output': OutputOptions}


def parse_gui_args(argv: Sequence[str]) -> argparse.Namespace:
    """The window's options: every engine option (defaults None: what is not given comes from the last run)."""
    p = argparse.ArgumentParser(prog='main.py [gui]', description='Animate an avatar photo with your webcam.')
    p.add_argument('--avatar', '-a', help='avatar image; added to the gallery (copied into the avatar folder)')
    p.add_argument('--settings', help='keep settings in this INI file instead of the user settings')
    p.add_argument('--avatar-dir', help='folder for your avatars (default: the per-user app data folder)')
    p.add_argument('-v', '--verbose', action='store_true')
    add_arguments(p, *GROUPS.values(), defaults=False)
    return p.parse_args(list(argv))


def ensure_app() -> Any:
    """The QApplication (created once) with the names QSettings and QStandardPaths use."""
    import sys

    from PyQt6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName('fomm-live')
    app.setApplicationName('fomm-live')
    app.setApplicationDisplayName('fomm-live')
    return app


def remembered_source(prefs: AppPrefs, cameras: list[Any]) -> str:
    """The remembered camera (found by name if its index changed) or file, else camera 0."""
    if prefs.source_name:
        for cam in cameras:
            if cam.name == prefs.source_name:
                return str(cam.index)
    if prefs.source.isdigit() or (prefs.source and (Path(prefs.source).is_file() or '://' in prefs.source)):
        return prefs.source
    return '0'


def create_window(args: argparse.Namespace, store: SettingsStore | None = None,
                  library: AvatarLibrary | None = None, engine_factory: Any = None,
                  camera_lister: Any = None) -> Any:
    """A MainWindow for parsed ``args`` (see :func:`parse_gui_args`); the engine starts inside."""
    from .main_window import MainWindow, _default_camera_lister

    ensure_app()
    store = store or SettingsStore(getattr(args, 'settings', None))
    library = library or AvatarLibrary(getattr(args, 'avatar_dir', None))
    prefs = store.load_prefs()
    groups = {name: from_args(cls, args, store.load_dataclass(name, cls())) for name, cls in GROUPS.items()}
    if getattr(args, 'checkpoint', None) and not getattr(args, 'config', None):
        # a checkpoint given alone brings its own config (found from it), never one remembered for another model
        groups['model'] = dataclasses.replace(groups['model'], config=None)
    lister = camera_lister or _default_camera_lister
    if getattr(args, 'input', None) in (None, ''):
        try:
            cameras = list(lister())
        except Exception:  # noqa: BLE001 - the window reports cameras itself
            cameras = []
        groups['capture'] = dataclasses.replace(groups['capture'], input=remembered_source(prefs, cameras))
    if getattr(args, 'avatar', None):
        try:
            prefs.avatar = library.add(args.avatar).key   # shown in the gallery from now on (deduplicated)
        except AvatarLibraryError as exc:
            log.error('--avatar %s not used: %s', args.avatar, exc)
    session_args = dict(model=groups['model'], capture=groups['capture'], settings=groups['engine'],
                        output=groups['output'], prefs=prefs, store=store, library=library)
    if engine_factory is not None:
        session_args['engine_factory'] = engine_factory
    return MainWindow(session_args, camera_lister=lister)
