"""Entry point: ``main.py --headless ...`` runs without a window, otherwise the Qt GUI (``live.gui``)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if '--headless' in argv:
        argv.remove('--headless')
        from .headless import main as headless_main
        return headless_main(argv)
    if '--list-cameras' in argv:
        from .cameras import list_cameras
        cams = list_cameras()
        for c in cams:
            print(f'{c.index}: {c.name} {c.path}')
        if not cams:
            print('no cameras found')
        return 0
    try:
        from .gui import run_gui
    except ImportError as exc:
        print(f'error: the GUI cannot start ({exc}). Install the GUI dependencies with: pip install -e ".[live]" '
              f'(PyQt6), or run without a window: python main.py --headless --input CAMERA_OR_FILE --avatar IMAGE',
              file=sys.stderr)
        return 2
    return run_gui(argv)


if __name__ == '__main__':
    sys.exit(main())
