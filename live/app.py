"""``main.py [gui|run|cameras|serve] ...``: the window (default), a headless run, the list of cameras, or the
model server for other machines (``--remote``).

``--headless`` and ``--list-cameras`` anywhere on the command line still mean ``run`` and ``cameras``.
"""
from __future__ import annotations

import sys

COMMANDS = {'gui': 'the window (default)', 'run': 'no window: camera or file in, file or virtual camera out',
            'cameras': 'list the cameras by index and name',
            'serve': 'the model server (Ray Serve) for clients started with --remote ws://HOST:PORT'}
ALIASES = {'--headless': 'run', '--list-cameras': 'cameras'}
USAGE = ('usage: main.py [gui|run|cameras|serve] [options]   (main.py COMMAND --help for its options)\n'
         + '\n'.join(f'  {name:<8} {text}' for name, text in COMMANDS.items()))


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """(command, its arguments); the first word if it is a command, else an alias flag, else the window."""
    if argv and argv[0] in COMMANDS:
        return argv[0], argv[1:]
    for flag, command in ALIASES.items():
        if flag in argv:
            return command, [a for a in argv if a != flag]
    return 'gui', argv


def main(argv: list[str] | None = None) -> int:
    command, args = split_command(list(sys.argv[1:] if argv is None else argv))
    if command == 'gui' and args[:1] in (['-h'], ['--help']):
        print(USAGE + '\n\nthe window:')
    if command == 'run':
        from .headless import main as run_main
        return run_main(args)
    if command == 'serve':
        from .remote.serve_cli import main as serve_main
        return serve_main(args)
    if command == 'cameras':
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
        print(f'error: the window cannot start ({exc}). Install the window dependencies with: pip install -e ".[live]" '
              f'(PyQt6), or run without a window: python main.py run --input CAMERA_OR_FILE --avatar IMAGE',
              file=sys.stderr)
        return 2
    return run_gui(args)


if __name__ == '__main__':
    sys.exit(main())
