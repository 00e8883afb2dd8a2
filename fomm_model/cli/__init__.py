"""``fomm`` command line: one sub-command per module in this package (animate, reconstruct, crop, train, models)."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMANDS = {
    'animate': 'fomm_model.cli.animate',
    'reconstruct': 'fomm_model.cli.reconstruct',
    'evaluate': 'fomm_model.cli.evaluate',
    'crop': 'fomm_model.cli.crop',
    'train': 'fomm_model.cli.train',
    'models': 'fomm_model.cli.models',
}


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='fomm', description='First-Order Motion Model tools')
    sub = parser.add_subparsers(dest='command', required=True)
    for name, module in SUBCOMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=mod.__doc__.strip().splitlines()[0], description=mod.__doc__)
        mod.add_arguments(p)
        p.set_defaults(run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = build_parser().parse_args(argv)
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    try:
        return int(args.run(args) or 0)
    except (CliError, CheckpointError, ConfigError, ValueError) as exc:  # incl. OutputPathError, VideoWriteError
        print(f'fomm {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except OSError as exc:  # missing files, permissions, a full disk: the system's message names the file
        print(f'fomm {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'fomm {args.command}: interrupted', file=sys.stderr)
        return 130
