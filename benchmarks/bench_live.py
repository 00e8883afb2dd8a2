"""End-to-end live throughput and latency per stage, per backend, with the bare model step measured in the
same run (engine overhead = extra time per frame on top of keypoints + generator).

    python -m benchmarks.bench_live [--backends torch,onnx,openvino] [--rounds 7] [--detect-every 3] [--detect-sync]

Per backend, on a face clip used as the camera, with the bundled model (trained weights matter: the
face detector runs more often while the model's keypoints say the face moves):
'offline' rounds (realtime=False, every frame processed as fast as possible: throughput and overhead), each
right after timing the bare model step, the median round reported; then one 'live' run (the clip paced at its
fps and looped, like a webcam: sustained fps, drops, end-to-end latency). The bare step runs on the engine's
own thread (a command between frames), so both see the same OpenMP team.

'Interleaved': one more offline run in which, every ``--block-frames`` frames, the engine thread itself times
``--block-steps`` bare steps (the first of each burst not counted) before taking the next frame; each block's
ratio (mean frame time over mean bare step) compares frames and steps a fraction of a second apart, so a shared
host's slow spells, which make whole rounds swing by tens of percent, hit both sides alike. The median block is
reported beside the median round.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import live  # noqa: E402,F401  (before torch: OpenMP waits as in main.py, live.OMP_WAIT_ENV)
import torch  # noqa: E402
SHARED = REPO.parent / 'shared'
CLIP = SHARED / 'data' / 'faces' / 'test' / 'dpe_d#misc__dpe_d.mp4'
AVATAR = SHARED / 'data' / 'avatars' / 'mona_lisa.png'

CONFIGS = {'torch': ('torch', 'float32', False), 'torch-bf16': ('torch', 'bfloat16', True),
           'onnx': ('onnx', 'float32', False), 'openvino': ('openvino', 'float32', False),
           'compile': ('compile', 'float32', False)}


def bare_step(engine):
    """A zero-argument model step (keypoints + per-frame generator) of the engine's own animator on a sample
    image, to be called on the engine thread: the runtime's own calls, so tensors in and out where the runner
    converts frames in NumPy (that conversion counts as engine work), uint8 frames where its graphs convert
    them (``Runner.images_in_graph``: OpenVINO float32)."""
    from fomm_model.inference import sample_images
    animator = engine.pipeline.animator
    runner, prepared = animator.runner, animator.prepared
    _, driving = sample_images(animator.size)
    if runner.images_in_graph:
        return lambda: runner.generate_image(prepared, *runner.keypoints_of_image(driving))
    x = animator.to_tensor(driving)
    return lambda: runner.generate(prepared, *runner.keypoints(x))


def bare_step_ms(engine, steps: int) -> float:
    """Mean over back-to-back model steps of the engine's own animator, on the engine thread (the same statistic
    as the engine's frames per second)."""

    def run() -> float:
        step = bare_step(engine)
        for _ in range(3):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - t0) * 1000 / steps
    return engine.submit(run).result()


def make_engine(name: str, ckpt: Path, realtime: bool, detect_every: int, detect_sync: bool, threads):
    from live.engine import Engine
    from live.options import CaptureOptions, ModelOptions, Settings
    backend, dtype, cl = CONFIGS[name]
    engine = Engine(ModelOptions(checkpoint=str(ckpt), backend=backend, device='cpu', dtype=dtype,
                                 channels_last=cl, threads=threads),
                    CaptureOptions(input=str(CLIP), loop=True, realtime=realtime, detect_every=detect_every,
                                   detect_sync=detect_sync),
                    Settings(mirror_preview=False, paste_back=False))
    engine.set_avatar(AVATAR)
    engine.calibrate()
    return engine


def engine_window(engine, realtime: bool, seconds: float, frames: int) -> dict:
    """Start the engine, skip 10 warm-up frames, measure ``frames`` frames (offline) or ``seconds`` (live).

    The main thread only sleeps on events meanwhile: polling ``stats()`` every few ms measurably slowed the
    model on these 2 cores (+16%)."""
    import threading
    warm, done = threading.Event(), threading.Event()
    count = [0]

    def on_frame(_result) -> None:
        count[0] += 1
        if count[0] == 10:
            warm.set()
        elif count[0] == 10 + frames:
            done.set()
    engine.add_listener(on_frame)
    engine.start()
    warm.wait()                       # first frames include lazy initialisation: not measured
    engine.reset_stats()
    s0 = engine.stats()
    d0 = engine.submit(lambda: engine.pipeline.cropper.detections).result()
    t0 = time.perf_counter()
    if realtime:
        time.sleep(seconds)
    else:
        done.wait()
    s1 = engine.stats()
    wall = time.perf_counter() - t0
    engine.stop()
    engine.remove_listener(on_frame)
    n = s1.frames_out - s0.frames_out
    detections = engine.submit(lambda: engine.pipeline.cropper.detections).result() - d0
    return {'fps': n / wall, 'frames': n, 'in': s1.frames_in - s0.frames_in, 'dropped': s1.dropped - s0.dropped,
            'stages': s1.stages, 'backend': s1.backend, 'detections': detections}


def interleaved_blocks(engine, blocks: int, block_frames: int, block_steps: int) -> list[tuple[float, float]]:
    """(mean frame time, mean bare step) in ms per block of one offline run: after every ``block_frames`` frames
    (10 warm-up frames first), the frame listener, on the engine thread, times ``block_steps`` bare steps after
    one untimed step. A frame's time runs from the end of the previous frame (or burst) to the end of its own."""
    import threading
    done, state = threading.Event(), {'count': 0, 'last': 0.0, 'frames': [], 'step': None}
    out: list[tuple[float, float]] = []

    def on_frame(_result) -> None:
        now = time.perf_counter()
        state['count'] += 1
        if state['count'] > 10 and not done.is_set():
            state['frames'].append(now - state['last'])
            if len(state['frames']) == block_frames:
                step = state['step'] = state['step'] or bare_step(engine)
                step()                                   # the first step after frames: not counted
                t0 = time.perf_counter()
                for _ in range(block_steps):
                    step()
                t1 = time.perf_counter()
                out.append((1000 * sum(state['frames']) / block_frames, 1000 * (t1 - t0) / block_steps))
                state['frames'] = []
                if len(out) == blocks:
                    done.set()
                now = time.perf_counter()
        state['last'] = now
    engine.add_listener(on_frame)
    engine.start()
    done.wait()
    engine.stop()
    engine.remove_listener(on_frame)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--backends', default='torch,onnx,openvino', help=f'comma-separated: {", ".join(CONFIGS)}')
    p.add_argument('--seconds', type=float, default=8.0, help='length of each live (paced) run')
    p.add_argument('--frames', type=int, default=120, help='frames of each offline round')
    p.add_argument('--steps', type=int, default=60, help='model steps timed alone per round')
    p.add_argument('--rounds', type=int, default=7, help='alternating rounds of bare step and offline engine')
    p.add_argument('--blocks', type=int, default=40, help='blocks of the interleaved run')
    p.add_argument('--block-frames', type=int, default=12, help='engine frames per interleaved block')
    p.add_argument('--block-steps', type=int, default=6, help='bare steps per interleaved block')
    p.add_argument('--detect-every', type=int, default=3)
    p.add_argument('--detect-sync', action='store_true', help='face detection on the engine thread (the old way)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: all cores)')
    p.add_argument('--checkpoint', default=None, help='a checkpoint of a 128-px face model (default: the bundled one)')
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from fomm_model.devices import describe_cpu
    print(f'CPU: {describe_cpu()}')
    print(f'torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, clip {CLIP.name} '
          f'(256x256, 25 fps), '
          f'face detection every {args.detect_every} frame(s), '
          f'{"on the engine thread" if args.detect_sync else "on its own thread"}')
    from fomm_model.defaults import default_checkpoint_path
    ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint_path()
    print(f'model: {ckpt}')
    rows = []
    for name in args.backends.split(','):
        engine = make_engine(name, ckpt, False, args.detect_every, args.detect_sync, args.threads)
        # rounds alternate the bare step and the offline engine so that both see the same machine
        # (shared, noisy cores); the median of the per-round ratios is reported
        steps, offs, ratios = [], [], []
        for _ in range(args.rounds):
            steps.append(bare_step_ms(engine, args.steps))
            offs.append(engine_window(engine, False, args.seconds, args.frames))
            ratios.append(1000.0 / offs[-1]['fps'] / steps[-1] - 1.0)
        order = sorted(range(args.rounds), key=lambda i: ratios[i])
        mid = order[len(order) // 2]
        step, off, overhead = steps[mid], offs[mid], 100.0 * ratios[mid]
        blocks = interleaved_blocks(engine, args.blocks, args.block_frames, args.block_steps)
        block_ratios = sorted(frame / bare - 1.0 for frame, bare in blocks)
        interleaved = 100.0 * block_ratios[len(block_ratios) // 2]
        engine.close()
        live_engine = make_engine(name, ckpt, True, args.detect_every, args.detect_sync, args.threads)
        paced = engine_window(live_engine, True, args.seconds, args.frames)
        live_engine.close()
        per_frame = 1000.0 / off['fps']
        rows.append((name, step, off, paced, overhead, 100.0 * (per_frame / off['stages']['model'].mean_ms - 1.0),
                     interleaved))
        print(f'\n== {name}: {off["backend"]}')
        print(f'  overhead per round: {", ".join(f"{100 * r:+.1f}%" for r in ratios)} (median reported)')
        q = lambda f: 100.0 * block_ratios[min(len(block_ratios) - 1, int(f * len(block_ratios)))]
        print(f'  interleaved: median of {len(blocks)} blocks ({args.block_frames} frames, then {args.block_steps} '
              f'bare steps) {interleaved:+.1f}% (quartiles {q(0.25):+.1f}% / {q(0.75):+.1f}%); frame '
              f'{statistics.median(f for f, _ in blocks):.1f} ms, bare step {statistics.median(b for _, b in blocks):.1f} '
              f'ms (block medians)')
        print(f'  model step alone (kp + frame generator): {step:6.1f} ms  = {1000 / step:5.1f} fps')
        print(f'  offline engine: {off["fps"]:5.1f} fps over {off["frames"]} frames = {per_frame:5.1f} ms/frame'
              f'  -> engine overhead {overhead:+5.1f}% on top of the model step')
        st = off['stages']
        own = st['crop'].mean_ms + st['output'].mean_ms
        in_run = 100.0 * (per_frame / st['model'].mean_ms - 1.0)
        print(f'  within the same frames: {per_frame:5.1f} ms per frame vs {st["model"].mean_ms:5.1f} ms model stage '
              f'-> {in_run:+5.1f}% (excludes the model slowing down from sharing the cores)')
        print(f'  engine-thread work besides the model: crop+output {own:5.2f} ms = '
              f'{100 * own / st["model"].mean_ms:4.1f}% of the model stage; model stage '
              f'{st["model"].mean_ms:5.1f} ms in the engine vs {step:5.1f} ms alone')
        print(f'  face detections: {off["detections"]} in {off["frames"]} offline frames, {paced["detections"]} in '
              f'{paced["frames"]} live frames')
        print(f'  live (paced 25 fps): {paced["fps"]:5.1f} fps out, {paced["in"]} in, {paced["dropped"]} dropped')
        print('    stage       offline mean/p95 ms    live mean/p95 ms')
        for stage in ('capture', 'crop', 'model', 'output', 'total'):
            a, b = off['stages'][stage], paced['stages'][stage]
            label = 'latency' if stage == 'total' else stage
            print(f'    {label:<9} {a.mean_ms:9.2f} {a.p95_ms:8.2f}   {b.mean_ms:9.2f} {b.p95_ms:8.2f}')
    print('\nsummary: backend, model-step fps, offline engine fps, overhead vs bare step (median round), '
          '(median interleaved block), overhead within the run, live fps, live latency mean/p95 ms')
    for name, step, off, paced, overhead, in_run, interleaved in rows:
        lat = paced['stages']['total']
        print(f'  {name:<11} {1000 / step:6.1f} {off["fps"]:6.1f} {overhead:+6.1f}% {interleaved:+6.1f}% {in_run:+6.1f}% '
              f'{paced["fps"]:6.1f} {lat.mean_ms:7.1f} / {lat.p95_ms:.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
