"""``main.py run``: the engine without a window (camera or file in; video file and/or virtual camera out), then a
summary: frames in/out, dropped, per-stage mean/p95 latency, backend."""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

from .engine import Engine, EngineError, EngineStats
from .options import CaptureOptions, ModelOptions, OutputOptions, RunOptions, Settings, add_arguments, from_args

log = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser(prog: str = 'main.py run') -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    add_arguments(p, ModelOptions, CaptureOptions, Settings, OutputOptions, RunOptions)
    p.add_argument('-v', '--verbose', action='store_true', help='log what the engine does')
    return p


def format_summary(stats: EngineStats, wall_s: float) -> str:
    lines = [f'backend:    {stats.backend} [{stats.backend_reason}]',
             f'threads:    {stats.threads or "n/a"}',
             'mouth gain: ' + (f'{stats.mouth_gain:g}' if stats.mouth_gain is not None else
                               'n/a (the model names no lip keypoints: the lips move as yours)'),
             f'camera:     {stats.camera_state} {stats.camera_resolution or ""} '
             f'(source fps {stats.camera_fps or "n/a"})',
             f'face:       {stats.face_detector}',
             f'frames:     in {stats.frames_in}, out {stats.frames_out}, dropped {stats.dropped} '
             f'in {wall_s:.1f} s ({stats.frames_out / wall_s if wall_s > 0 else 0:.1f} fps)',
             'stage        mean ms    p95 ms']
    for name, st in stats.stages.items():
        label = 'latency' if name == 'total' else name
        lines.append(f'  {label:<9} {st.mean_ms:8.2f} {st.p95_ms:9.2f}')
    if stats.remote:
        lines.append(f'remote:     {stats.remote}')
    lines += [f'notice:     {n}' for n in stats.notices]
    return '\n'.join(lines)


class RunControl:
    """A frame listener (engine thread) that calibrates at ``--calibrate-at`` and stops at ``--max-frames``."""

    def __init__(self, engine: Engine, run: RunOptions, file_fps: float | None):
        self.engine, self.run, self.file_fps = engine, run, file_fps
        self.done = threading.Event()
        self.frames = 0
        self.calibration_asked = False
        self.calibrated_at: int | None = None
        self._waiting_said = False
        self._t0: float | None = None

    def __call__(self, result) -> None:
        self.frames += 1
        if self._t0 is None:
            self._t0 = result.timestamp
        if not self.calibration_asked:
            elapsed = result.index / self.file_fps if self.file_fps else result.timestamp - self._t0
            if elapsed >= self.run.calibrate_at:
                self.engine.calibrate()   # on the engine thread: applies from the next frame with a face
                self.calibration_asked = True
        elif 'calibration waits' in result.status and not self._waiting_said:
            self._waiting_said = True
            print(f'frame {result.index}: no face, so calibration waits for the first frame with one',
                  file=sys.stderr)
        if result.calibrated and self.calibrated_at is None:
            self.calibrated_at = result.index
            print(f'calibrated on frame {result.index}', file=sys.stderr)
        if self.run.max_frames is not None and self.frames >= self.run.max_frames:
            self.engine.stop()           # on the engine thread: no frame after this one
            self.done.set()


def run(args: argparse.Namespace) -> int:
    from .avatar import AvatarError
    from .cameras import SourceError
    model, capture, settings = (from_args(g, args) for g in (ModelOptions, CaptureOptions, Settings))
    output, run_opts = from_args(OutputOptions, args), from_args(RunOptions, args)
    if not run_opts.avatar:
        return _fail('--avatar IMAGE is required: the picture to animate', EXIT_USAGE)
    if capture.realtime is None:
        capture.realtime = False   # a file is processed frame by frame; cameras are live anyway
    try:
        engine = Engine(model, capture, settings)
    except (EngineError, SourceError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        return _run(engine, output, run_opts)
    except (EngineError, SourceError, AvatarError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    finally:
        engine.close()


def _run(engine: Engine, output: OutputOptions, run_opts: RunOptions) -> int:
    from fomm_model.output_paths import check_output_file
    from fomm_model.video_io import VIDEO_WRITE_EXTENSIONS

    from .sinks import VideoFileSink
    is_file = engine.source.kind == 'file'
    file_fps = _file_fps(engine.source.location) if is_file else None
    sink = None
    if output.output:   # checked before anything runs: never over an input, a writable video format
        model = engine.model_options
        check_output_file(output.output, what='--output', extensions=VIDEO_WRITE_EXTENSIONS,
                          inputs={'--input': engine.source.location if is_file else None,
                                  '--avatar': run_opts.avatar, '--checkpoint': model.checkpoint,
                                  '--config': model.config})
        sink = VideoFileSink(output.output, fps=file_fps or 30.0)
    avatar = engine.set_avatar(run_opts.avatar, keep_full_image=run_opts.keep_full_avatar)
    if avatar.warning:
        print(f'warning: {avatar.warning}', file=sys.stderr)
    if sink is not None:
        engine.add_sink(sink)
    if output.virtual_camera:
        w, h = output.vcam_size
        status = engine.start_virtual_camera(w, h, output.vcam_fps, output.vcam_device)
        print(f'virtual camera: {status.state}: {status.message}', file=sys.stderr)
        delay = engine.settings.output_delay_ms
        if status.state == 'on' and delay:
            print(f'virtual camera: each frame {delay:g} ms after its camera frame (--output-delay): give your '
                  f'microphone the same delay', file=sys.stderr)
    control = RunControl(engine, run_opts, file_fps if not engine.capture_options.realtime else None)
    if run_opts.calibrate_at == 0:   # from the very first frame (with a face)
        engine.calibrate()
        control.calibration_asked = True
    engine.add_listener(control)
    t_start = time.perf_counter()
    engine.start()
    code = 0
    try:
        code = _wait(engine, control, run_opts, t_start)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
    engine.stop()
    wall = time.perf_counter() - t_start
    stats = engine.stats()
    print(format_summary(stats, wall))
    if sink is not None:
        print(f'output:     {output.output} ({sink.frames_written} frames)')
    if stats.error:
        return _fail(stats.error, EXIT_USAGE if stats.camera_state == 'failed' else EXIT_FAILED)
    if not stats.calibrated and engine.settings.relative and stats.frames_out:
        print('warning: never calibrated (no frame with a face at or after --calibrate-at '
              f'{run_opts.calibrate_at:g} s): the output shows the avatar unmoved', file=sys.stderr)
    return code


def _wait(engine: Engine, control: RunControl, run_opts: RunOptions, t_start: float) -> int:
    """Block until the file ends, --max-frames/--duration is reached, or the camera never opens."""
    while True:
        remaining = None if run_opts.duration is None else run_opts.duration - (time.perf_counter() - t_start)
        if remaining is not None and remaining <= 0:
            return 0
        if control.done.wait(min(0.2, remaining) if remaining is not None else 0.2):
            return 0
        if engine.wait_until_finished(0):
            return 0
        if control.frames == 0 and time.perf_counter() - t_start > 15:
            st = engine.stats()
            if st.camera_state in ('reconnecting', 'opening', 'failed'):
                from .cameras import describe_cameras
                print(f'error: could not open {engine.source.label}: {st.camera_message} ({describe_cameras()})',
                      file=sys.stderr)
                return EXIT_USAGE


def _fail(message: str, code: int) -> int:
    print(f'error: {message}', file=sys.stderr)
    return code


def _file_fps(path: str) -> float | None:
    from fomm_model.video_io import video_fps
    try:
        return float(video_fps(path)) or None
    except Exception:  # noqa: BLE001 - unknown fps: the usual webcam rate is used by the caller
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    return run(args)
