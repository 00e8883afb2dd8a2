"""Turn a training checkpoint into a small inference checkpoint (what ships in assets/models/).

Keeps only ``generator`` and ``kp_detector`` (the original layout's keys, as ``demo.load_checkpoints`` reads
them) in float16, plus ``epoch``/``step`` for provenance; optimiser states and the discriminator are dropped.

    python -m fomm_model.training.release runs/face-128-v25/00000009-checkpoint.pth.tar assets/models/face-128-v6.pth.tar
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checkpoint import CheckpointError, atomic_save, read_checkpoint, strip_prefixes
from ..output_paths import OutputPathError, check_output_file


def release(src: str | Path, dst: str | Path, half: bool = True) -> dict:
    """Write the inference checkpoint and return what it holds (keys -> tensor count). ``dst`` is checked
    first: it may not be the source, a folder or an unwritable place."""
    check_output_file(dst, what='released checkpoint', inputs={'training checkpoint': src},
                      extensions=('.pth.tar', '.pth', '.pt', '.tar'))
    ckpt = read_checkpoint(src)
    out = {}
    for key in ('kp_detector', 'generator'):
        out[key] = {k: (v.half() if half and v.is_floating_point() else v)
                    for k, v in strip_prefixes(ckpt[key]).items()}
    for key in ('epoch', 'step'):
        if key in ckpt:
            out[key] = ckpt[key]
    atomic_save(out, dst)
    return {k: len(v) if isinstance(v, dict) else v for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='training checkpoint (.pth.tar)')
    parser.add_argument('dst', help='inference checkpoint to write')
    parser.add_argument('--fp32', action='store_true', help='keep float32 weights')
    args = parser.parse_args(argv)
    try:
        summary = release(args.src, args.dst, half=not args.fp32)
    except (OutputPathError, CheckpointError, FileNotFoundError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    size = Path(args.dst).stat().st_size / 1e6
    print(f'wrote {args.dst} ({size:.1f} MB): {summary}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
