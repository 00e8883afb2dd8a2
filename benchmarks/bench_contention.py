"""The Animator's step time with the CPU to itself and with a competing process, per thread policy.

    python -m benchmarks.bench_contention [--config face-128] [--backend openvino] [--frames 300]
                                          [--policies 2 1 adaptive] [--competitors none busy x264]
                                          [--omp-wait app passive active]
    python -m benchmarks.bench_contention --engine [--backend auto] [--seconds 20] [--threads N]

Competitors: ``none``; ``busy``, a Python busy loop (one core saturated); ``x264``, a real-time 720p encode
(ffmpeg from imageio-ffmpeg: a synthetic 1280x720 30 fps source, ``-re``, libx264 preset veryfast), as a
streaming or video-call app next to the avatar would run. Policies (``fomm_model.inference.threads``): fixed
2 threads, fixed 1 thread, and the adaptive :class:`ThreadPolicy` (threads from the free cores at start,
then adapted to the frame times).

``--engine`` measures the live engine instead (``live.engine.Engine`` as ``main.py run`` drives it: the bundled
model, a 25 fps clip paced like a camera, adaptive threads unless ``--threads``): the output frame interval and
the model stage, median and p99, against the same run without a competitor (issue 15's goal: median within
1.5x, p99 within 3x).

Each ``--omp-wait`` value runs in its own child process (OpenMP reads it when PyTorch loads). In a child, each
competitor runs while every policy animates ``--frames`` frames of a real clip with the bundled model, the
policies taking turns in ``--rounds`` blocks; the table gives the median and p99 step time and their ratios
to the same policy's median with no competitor.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_animator import bundled, omp_child_env

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'


def start_competitor(kind: str) -> subprocess.Popen | None:
    """Start the competing process (None for ``none``)."""
    if kind == 'none':
        return None
    if kind == 'busy':
        cmd = [sys.executable, '-c', 'while True: pass']
    elif kind == 'x264':
        import imageio_ffmpeg
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), '-hide_banner', '-loglevel', 'error', '-re', '-f', 'lavfi',
               '-i', 'testsrc2=size=1280x720:rate=30', '-c:v', 'libx264', '-preset', 'veryfast', '-f', 'null', '-']
    else:
        raise ValueError(f'unknown competitor {kind!r}')
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_competitor(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _policy(name: str, runner):
    from fomm_model.inference.threads import ThreadPolicy
    if name == 'adaptive':
        return ThreadPolicy(runner, max_threads=2)
    return ThreadPolicy(runner, threads=int(name))


def child(args) -> None:
    """Measure every (competitor, policy) pair under this process's OpenMP wait policy; JSON lines out."""
    import numpy as np
    import torch

    from fomm_model import Animator, load_checkpoint, load_config
    from fomm_model.config import frame_size
    from fomm_model.inference import create_runner
    from fomm_model.inference.cache import file_hash, graph_key
    from fomm_model.video_io import read_image, read_video, resize_image
    bundled_config, bundled_file = bundled()
    config = load_config(args.config or bundled_config)
    size = frame_size(config)
    models = load_checkpoint(config, bundled_file)
    torch.set_num_threads(2)
    selection = create_runner(models, size, args.backend, 'cpu', model_key=graph_key(models, file_hash(bundled_file)))
    animator = Animator(models, backend=selection.runner)
    source = resize_image(read_image(SHARED / 'data' / 'avatars' / 'mona_lisa.png'), size)
    clip = sorted((SHARED / 'data' / 'faces' / 'test').glob('*.mp4'))[0]
    frames = [resize_image(f, size) for f in read_video(clip, max_frames=90)[0]]
    animator.set_source(source)
    animator.set_anchor(frames[0])
    step = lambda i: animator.generate(animator.normalize(animator.keypoints(frames[i % len(frames)])))
    for competitor in args.competitors:
        proc = start_competitor(competitor)
        time.sleep(2.0 if proc else 0.0)   # let it reach its steady load
        try:
            policies = {name: _policy(name, animator.runner) for name in args.policies}
            times: dict[str, list[float]] = {name: [] for name in policies}
            for policy in policies.values():
                policy.start()
                policy.activate()
                for i in range(args.warmup):
                    step(i)
            names = list(policies)
            block = max(1, args.frames // args.rounds)
            for r in range(args.rounds):   # policies take turns in blocks: load drifts hit all alike
                for name in (names if r % 2 == 0 else names[::-1]):
                    policy = policies[name]
                    policy.activate()
                    for i in range(block):
                        t0 = time.perf_counter()
                        step(r * block + i)
                        ms = (time.perf_counter() - t0) * 1000
                        policy.record(ms)
                        times[name].append(ms)
            for name, policy in policies.items():
                print(json.dumps({'omp_wait': os.environ.get('FOMM_BENCH_OMP_WAIT', 'inherited'),
                                  'competitor': competitor, 'policy': name, 'backend': animator.runner.describe(),
                                  'median': float(np.median(times[name])),
                                  'p99': float(np.percentile(times[name], 99)), 'threads': policy.threads,
                                  'decisions': [f'frame {d.frame}: {d.threads} thread(s), {d.reason}'
                                                for d in policy.decisions],
                                  'load': os.getloadavg()[0]}), flush=True)
        finally:
            stop_competitor(proc)


def engine_child(args) -> None:
    """The live engine as a user runs it (a clip paced like a 25 fps camera, adaptive threads unless
    ``--threads``) under each competitor: output frame interval and model stage, JSON lines out."""
    import numpy as np

    from live.engine import Engine
    from live.options import CaptureOptions, ModelOptions, Settings
    clip = SHARED / 'data' / 'faces' / 'test' / 'grid_lwbsza#grid_lipnet__lwbsza.mp4'   # 25 fps
    for competitor in args.competitors:
        proc = start_competitor(competitor)
        engine = Engine(ModelOptions(backend=args.backend, device='cpu', threads=args.threads),
                        CaptureOptions(input=str(clip), loop=True, realtime=True), Settings(paste_back=False))
        stamps, model_ms = [], []
        try:
            engine.set_avatar(SHARED / 'data' / 'avatars' / 'mona_lisa.png')
            engine.add_listener(lambda r: (stamps.append(time.perf_counter()), model_ms.append(r.timings_ms['model'])))
            engine.start()
            time.sleep(args.warmup_s)
            engine.calibrate()
            time.sleep(1.0)
            start = len(stamps)
            time.sleep(args.seconds)
            n = len(stamps)
            stats = engine.stats()
        finally:
            engine.close()
            stop_competitor(proc)
        gaps = np.diff(stamps[start:n]) * 1000
        model = np.asarray(model_ms[start:n])
        print(json.dumps({'competitor': competitor, 'frames': int(n - start), 'fps': float(1000 / gaps.mean()),
                          'interval_median': float(np.median(gaps)), 'interval_p99': float(np.percentile(gaps, 99)),
                          'model_median': float(np.median(model)), 'model_p99': float(np.percentile(model, 99)),
                          'threads': stats.threads, 'backend': stats.backend, 'dropped': stats.dropped,
                          'load': os.getloadavg()[0]}), flush=True)


def engine_main(args) -> int:
    """``--engine``: one child process for every competitor, OpenMP waiting as the first ``--omp-wait`` says
    (default ``app``: as ``main.py`` sets it)."""
    from fomm_model.devices import describe_cpu
    env = omp_child_env(args.omp_wait[0])
    cmd = [sys.executable, '-m', 'benchmarks.bench_contention', '--engine-child', '--backend', args.backend,
           '--seconds', str(args.seconds), '--warmup-s', str(args.warmup_s), '--competitors', *args.competitors]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    print(f'CPU: {describe_cpu()}; load average {os.getloadavg()[0]:.1f} at start; live engine, the bundled model, '
          f'25 fps clip as the camera, backend {args.backend}, threads {args.threads or "adaptive"}, '
          f'OpenMP wait {args.omp_wait[0]}, '
          f'{args.seconds:.0f} s per competitor')
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
    if proc.returncode != 0 or not rows:
        print(proc.stderr[-3000:])
        return proc.returncode or 1
    idle = next((r for r in rows if r['competitor'] == 'none'), None)
    print(f"{'competitor':<10} {'fps':>5} {'frame ms median':>15} {'p99':>7} {'/idle':>11} {'model ms median':>15} "
          f"{'p99':>7} {'/idle':>11}  threads")
    for r in rows:
        ratio = lambda key, base: f"{r[key] / idle[base]:.2f}x" if idle else '-'
        print(f"{r['competitor']:<10} {r['fps']:5.1f} {r['interval_median']:15.1f} {r['interval_p99']:7.1f} "
              f"{ratio('interval_median', 'interval_median'):>5} {ratio('interval_p99', 'interval_median'):>5} "
              f"{r['model_median']:15.1f} {r['model_p99']:7.1f} {ratio('model_median', 'model_median'):>5} "
              f"{ratio('model_p99', 'model_median'):>5}  {r['threads']}", flush=True)
    if idle:
        worst = [r for r in rows if r['competitor'] != 'none']
        met = all(r['interval_median'] <= 1.5 * idle['interval_median'] and
                  r['interval_p99'] <= 3 * idle['interval_median'] for r in worst)
        print(f"goal (frame time median within 1.5x of idle, p99 within 3x of the idle median): "
              f"{'met' if met else 'NOT met'}")
    print(f"  ({rows[0]['backend']}; load average {rows[-1]['load']:.1f} at the end)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', help="model config (default: the bundled model's)")
    parser.add_argument('--backend', default='openvino')
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--rounds', type=int, default=5, help='blocks per policy')
    parser.add_argument('--policies', nargs='+', default=['2', '1', 'adaptive'])
    parser.add_argument('--competitors', nargs='+', default=['none', 'busy', 'x264'])
    parser.add_argument('--omp-wait', nargs='+', choices=['app', 'passive', 'active'], default=['app', 'active'])
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--show-decisions', action='store_true', help='print the adaptive policy decisions')
    parser.add_argument('--engine', action='store_true',
                        help='measure the live engine (frame interval and model stage) instead of the bare step')
    parser.add_argument('--seconds', type=float, default=20.0, help='--engine: measured seconds per competitor')
    parser.add_argument('--warmup-s', type=float, default=4.0, help='--engine: seconds before measuring')
    parser.add_argument('--threads', type=int, default=None, help='--engine: fixed thread count (default adaptive)')
    parser.add_argument('--engine-child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.engine_child:
        engine_child(args)
        return 0
    if args.engine:
        return engine_main(args)
    from fomm_model.devices import describe_cpu
    config = args.config or 'of the bundled model'
    print(f'CPU: {describe_cpu()}; load average {os.getloadavg()[0]:.1f} at start; config {config}, '
          f'backend {args.backend}, {args.frames} frames per cell')
    print(f"{'OMP wait':<9} {'competitor':<10} {'policy':<9} {'median ms':>9} {'p99 ms':>8} {'median/idle':>11} "
          f"{'p99/idle':>8}  threads at end")
    for wait in args.omp_wait:
        env = dict(omp_child_env(wait), FOMM_BENCH_OMP_WAIT=wait)
        cmd = [sys.executable, '-m', 'benchmarks.bench_contention', '--child',
               *(['--config', args.config] if args.config else []), '--backend', args.backend,
               '--frames', str(args.frames), '--warmup', str(args.warmup), '--rounds', str(args.rounds),
               '--policies', *args.policies, '--competitors', *args.competitors]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
        if proc.returncode != 0 or not rows:
            print(proc.stderr[-3000:])
            return proc.returncode or 1
        idle = {r['policy']: r['median'] for r in rows if r['competitor'] == 'none'}
        for r in rows:
            base = idle.get(r['policy'])
            ratio = lambda v: f'{v / base:.2f}x' if base else '-'
            print(f"{wait:<9} {r['competitor']:<10} {r['policy']:<9} {r['median']:9.1f} {r['p99']:8.1f} "
                  f"{ratio(r['median']):>11} {ratio(r['p99']):>8}  {r['threads']}", flush=True)
            if args.show_decisions and r['policy'] == 'adaptive':
                for d in r['decisions']:
                    print(f'      {d}')
        print(f"  ({rows[0]['backend']}; load average {rows[-1]['load']:.1f} at the end)")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
