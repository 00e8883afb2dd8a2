"""Every benchmark, one after the other, each in its own process (a fresh torch and thread state), printing
its tables as it goes. ``make bench`` runs this; expect tens of minutes on a 2-core CPU.

    python -m benchmarks.run_all [--only bench_live bench_animator ...]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the soak's full hour is run on its own (python -m benchmarks.bench_soak); here a few minutes show it works
ARGS = {'bench_soak': ['--minutes', '5']}


def benchmarks() -> list[str]:
    return sorted(p.stem for p in HERE.glob('bench_*.py'))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--only', nargs='+', choices=benchmarks(), help='run only these')
    args = p.parse_args(argv)
    failed = []
    for name in args.only or benchmarks():
        print(f'\n===== {name} =====', flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, '-m', f'benchmarks.{name}', *ARGS.get(name, [])], cwd=HERE.parent)
        print(f'----- {name}: exit {code}, {time.perf_counter() - t0:.0f} s', flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f'failed: {", ".join(failed)}', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
