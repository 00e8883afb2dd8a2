"""Compare two ``fomm evaluate --json`` runs pair for pair: is a change of the transfer medians more than chance?

Why: with 7 portraits and 7 driving clips a median r moves by +-0.1 or more with other portraits and drivers like
these (``fomm evaluate`` prints that interval), so two runs' medians cannot be told apart by eye. Scored on the same
pairs, what the runs share (a hard portrait, a still driver) cancels: the difference of the medians comes with an
interval from resampling the avatars and driving clips together for both runs
(:func:`~fomm_model.evaluation.metrics.median_difference`). A difference whose interval excludes 0 is more than
chance at that level.

    python -m fomm_model.evaluation.compare runs/eval/before.json runs/eval/after.json
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .metrics import INTERVAL_LEVEL, median_difference
from .transfer import SIGNALS, counted_r

SECTIONS = {'transfer': 'portraits', 'transfer_people/first_frame': 'held-out people, first frame',
            'transfer_people/mouth_closed': 'held-out people, mouth most closed'}
MEASURES = ('r', 'ratio')


def _section(run: dict, path: str) -> dict | None:
    node = run
    for key in path.split('/'):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) and 'pair_scores' in node else None


def _values(section: dict, signal: str, measure: str) -> dict[tuple[str, str], float | None]:
    """Per exercised pair, as the summary counts it (r through :func:`~fomm_model.evaluation.transfer.counted_r`)."""
    out = {}
    for pair in section['pair_scores']:
        score = pair[signal]
        if score['exercised']:
            value = score[measure]
            out[pair['avatar'], pair['video']] = counted_r(value) if measure == 'r' else value
    return out


def compare(before: dict, after: dict) -> dict:
    """{section: {signal: {measure: {'before', 'after', 'difference', 'interval', 'pairs'}}}} for the sections both
    runs have."""
    result: dict = {}
    for path in SECTIONS:
        a, b = _section(before, path), _section(after, path)
        if a is None or b is None:
            continue
        for signal in SIGNALS:
            for measure in MEASURES:
                va, vb = _values(a, signal, measure), _values(b, signal, measure)
                shared = set(va) & set(vb)
                found = median_difference(va, vb)
                if found is None:
                    continue
                difference, low, high = found
                result.setdefault(path, {}).setdefault(signal, {})[measure] = {
                    'before': a[signal][f'{measure}_median'], 'after': b[signal][f'{measure}_median'],
                    'difference': difference, 'interval': [low, high], 'pairs': len(shared)}
    return result


def _read(path: str) -> dict:
    try:
        run = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f'{path}: not a readable fomm evaluate --json file ({exc})') from None
    if not isinstance(run, dict) or _section(run, 'transfer') is None:
        raise ValueError(f'{path}: no transfer pair scores (write one with fomm evaluate --json FILE)')
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('before', help='the first fomm evaluate --json file')
    parser.add_argument('after', help='the second, scored on the same clips and avatars')
    parser.add_argument('--json', default=None, help='write the comparison here too')
    args = parser.parse_args(argv)
    try:
        before, after = _read(args.before), _read(args.after)
    except ValueError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    result = compare(before, after)
    if not result:
        print('error: the two runs share no scored pair (were they run on the same clips and avatars?)',
              file=sys.stderr)
        return 2
    level = round(INTERVAL_LEVEL * 100)
    for path, signals in result.items():
        for signal, measures in signals.items():
            parts = []
            for measure, c in measures.items():
                low, high = c['interval']
                verdict = 'more than chance' if low > 0 or high < 0 else 'within chance'
                parts.append(f"{measure} {c['before']:.2f} -> {c['after']:.2f} ({c['difference']:+.2f}, "
                             f"{level}% {low:+.2f} to {high:+.2f}: {verdict})")
            print(f"{SECTIONS[path]}, {signal} over {next(iter(measures.values()))['pairs']} pairs: "
                  + '; '.join(parts))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
