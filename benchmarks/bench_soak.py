"""Soak: the headless engine on a looped clip for a long time, with a virtual camera and a file output, sampled
every minute: process memory (RSS), frame time p50/p99 (camera frame in -> outputs sent, and the model step),
frames out and frames dropped. A leak shows as RSS that keeps climbing; a growing queue or fragmentation as a
p99 that creeps up.

    python -m benchmarks.bench_soak [--minutes 60] [--threads 1] [--json soak.json] [--svg soak.svg]

The clip is paced at its fps like a webcam (frames the engine is too slow for are dropped, as live). The virtual
camera is a real pyvirtualcam backend registered under the name 'null' that counts frames (v4l2loopback cannot be
loaded here); the file output is the real ffmpeg writer into a temporary folder, deleted at the end. The
verdict compares the last 10 minutes with minutes 2-11 (the first minute holds start-up): memory within 5%,
median per-minute p99 within 1.25x.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / 'shared'
CLIP = SHARED / 'data' / 'faces' / 'test' / 'dpe_d#misc__dpe_d.mp4'
AVATAR = SHARED / 'data' / 'avatars' / 'mona_lisa.png'


class NullCamera:
    """A pyvirtualcam backend that counts frames and keeps none (the device write is all that is missing)."""
    sent = 0

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.fourcc = fourcc

    def send(self, frame) -> None:
        NullCamera.sent += 1

    def device(self) -> str:
        return 'null0'

    def native_fourcc(self):
        return self.fourcc

    def close(self) -> None:
        pass


class FrameTimes:
    """Per-frame timings collected on the engine thread (a list append), taken by the sampler each minute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[tuple[float, float]] = []

    def __call__(self, result) -> None:
        tm = result.timings_ms
        with self._lock:
            self._rows.append((tm.get('total', 0.0), tm.get('model', 0.0)))

    def take(self) -> np.ndarray:
        with self._lock:
            rows, self._rows = self._rows, []
        return np.asarray(rows, float).reshape(-1, 2)


def verdict(samples: list[dict]) -> dict:
    """Memory and p99 drift: the last 10 samples against samples 2-11 (or the halves of a shorter run)."""
    n = len(samples)
    if n < 4:
        return {'samples': n, 'note': 'too short to judge drift'}
    early, late = (samples[1:11], samples[-10:]) if n >= 21 else (samples[1:1 + (n - 1) // 2], samples[-((n - 1) // 2):])
    rss = lambda rows: float(np.median([r['rss_mb'] for r in rows]))
    p99 = lambda rows: float(np.median([r['total_p99_ms'] for r in rows]))
    mem_change, p99_ratio = rss(late) / rss(early) - 1, p99(late) / p99(early)
    return {'samples': n, 'rss_early_mb': rss(early), 'rss_late_mb': rss(late), 'rss_change': mem_change,
            'p99_early_ms': p99(early), 'p99_late_ms': p99(late), 'p99_ratio': p99_ratio,
            'memory_flat': abs(mem_change) <= 0.05, 'p99_flat': p99_ratio <= 1.25}


def draw(samples: list[dict], path: Path, title: str) -> None:
    """RSS and per-minute p50/p99 against time, one picture (SVG: text, small, diffable)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    t = [s['minute'] for s in samples]
    fig, (ax_mem, ax_time) = plt.subplots(2, 1, figsize=(7, 4.6), sharex=True)
    ax_mem.plot(t, [s['rss_mb'] for s in samples], color='tab:blue')
    ax_mem.set_ylabel('RSS (MB)')
    ax_mem.set_ylim(0, max(s['rss_mb'] for s in samples) * 1.15)
    ax_mem.set_title(title, fontsize=9)
    for key, label, colour in (('total_p50_ms', 'frame p50', 'tab:green'), ('total_p99_ms', 'frame p99', 'tab:red'),
                               ('model_p50_ms', 'model p50', 'tab:gray')):
        ax_time.plot(t, [s[key] for s in samples], label=label, color=colour)
    ax_time.set_ylabel('ms')
    ax_time.set_ylim(0, max(s['total_p99_ms'] for s in samples) * 1.15)
    ax_time.set_xlabel('minute')
    ax_time.legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, metadata={'Date': None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--minutes', type=float, default=60.0)
    p.add_argument('--interval', type=float, default=60.0, help='seconds between samples')
    p.add_argument('--threads', type=int, default=1, help='model threads (1: the other core is the video call)')
    p.add_argument('--backend', default='torch')
    p.add_argument('--json', type=Path, help='write the samples and the verdict here')
    p.add_argument('--svg', type=Path, help='draw RSS and frame times against time here')
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import psutil
    import pyvirtualcam

    from fomm_model.devices import describe_cpu
    from live.engine import Engine
    from live.options import CaptureOptions, ModelOptions, Settings
    from live.sinks import VideoFileSink
    pyvirtualcam.register_backend('null', NullCamera)
    cpu = describe_cpu()
    print(f'CPU: {cpu}; {args.minutes:g} min, sample every {args.interval:g} s, backend {args.backend}, '
          f'{args.threads} model thread(s); clip {CLIP.name} looped at its fps; outputs: virtual camera (null) '
          f'720p + mp4 file', flush=True)
    process = psutil.Process()
    times = FrameTimes()
    engine = Engine(ModelOptions(backend=args.backend, device='cpu', threads=args.threads),
                    CaptureOptions(input=str(CLIP), loop=True, realtime=True),
                    Settings(mirror_preview=False))
    samples: list[dict] = []
    with tempfile.TemporaryDirectory(prefix='fomm-soak-') as tmp:
        sink = VideoFileSink(Path(tmp) / 'soak.mp4', fps=25)
        engine.set_avatar(AVATAR)
        engine.add_sink(sink)
        status = engine.start_virtual_camera(1280, 720, 25, backend='null')
        if status.state != 'on':
            print(f'virtual camera did not start: {status.state}: {status.message}', file=sys.stderr)
            return 1
        engine.add_listener(times)
        engine.start()
        engine.calibrate()
        print(f'{"min":>4} {"RSS MB":>7} {"fps":>5} {"frame p50":>9} {"p99":>6} {"model p50":>9} {"p99":>6} '
              f'{"dropped":>7} {"vcam":>6} {"file":>6}', flush=True)
        t_start = time.perf_counter()
        last = engine.stats()
        try:
            while len(samples) < args.minutes * 60 / args.interval:
                time.sleep(max(0.0, t_start + (len(samples) + 1) * args.interval - time.perf_counter()))
                stats, rows = engine.stats(), times.take()
                if stats.state == 'failed':
                    print(f'engine failed: {stats.error}', file=sys.stderr)
                    return 1
                if not len(rows):
                    rows = np.zeros((1, 2))
                total, model = np.percentile(rows[:, 0], (50, 99)), np.percentile(rows[:, 1], (50, 99))
                row = {'minute': round((time.perf_counter() - t_start) / 60, 2),
                       'rss_mb': process.memory_info().rss / 2**20, 'frames': len(rows),
                       'fps': len(rows) / args.interval, 'total_p50_ms': total[0], 'total_p99_ms': total[1],
                       'model_p50_ms': model[0], 'model_p99_ms': model[1],
                       'dropped': stats.dropped - last.dropped, 'vcam_frames': NullCamera.sent,
                       'file_frames': sink.frames_written, 'load_1min': psutil.getloadavg()[0]}
                samples.append(row)
                last = stats
                print(f'{row["minute"]:4.1f} {row["rss_mb"]:7.1f} {row["fps"]:5.1f} {total[0]:9.1f} {total[1]:6.1f} '
                      f'{model[0]:9.1f} {model[1]:6.1f} {row["dropped"]:7d} {row["vcam_frames"]:6d} '
                      f'{row["file_frames"]:6d}', flush=True)
        finally:
            engine.close()
    result = verdict(samples)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps({'cpu': cpu, 'args': {k: str(v) for k, v in vars(args).items()},
                                         'samples': samples, 'verdict': result}, indent=1))
    if args.svg and samples:
        draw(samples, args.svg, f'soak: {CLIP.name} looped, {args.backend} {args.threads} thread(s), {cpu}')
    return 0 if result.get('memory_flat', True) and result.get('p99_flat', True) else 1


if __name__ == '__main__':
    sys.exit(main())
