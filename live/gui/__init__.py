"""The PyQt6 desktop app: camera and animated avatar side by side, avatar gallery, calibration, controls,
status and virtual camera. ``live.app`` calls :func:`run_gui` unless ``--headless``."""
from __future__ import annotations

from typing import Any

__all__ = ['run_gui']


def run_gui(args: Any = None) -> int:
    """Open the main window and run until it closes; returns the exit code.

    ``args``: parsed arguments (``.input``, ``.avatar``, ``.backend``, ...) or a command line (list of
    strings, None = no arguments), parsed by :func:`live.gui.launch.parse_gui_args`."""
    import logging

    import live.cv2_compat  # noqa: F401 - cv2 first, with its Qt5 environment changes undone, before Qt loads
    from .launch import create_window, ensure_app, parse_gui_args

    if args is None or isinstance(args, (list, tuple)):
        args = parse_gui_args(args or [])
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format='%(levelname)s %(name)s: %(message)s')
    app = ensure_app()
    window = create_window(args)
    window.show()
    return app.exec()
