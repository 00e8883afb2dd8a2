"""End-to-end live throughput and latency per stage, per backend, with the bare model step measured in the
same run (engine overhead = extra time per frame on top of keypoints + generator).

    python -m benchmarks.bench_live [--backends torch,torch-bf16,onnx] [--seconds 8] [--detect-every 1]

Two runs per backend on a face clip used as the camera (face-128, random weights: speed does not depend on
the weights): 'offline' (realtime=False, every frame processed as fast as possible: throughput and overhead)
and 'live' (the clip paced at its fps and looped, like a webcam: sustained fps, drops, end-to-end latency).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / 'shared'
CLIP = SHARED / 'data' / 'faces' / 'test' / 'dpe_d#misc__dpe_d.mp4'
AVATAR = SHARED / 'data' / 'avatars' / 'mona_lisa.png'

CONFIGS = {'torch': ('torch', 'float32', False), 'torch-bf16': ('torch', 'bfloat16', True),
           'onnx': ('onnx', 'float32', False), 'compile': ('compile', 'float32', False)}


def model_step_ms(name: str, ckpt: Path, steps: int) -> float:
    """The bare model step, timed on the same torch thread the engine uses (see live.torch_thread)."""
    from live.torch_thread import run_on_torch_thread
    return run_on_torch_thread(_model_step_ms, name, ckpt, steps)


def _model_step_ms(name: str, ckpt: Path, steps: int) -> float:
    from fomm_model.checkpoint import load_checkpoint
    from live.backends import create_backend, time_steps
    from live.backends.cache import file_hash
    backend, dtype, cl = CONFIGS[name]
    models = load_checkpoint('face-128', ckpt)
    sel = create_backend(backend, models, (128, 128), file_hash(ckpt), 'cpu', dtype, cl)
    return time_steps(sel.backend, (128, 128), steps=steps, warmup=3)


def engine_run(name: str, ckpt: Path, realtime: bool, seconds: float, detect_every: int, max_frames: int):
    from live.engine import Engine, EngineOptions, EngineSettings
    backend, dtype, cl = CONFIGS[name]
    engine = Engine(EngineOptions(source=str(CLIP), checkpoint=str(ckpt), backend=backend, dtype=dtype,
                                  channels_last=cl, loop_file=realtime, realtime=realtime, detect_every=detect_every),
                    EngineSettings(mirror_preview=False))
    engine.set_avatar(AVATAR)
    engine.calibrate()
    warm = []
    engine.add_listener(lambda r: warm.append(r.index) if len(warm) < 10 else None)
    engine.start()
    while len(warm) < 10:   # first frames include lazy initialisation: not measured
        time.sleep(0.01)
    for q in engine._times.values():
        q.clear()
    s0 = engine.stats()
    t0 = time.perf_counter()
    if realtime:
        time.sleep(seconds)
    else:
        while engine.stats().frames_out - s0.frames_out < max_frames and not engine.wait_until_finished(0.05):
            pass
    wall = time.perf_counter() - t0
    s1 = engine.stats()
    engine.stop()
    frames = s1.frames_out - s0.frames_out
    return {'fps': frames / wall, 'frames': frames, 'in': s1.frames_in - s0.frames_in,
            'dropped': s1.dropped - s0.dropped, 'stages': s1.stages, 'backend': s1.backend}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--backends', default='torch,torch-bf16,onnx')
    p.add_argument('--seconds', type=float, default=8.0, help='length of each live (paced) run')
    p.add_argument('--frames', type=int, default=200, help='frames of each offline run')
    p.add_argument('--steps', type=int, default=30, help='model steps timed alone')
    p.add_argument('--detect-every', type=int, default=1)
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: all cores)')
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)  # read by live.torch_thread when it starts
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, clip {CLIP.name} (256x256, 25 fps), '
          f'face detection every {args.detect_every} frame(s)')
    with tempfile.TemporaryDirectory() as tmp:
        from fomm_model import build_models, save_checkpoint
        ckpt = Path(tmp) / 'face-128-random.pth.tar'
        from live.torch_thread import run_on_torch_thread
        # built on the torch thread too: a parallel region on the main thread would slow that thread's
        # OpenMP team (see live/torch_thread.py)
        run_on_torch_thread(lambda: save_checkpoint(ckpt, build_models('face-128', with_discriminator=False)))
        rows = []
        for name in args.backends.split(','):
            # the bare step is timed before and after the engine runs; the faster one counts (shared cores)
            step = model_step_ms(name, ckpt, args.steps)
            off = engine_run(name, ckpt, False, args.seconds, args.detect_every, args.frames)
            live = engine_run(name, ckpt, True, args.seconds, args.detect_every, args.frames)
            step = min(step, model_step_ms(name, ckpt, args.steps))
            per_frame = 1000.0 / off['fps']
            overhead = 100.0 * (per_frame - step) / step
            rows.append((name, step, off, live, overhead))
            print(f'\n== {name}: {off["backend"]}')
            print(f'  model step alone (kp + frame generator): {step:6.1f} ms  = {1000 / step:5.1f} fps')
            print(f'  offline engine: {off["fps"]:5.1f} fps over {off["frames"]} frames = {per_frame:5.1f} ms/frame'
                  f'  -> engine overhead {overhead:+5.1f}% on top of the model step')
            st = off['stages']
            own = st['crop'].mean_ms + st['output'].mean_ms
            print(f'  engine-thread work besides the model: crop+output {own:5.2f} ms = '
                  f'{100 * own / st["model"].mean_ms:4.1f}% of the model stage')
            print(f'  live (paced 25 fps): {live["fps"]:5.1f} fps out, {live["in"]} in, {live["dropped"]} dropped')
            print('    stage       offline mean/p95 ms    live mean/p95 ms')
            for stage in ('capture', 'crop', 'model', 'output', 'total'):
                a, b = off['stages'][stage], live['stages'][stage]
                label = 'latency' if stage == 'total' else stage
                print(f'    {label:<9} {a.mean_ms:9.2f} {a.p95_ms:8.2f}   {b.mean_ms:9.2f} {b.p95_ms:8.2f}')
        print('\nsummary: backend, model-step fps, offline engine fps, overhead, live fps, live latency mean/p95 ms')
        for name, step, off, live, overhead in rows:
            lat = live['stages']['total']
            print(f'  {name:<11} {1000 / step:6.1f} {off["fps"]:6.1f} {overhead:+6.1f}% {live["fps"]:6.1f} '
                  f'{lat.mean_ms:7.1f} / {lat.p95_ms:.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
