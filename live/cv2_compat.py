"""Import OpenCV without breaking PyQt6.

opencv-contrib-python (non-headless) sets ``QT_QPA_PLATFORM_PLUGIN_PATH``, ``QT_QPA_FONTDIR`` and
``LD_LIBRARY_PATH`` to its bundled Qt5 on import; PyQt6 then loads the wrong plugins and fails. Every module
of the live app imports cv2 through here, which restores those variables right after the import.
"""
from __future__ import annotations

import os

_GUARDED = ('QT_QPA_PLATFORM_PLUGIN_PATH', 'QT_QPA_FONTDIR', 'LD_LIBRARY_PATH')


def _import_cv2():
    # OpenCV's own warnings (a missing camera index alone printed ~100 lines) and FFmpeg's ("moov atom not
    # found") are replaced by the app's messages, which say what to do; set these variables to see them again
    os.environ.setdefault('OPENCV_LOG_LEVEL', 'SILENT')
    os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')
    saved = {name: os.environ.get(name) for name in _GUARDED}
    try:
        import cv2 as module
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return module


cv2 = _import_cv2()
try:  # the app runs its own threads; OpenCV's pool would compete with torch for the same cores
    cv2.setNumThreads(1)
except Exception:  # pragma: no cover - very old builds
    pass

__all__ = ['cv2']
