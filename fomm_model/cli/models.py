"""List, install and remove models: published checkpoints (vox-adv-cpk.pth.tar, ...) or ones you trained.

A file is installed only once it loads (weights only) into the config found from its parameter shapes; then
fomm animate --checkpoint NAME and the live app (main.py --checkpoint NAME, the window's model picker) use it
by name. The folder is $FOMM_LIVE_MODELS or the per-user data folder (see fomm_model.model_store).

Examples: fomm models list | fomm models install ~/Downloads/vox-adv-cpk.pth.tar | fomm models remove vox-adv-cpk
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..model_store import install, list_models, models_dir, remove


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest='action', metavar='{list,install,remove}')
    sub.add_parser('list', help='the bundled model, then the installed ones (the default action)')
    p = sub.add_parser('install', help='check that a checkpoint loads, then copy it into the models folder')
    p.add_argument('file', help='checkpoint .pth.tar')
    p.add_argument('--name', help='name to use it by (default: the file name without .pth.tar)')
    p = sub.add_parser('remove', help='delete an installed model')
    p.add_argument('name', help='its name, as listed')
    parser.set_defaults(action='list')


def run(args: argparse.Namespace) -> int:
    if args.action == 'install':
        entry = install(args.file, name=args.name)
        print(f'installed "{entry.name}" (config {_config_label(entry.config)}, {entry.size / 1e6:.1f} MB): '
              f'use it with --checkpoint {entry.name}')
    elif args.action == 'remove':
        entry = remove(args.name)
        print(f'removed "{entry.name}" ({entry.path})')
    else:
        entries = list_models()
        width = max(len(e.name) for e in entries)
        config_width = max(len(_config_label(e.config)) for e in entries)
        for e in entries:
            digest = (e.sha256 or '')[:12] or '-'
            print(f'{e.name:<{width}}  {_config_label(e.config):<{config_width}}  {e.size / 1e6:7.1f} MB  '
                  f'{digest:<12}  {e.path}')
        print(f'models folder: {models_dir()}')
    return 0


def _config_label(config: str) -> str:
    return Path(config).name if config.endswith(('.yaml', '.yml')) else config
