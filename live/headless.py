"""``main.py --headless``: run the engine without a window (file/camera in, video file and/or virtual camera
out) and print a summary: frames in/out, dropped, per-stage mean/p95 latency, backend."""
from __future__ import annotations

import argparse
import logging
import sys
import time

from .cameras import resolution_arg
from .engine import Engine, EngineError, EngineOptions, EngineSettings, EngineStats

log = logging.getLogger(__name__)

EXIT_USAGE = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--input', '-i', default='0', help='camera index or name, video file, or stream URL (default 0)')
    p.add_argument('--avatar', '-a', help='avatar image (any size; the face is cropped automatically)')
    p.add_argument('--keep-full-avatar', action='store_true', help='use the whole avatar image, no face crop')
    p.add_argument('--output', '-o', help='write the animated avatar to this video file')
    p.add_argument('--virtual-camera', action='store_true', help='send the output to a virtual camera')
    p.add_argument('--vcam-size', default=(1280, 720), type=resolution_arg,
                   help='virtual camera WIDTHxHEIGHT (square avatar pillarboxed), e.g. 1280x720 or 720x720')
    p.add_argument('--vcam-fps', type=float, default=30.0)
    p.add_argument('--camera-size', default=None, metavar='WxH', type=resolution_arg,
                   help='resolution to ask the camera for (default: 640x480 when the model runs on the CPU, '
                        'whose cores decoding 720p would take from it; 1280x720 on a GPU)')
    p.add_argument('--vcam-device', default=None, help='virtual camera device, e.g. /dev/video10')
    p.add_argument('--backend', default='auto', choices=('auto', 'torch', 'compile', 'tensorrt', 'onnx'))
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--dtype', default='float32', choices=('float32', 'float16', 'bfloat16'))
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--config', default=None, help='model config name or YAML (default face-128)')
    p.add_argument('--checkpoint', default=None, help='model checkpoint (default: the bundled face-128 model)')
    p.add_argument('--calibrate-at', type=float, default=0.0, metavar='SECONDS',
                   help='calibrate on the frame at this time (file time for files, wall time for cameras)')
    p.add_argument('--auto-calibrate', action='store_true', help='re-anchor when the pose matches the avatar better')
    p.add_argument('--kp-smoothing', type=float, default=0.0, help='keypoint smoothing 0 (off) .. 1')
    p.add_argument('--absolute', action='store_true', help='absolute keypoints instead of relative motion')
    p.add_argument('--max-frames', type=int, default=None, help='stop after this many output frames')
    p.add_argument('--duration', type=float, default=None, help='stop after this many seconds')
    p.add_argument('--loop', action='store_true', help='loop a video file input (until --max-frames/--duration)')
    p.add_argument('--realtime', action='store_true',
                   help='pace a file input at its fps and drop frames like a camera (default: every frame)')
    p.add_argument('--detect-every', type=int, default=3,
                   help='run face detection every N frames (default 3: 10 Hz from a 30 fps camera; the crop is '
                        'smoothed in between). Detection runs on its own thread between frames')
    p.add_argument('--detect-sync', action='store_true',
                   help='run face detection on the engine thread, in the frame it crops (no one-frame crop lag)')


def format_summary(stats: EngineStats, wall_s: float) -> str:
    lines = [f'backend:    {stats.backend} [{stats.backend_reason}]',
             f'camera:     {stats.camera_state} {stats.camera_resolution or ""} '
             f'(source fps {stats.camera_fps or "n/a"})',
             f'face:       {stats.face_detector}',
             f'frames:     in {stats.frames_in}, out {stats.frames_out}, dropped {stats.dropped} '
             f'in {wall_s:.1f} s ({stats.frames_out / wall_s if wall_s > 0 else 0:.1f} fps)',
             'stage        mean ms    p95 ms']
    for name, st in stats.stages.items():
        label = 'latency' if name == 'total' else name
        lines.append(f'  {label:<9} {st.mean_ms:8.2f} {st.p95_ms:9.2f}')
    lines += [f'notice:     {n}' for n in stats.notices]
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    from fomm_model.defaults import DEFAULT_CONFIG

    from .avatar import AvatarError
    from .cameras import SourceError
    from .sinks import VideoFileSink
    if not args.avatar:
        print('error: --avatar IMAGE is required in headless mode', file=sys.stderr)
        return EXIT_USAGE
    if args.detect_every < 1:
        print(f'error: --detect-every must be 1 or more, got {args.detect_every}', file=sys.stderr)
        return EXIT_USAGE
    is_file = False
    try:
        options = EngineOptions(source=args.input, config=args.config or DEFAULT_CONFIG, checkpoint=args.checkpoint,
                                backend=args.backend, device=args.device, dtype=args.dtype,
                                channels_last=args.channels_last, loop_file=args.loop, realtime=args.realtime,
                                detect_every=args.detect_every, detect_async=not args.detect_sync,
                                capture_size=args.camera_size)
        settings = EngineSettings(relative=not args.absolute, mirror_preview=False, auto_calibrate=args.auto_calibrate,
                                  kp_smoothing=args.kp_smoothing)
        engine = Engine(options, settings)
        is_file = engine.source.kind == 'file'
        avatar = engine.set_avatar(args.avatar, keep_full_image=args.keep_full_avatar)
    except (EngineError, SourceError, AvatarError, FileNotFoundError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    if avatar.warning:
        print(f'warning: {avatar.warning}', file=sys.stderr)
    sink = None
    if args.output:
        try:
            fps = _source_fps(args.input) if is_file else 30.0
            sink = VideoFileSink(args.output, fps=fps)
        except (FileNotFoundError, ValueError) as exc:
            print(f'error: {exc}', file=sys.stderr)
            return EXIT_USAGE
        engine.add_sink(sink)
    if args.virtual_camera:
        w, h = args.vcam_size
        status = engine.start_virtual_camera(w, h, args.vcam_fps, args.vcam_device)
        print(f'virtual camera: {status.state}: {status.message}', file=sys.stderr)
    calibrate_at = max(0.0, args.calibrate_at)
    if calibrate_at == 0:
        engine.calibrate()
    state = {'calibrated': calibrate_at == 0, 't0': None}
    fps_for_time = _source_fps(args.input) if is_file and not args.realtime else None

    def on_frame(result) -> None:
        if state['t0'] is None:
            state['t0'] = result.timestamp
        if not state['calibrated']:
            elapsed = result.index / fps_for_time if fps_for_time else result.timestamp - state['t0']
            if elapsed >= calibrate_at:
                engine.calibrate()
                state['calibrated'] = True

    engine.add_listener(on_frame)
    t_start = time.perf_counter()
    try:
        engine.start()
    except EngineError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    code = 0
    try:
        code = _wait(engine, args, is_file, t_start)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
    finally:
        engine.stop()
    wall = time.perf_counter() - t_start
    print(format_summary(engine.stats(), wall))
    if sink is not None:
        print(f'output:     {args.output} ({sink.frames_written} frames)')
    return code


def _source_fps(path: str) -> float:
    from fomm_model.video_io import video_fps
    try:
        return float(video_fps(path)) or 30.0
    except Exception:  # noqa: BLE001 - unknown fps: the usual webcam rate
        return 30.0


def _wait(engine: Engine, args, is_file: bool, t_start: float) -> int:
    """Block until the file ends, --max-frames/--duration is reached, or the camera never opens."""
    opened = False
    while True:
        st = engine.stats()
        if st.frames_in > 0:
            opened = True
        if not opened and time.perf_counter() - t_start > 15 and st.camera_state in ('reconnecting', 'opening'):
            from .cameras import list_cameras
            cams = ', '.join(f'{c.index}: "{c.name}"' for c in list_cameras()) or 'none found'
            print(f'error: could not open {args.input}: {st.camera_message} (cameras: {cams})', file=sys.stderr)
            return EXIT_USAGE
        if args.max_frames is not None and st.frames_out >= args.max_frames:
            return 0
        if args.duration is not None and time.perf_counter() - t_start >= args.duration:
            return 0
        if is_file and engine.wait_until_finished(0.05):
            return 0
        if not engine.running:
            return 1
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='main.py --headless', description=__doc__)
    add_arguments(p)
    p.add_argument('-v', '--verbose', action='store_true')
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    return run(args)
