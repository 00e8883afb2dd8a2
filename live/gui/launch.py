"""Turn the command line and the remembered settings into a ready main window.

Explicit command-line values win; anything not given comes from the last run (camera, avatar, backend,
toggles), so a plain ``fomm-live`` starts the way the user left it.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .avatar_library import AvatarLibrary, AvatarLibraryError
from .settings_store import AppPrefs, SettingsStore

log = logging.getLogger(__name__)


def parse_gui_args(argv: Sequence[str]) -> argparse.Namespace:
    """The GUI's options. Defaults are None on purpose: what is not given comes from the last run."""
    p = argparse.ArgumentParser(prog='fomm-live', description='Animate an avatar photo with your webcam.')
    p.add_argument('--input', '-i', help='camera index or name, video file or stream URL (default: the last one)')
    p.add_argument('--avatar', '-a', help='avatar image; added to the gallery (copied into the avatar folder)')
    from live.backends import BACKEND_NAMES
    from live.cameras import resolution_arg
    p.add_argument('--backend', choices=BACKEND_NAMES)
    p.add_argument('--device', help='cpu, cuda, cuda:1, mps')
    p.add_argument('--dtype', choices=('float32', 'float16', 'bfloat16'))
    p.add_argument('--config', help='model config name or YAML (default face-128)')
    p.add_argument('--checkpoint', help='model checkpoint (default: the bundled face-128 model)')
    p.add_argument('--camera-size', metavar='WxH', type=resolution_arg,
                   help='resolution to ask the camera for (default: 640x480 when the model runs on the CPU, '
                        '1280x720 on a GPU)')
    p.add_argument('--settings', help='keep settings in this INI file instead of the user settings')
    p.add_argument('--avatar-dir', help='folder for your avatars (default: the per-user app data folder)')
    p.add_argument('-v', '--verbose', action='store_true')
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


def resolve_source(arg_input: Any, prefs: AppPrefs, cameras: list[Any]) -> str | int:
    """CLI input, else the remembered camera (found by name if its index changed) or file, else camera 0."""
    if arg_input not in (None, ''):
        return int(arg_input) if str(arg_input).isdigit() else arg_input
    if prefs.source_name:
        for cam in cameras:
            if cam.name == prefs.source_name:
                return cam.index
    if prefs.source.isdigit():
        return int(prefs.source)
    if prefs.source and (Path(prefs.source).is_file() or '://' in prefs.source):
        return prefs.source
    return 0


def create_window(args: Any, store: SettingsStore | None = None, library: AvatarLibrary | None = None,
                  engine_factory: Any = None, camera_lister: Any = None) -> Any:
    """A MainWindow for ``args`` (``.input``, ``.avatar``, ``.backend``, ``.device``, ``.dtype``, ``.config``,
    ``.checkpoint``, all optional); the engine starts inside."""
    from live.engine import EngineOptions, EngineSettings

    from .main_window import MainWindow, _default_camera_lister

    ensure_app()
    store = store or SettingsStore(getattr(args, 'settings', None))
    library = library or AvatarLibrary(getattr(args, 'avatar_dir', None))
    prefs = store.load_prefs()
    settings = store.load_engine_settings(EngineSettings())
    lister = camera_lister or _default_camera_lister
    try:
        cameras = list(lister())
    except Exception:  # noqa: BLE001 - the window reports cameras itself
        cameras = []

    for key in ('backend', 'device', 'dtype'):
        value = getattr(args, key, None)
        if value not in (None, ''):
            setattr(prefs, key, value)
    defaults = EngineOptions()
    options = dataclasses.replace(
        defaults, source=resolve_source(getattr(args, 'input', None), prefs, cameras),
        backend=prefs.backend, device=prefs.device, dtype=prefs.dtype,
        config=getattr(args, 'config', None) or defaults.config,
        checkpoint=getattr(args, 'checkpoint', None) or defaults.checkpoint,
        capture_size=getattr(args, 'camera_size', None))

    avatar = getattr(args, 'avatar', None)
    if avatar:
        try:
            prefs.avatar = library.add(avatar).key   # shown in the gallery from now on (deduplicated)
        except AvatarLibraryError as exc:
            log.error('--avatar %s not used: %s', avatar, exc)
    return MainWindow(options, settings, prefs, store, library, engine_factory=engine_factory,
                      camera_lister=lister)
