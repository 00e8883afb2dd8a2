"""The PyQt6 desktop app: camera and animated avatar side by side, avatar gallery, calibration, controls,
status and virtual camera. ``live.app`` calls :func:`run_gui` unless ``--headless``."""
from __future__ import annotations

from typing import Any

__all__ = ['run_gui']


def run_gui(args: Any) -> int:
    """Open the main window for parsed command-line ``args`` and run until it closes; returns the exit code."""
    import live.cv2_compat  # noqa: F401 - cv2 first, with its Qt5 environment changes undone, before Qt loads
    from .launch import create_window, ensure_app

    app = ensure_app()
    window = create_window(args)
    window.show()
    return app.exec()
