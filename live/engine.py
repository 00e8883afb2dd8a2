"""The live engine: capture thread -> processing thread (crop, model, outputs), with the public API the GUI and
the headless CLI use. Heavy set-up (checkpoint, backend selection and check, face detector) happens once, on
``start()`` or on the first ``set_avatar()``, whichever comes first.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .avatar import AvatarInfo, load_avatar
from .cameras import SourceSpec, resolve_source
from .capture import Capture, reader_factory
from .pipeline import EngineSettings, FrameResult, Pipeline
from .torch_thread import run_on_torch_thread
from .virtual_camera import VirtualCamera, VirtualCameraStatus, VirtualCameraUnavailable

log = logging.getLogger(__name__)

__all__ = ['Engine', 'EngineOptions', 'EngineSettings', 'EngineStats', 'FrameResult', 'StageStats', 'EngineError',
           'AvatarInfo', 'VirtualCameraStatus']

STAGES = ('capture', 'crop', 'model', 'output', 'total')


class EngineError(RuntimeError):
    """The engine cannot start (model, config, backend); the message says what to do."""


@dataclass
class EngineOptions:
    """Fixed at construction."""
    source: str | int = 0
    config: str = 'face-128'
    checkpoint: str | None = None  # None -> default model
    backend: str = 'auto'
    device: str = 'cpu'
    dtype: str = 'float32'
    channels_last: bool = False
    loop_file: bool = True
    realtime: bool = True
    # additions (defaults keep the documented behaviour)
    capture_size: tuple[int, int] | None = None   # camera resolution to ask for; None: see camera_request()
    capture_fps: float = 30.0
    detect_every: int = 3                         # face detection every N frames (10 Hz from a 30 fps camera)
    detect_async: bool = True                     # on its own thread, between frames (see live/detection_worker)
    verify_backend: bool = True                   # compare with eager float32 at start-up


@dataclass
class StageStats:
    mean_ms: float = 0.0
    p95_ms: float = 0.0


@dataclass
class EngineStats:
    fps: float = 0.0
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    stages: dict[str, StageStats] = field(default_factory=dict)   # capture, crop, model, output, total (latency)
    backend: str = ''
    backend_reason: str = ''
    device: str = ''
    dtype: str = ''
    camera_state: str = 'stopped'     # opening | running | reconnecting | ended | stopped
    camera_message: str = ''
    camera_resolution: tuple[int, int] | None = None
    camera_fps: float | None = None   # the source's nominal fps
    camera_measured_fps: float = 0.0
    face_detector: str = ''
    calibrated: bool = False
    running: bool = False
    notices: list[str] = field(default_factory=list)


CPU_CAMERA_SIZE = (640, 480)
GPU_CAMERA_SIZE = (1280, 720)


def camera_request(options: EngineOptions) -> tuple[tuple[int, int], str]:
    """The resolution to ask a camera for, and why.

    The face crop is only 128-256 px, so 640x480 holds all the detail the model uses. A 1280x720 MJPEG frame
    took ~4.5 ms of CPU to decode here (640x480: ~0.6 ms): with the model on the same 2 cores that is a tenth
    of the frame budget, so CPU runs ask for 640x480; GPU runs, whose CPU is otherwise idle, for 1280x720."""
    if options.capture_size is not None:
        return tuple(options.capture_size), 'as asked'
    if str(options.device).startswith('cpu'):
        return CPU_CAMERA_SIZE, ('the model runs on the CPU, where decoding 720p camera frames would take time from '
                                 'it; --camera-size 1280x720 to change')
    return GPU_CAMERA_SIZE, 'the model runs on a GPU; --camera-size to change'


def _resolve_checkpoint(options: EngineOptions) -> Path:
    if options.checkpoint is not None:
        path = Path(options.checkpoint).expanduser()
        if not path.is_file():
            raise EngineError(f'checkpoint not found: {path}')
        return path
    from fomm_model.defaults import default_checkpoint_path
    path = default_checkpoint_path()
    if not path.is_file():
        raise EngineError(f'the default model {path} does not exist yet (it is trained separately, see '
                          f'assets/models/MODEL_CARD.md); pass --checkpoint FILE --config NAME to use another model')
    return path


class Engine:
    def __init__(self, options: EngineOptions, settings: EngineSettings | None = None):
        from fomm_model.config import ConfigError, frame_size, load_config
        self.options = options
        self._settings = dataclasses.replace(settings) if settings is not None else EngineSettings()
        try:
            self.config = load_config(options.config)
        except ConfigError as exc:
            raise EngineError(str(exc)) from exc
        self.size = frame_size(self.config)
        self.checkpoint = _resolve_checkpoint(options)
        self._spec: SourceSpec = resolve_source(options.source)
        self._init_lock = threading.Lock()
        self._model_lock = threading.RLock()
        self._pipeline: Pipeline | None = None
        self._backend_reason = ''
        self._detector_state = 'not started'
        self._avatar_detector = None
        self._capture: Capture | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._listeners: list[Callable[[FrameResult], None]] = []
        self._sinks: list = []
        self._vcam: VirtualCamera | None = None
        self._vcam_status = VirtualCameraStatus('off')
        self._latest: FrameResult | None = None
        self._notices: list[str] = []
        self._times: dict[str, deque] = {k: deque(maxlen=600) for k in STAGES}
        self._out_times: deque = deque(maxlen=60)
        self._frames_out = 0
        self._frames_in_before = 0
        self._dropped_before = 0
        self._errors = 0

    # -- set-up ----------------------------------------------------------------------------------
    def _notice(self, text: str) -> None:
        if text not in self._notices:
            self._notices.append(text)
            log.warning('%s', text)

    def _make_detector(self):
        from fomm_model.face_detection import FaceDetector, FaceDetectorUnavailable
        try:
            detector = FaceDetector(min_confidence=0.5)
        except FaceDetectorUnavailable as exc:
            self._detector_state = f'unavailable: {exc}'
            self._notice(f'face detection is off ({exc}); using a fixed centre crop - fetch the model with: '
                         f'python -m fomm_model.face_detection --fetch')
            return None
        every = 'every frame' if self.options.detect_every == 1 else f'every {self.options.detect_every} frames'
        where = 'on its own thread' if self.options.detect_async else 'on the engine thread'
        self._detector_state = f'mediapipe BlazeFace ({every}, {where})'
        # close it before interpreter shutdown: mediapipe's own __del__ then fails (or hangs) on torn-down globals
        weakref.finalize(self, detector.close)
        return detector

    def _ensure_ready(self) -> Pipeline:
        with self._init_lock:
            if self._pipeline is None:
                self._pipeline = run_on_torch_thread(self._build_pipeline)
            return self._pipeline

    def _build_pipeline(self) -> Pipeline:
        """Load the model, create and verify the backend (on the torch thread)."""
        from fomm_model.checkpoint import CheckpointError, load_checkpoint

        from .backends import BackendError, create_backend
        from .backends.cache import file_hash
        from .cropper import FaceCropper
        try:
            models = load_checkpoint(self.config, self.checkpoint, device='cpu', with_discriminator=False)
        except CheckpointError as exc:
            raise EngineError(str(exc)) from exc
        o = self.options
        try:
            selection = create_backend(o.backend, models, self.size, file_hash(self.checkpoint), o.device,
                                       o.dtype, o.channels_last, verify=o.verify_backend)
        except BackendError as exc:
            raise EngineError(str(exc)) from exc
        self._backend_reason = selection.reason
        cropper = FaceCropper(self.size, self._make_detector(), detect_every=o.detect_every,
                              asynchronous=o.detect_async)
        weakref.finalize(self, cropper.close)  # registered after the detector's: stops the thread before it closes
        pipeline = Pipeline(selection.backend, cropper, self.size)
        log.info('engine ready: %s, %s', selection.backend.describe(), self._detector_state)
        return pipeline

    def _new_capture(self) -> Capture:
        o = self.options
        (width, height), why = camera_request(o)
        if self._spec.kind == 'camera':
            log.info('asking camera %s for %dx%d (%s)', self._spec.label, width, height, why)
        factory = reader_factory(self._spec, loop=o.loop_file, width=width, height=height, fps=o.capture_fps)
        return Capture(factory, realtime=o.realtime, name=self._spec.label)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._ensure_ready()
        self._stop.clear()
        self._finished.clear()
        self._retire_capture()
        self._capture = self._new_capture()
        self._capture.start()
        self._thread = threading.Thread(target=self._run, name='fomm-engine', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._capture is not None:
            self._capture.stop()  # kept (stopped) so stats still show its counts and resolution
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - one bad sink must not keep others open
                log.exception('closing %r failed', sink)
        self.stop_virtual_camera()

    def wait_until_finished(self, timeout: float | None = None) -> bool:
        """For non-looping file sources: True once the last frame has been processed."""
        return self._finished.wait(timeout)

    @property
    def source(self) -> SourceSpec:
        """The current source (kind 'camera' | 'file' | 'stream', label)."""
        return self._spec

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- controls --------------------------------------------------------------------------------
    def set_avatar(self, image: np.ndarray | str | Path, keep_full_image: bool = False) -> AvatarInfo:
        """Load, crop and prepare an avatar; on error the previous avatar stays."""
        pipeline = self._ensure_ready()
        if self._avatar_detector is None and pipeline.cropper.detector is not None:
            from fomm_model.face_detection import FaceDetector
            self._avatar_detector = FaceDetector(min_confidence=0.3)  # own instance: the engine thread uses the other
            weakref.finalize(self, self._avatar_detector.close)
        info = load_avatar(image, self.size, self._avatar_detector, keep_full_image)
        with self._model_lock:
            run_on_torch_thread(pipeline.set_avatar, info)
        if info.warning:
            self._notice(f'avatar {info.name}: {info.warning}'.replace('avatar : ', 'avatar: '))
        return info

    def calibrate(self) -> None:
        """The next processed frame becomes the anchor (the pose that maps onto the avatar's pose)."""
        self._ensure_ready().request_calibration()

    def reset_calibration(self) -> None:
        with self._model_lock:
            self._ensure_ready().reset_calibration()

    @property
    def settings(self) -> EngineSettings:
        return dataclasses.replace(self._settings)

    def update_settings(self, **changes) -> None:
        names = {f.name for f in dataclasses.fields(EngineSettings)}
        unknown = set(changes) - names
        if unknown:
            raise TypeError(f'unknown setting(s) {", ".join(sorted(unknown))}; known: {", ".join(sorted(names))}')
        new = dataclasses.replace(self._settings, **changes)
        if new.crop_zoom <= 0:
            raise ValueError('crop_zoom must be > 0')
        if not 0 <= new.kp_smoothing <= 1 or not 0 <= new.overlay_alpha <= 1:
            raise ValueError('kp_smoothing and overlay_alpha must be in [0, 1]')
        if new.fps_cap is not None and new.fps_cap <= 0:
            raise ValueError('fps_cap must be > 0 or None')
        new.crop_offset = (float(new.crop_offset[0]), float(new.crop_offset[1]))
        self._settings = new  # one reference swap: the engine thread reads a consistent snapshot per frame

    def set_source(self, source: str | int) -> None:
        """Switch camera/file live; calibration is reset (the anchor pose belonged to the old view)."""
        spec = resolve_source(source)
        self._spec = spec
        if self._pipeline is not None:
            with self._model_lock:
                self._pipeline.cropper.reset()
                self._pipeline.reset_calibration()
        if self.running:
            old = self._capture
            self._capture = self._new_capture()
            self._capture.start()
            if old is not None:
                old.stop()
                self._frames_in_before += old.frames_read
                self._dropped_before += old.dropped

    def _retire_capture(self) -> None:
        old, self._capture = self._capture, None
        if old is not None:
            old.stop()
            self._frames_in_before += old.frames_read
            self._dropped_before += old.dropped

    def add_listener(self, callback: Callable[[FrameResult], None]) -> None:
        self._listeners.append(callback)

    def add_sink(self, sink) -> None:
        self._sinks.append(sink)

    def latest(self) -> FrameResult | None:
        return self._latest

    # -- virtual camera --------------------------------------------------------------------------
    def start_virtual_camera(self, width: int = 1280, height: int = 720, fps: float = 30, device: str | None = None,
                             mirror: bool | None = None, backend: str | None = None) -> VirtualCameraStatus:
        """Open the virtual camera; never raises for a missing device (status 'unavailable' + the fix).

        ``mirror`` None follows the ``mirror_output`` setting."""
        self.stop_virtual_camera()
        try:
            cam = VirtualCamera(width, height, fps, device, mirror=bool(mirror), backend=backend)
        except VirtualCameraUnavailable as exc:
            self._vcam_status = VirtualCameraStatus('unavailable', str(exc))
            log.warning('virtual camera unavailable: %s', exc)
            return self._vcam_status
        cam.follow_setting = mirror is None
        self._vcam = cam
        self._vcam_status = cam.status()
        return self._vcam_status

    def stop_virtual_camera(self) -> None:
        cam, self._vcam = self._vcam, None
        if cam is not None:
            cam.close()
            self._vcam_status = VirtualCameraStatus('off', f'stopped after {cam.frames_sent} frames')

    def virtual_camera_status(self) -> VirtualCameraStatus:
        return self._vcam.status() if self._vcam is not None else self._vcam_status

    # -- the loop --------------------------------------------------------------------------------
    def _run(self) -> None:
        pipeline = self._pipeline
        while not self._stop.is_set():
            cap = self._capture
            frame = cap.read(timeout=0.1) if cap is not None else None
            if frame is None:
                if cap is not None and cap.finished and cap.state == 'ended':
                    self._finished.set()
                    self._stop.wait(0.05)
                continue
            s = self._settings
            started = time.perf_counter()
            try:
                with self._model_lock:
                    result = run_on_torch_thread(pipeline.process, frame.image, frame.index, frame.timestamp, s)
                t0 = time.perf_counter()
                self._send_outputs(result, s)
            except Exception as exc:  # noqa: BLE001 - keep running; the error is reported, not swallowed
                self._errors += 1
                log.exception('frame %d failed', frame.index)
                self._notice(f'processing error: {exc}')
                self._stop.wait(0.05)
                continue
            t1 = time.perf_counter()
            tm = result.timings_ms
            tm['capture'] = frame.read_ms
            tm['output'] = tm.pop('present', 0.0) + (t1 - t0) * 1000
            tm['total'] = (t1 - frame.timestamp) * 1000
            for k in STAGES:
                self._times[k].append(tm.get(k, 0.0))
            self._out_times.append(t1)
            self._frames_out += 1
            self._latest = result
            for callback in list(self._listeners):
                try:
                    callback(result)
                except Exception:  # noqa: BLE001
                    log.exception('listener %r failed', callback)
            if s.fps_cap:
                self._stop.wait(max(0.0, started + 1.0 / s.fps_cap - time.perf_counter()))

    def _send_outputs(self, result: FrameResult, s: EngineSettings) -> None:
        cam = self._vcam
        if cam is not None:
            if cam.follow_setting:
                cam.mirror = s.mirror_output
            try:
                cam.send(result.output_unmirrored)
            except Exception as exc:  # noqa: BLE001 - e.g. the device vanished: turn it off and say why
                self._vcam = None
                self._vcam_status = VirtualCameraStatus('unavailable', f'virtual camera failed: {exc}')
                log.error('virtual camera failed: %s', exc)
        for sink in self._sinks:
            sink.write(result.output)

    # -- stats -----------------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        stages = {}
        for k, values in self._times.items():
            arr = np.fromiter(values, float) if values else np.zeros(1)
            stages[k] = StageStats(float(arr.mean()), float(np.percentile(arr, 95)))
        times = list(self._out_times)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        cap = self._capture
        p = self._pipeline
        b = p.backend if p is not None else None
        return EngineStats(
            fps=fps, frames_in=self._frames_in_before + (cap.frames_read if cap else 0), frames_out=self._frames_out,
            dropped=self._dropped_before + (cap.dropped if cap else 0), stages=stages,
            backend=b.describe() if b else '', backend_reason=self._backend_reason, device=b.device if b else '',
            dtype=b.dtype if b else '', camera_state=cap.state if cap else 'stopped',
            camera_message=cap.message if cap else '', camera_resolution=cap.size if cap else None,
            camera_fps=cap.nominal_fps if cap else None, camera_measured_fps=cap.measured_fps if cap else 0.0,
            face_detector=self._detector_state, calibrated=bool(p and p.calibrated), running=self.running,
            notices=list(self._notices))
