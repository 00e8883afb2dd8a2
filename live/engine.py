"""The live engine: one thread that runs the frame loop and owns all of its state.

Every control call (avatar, calibration, source, settings, model, virtual camera, outputs) is a command put on
the engine's queue and carried out on the engine thread between two frames, so nothing the loop uses is ever
changed under it and no lock guards the model. Calls made on the engine thread itself (from a frame listener)
run at once. The engine thread is also the process's one PyTorch thread: model loading, avatar preparation
and every frame run there (a second thread running torch gets a second OpenMP team, which made the model 2x
slower on these 2-core machines).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .avatar import AvatarInfo, load_avatar
from .cameras import SourceSpec, resolve_source
from .capture import Capture, reader_factory
from .model_threads import ModelThreads
from .options import CaptureOptions, ModelOptions, Settings, replace_checked
from .pipeline import FrameResult, Pipeline
from .virtual_camera import VirtualCamera, VirtualCameraStatus, VirtualCameraUnavailable

log = logging.getLogger(__name__)
T = TypeVar('T')

STAGES = ('capture', 'crop', 'model', 'output', 'total')
CPU_CAMERA_SIZE = (640, 480)
GPU_CAMERA_SIZE = (1280, 720)


class EngineError(RuntimeError):
    """The engine cannot do what was asked (model, config, backend, output); the message says what to do."""


@dataclass
class StageStats:
    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0


@dataclass
class EngineStats:
    state: str = 'idle'               # idle | loading | ready | running | failed | closed
    fps: float = 0.0
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    stages: dict[str, StageStats] = field(default_factory=dict)   # capture, crop, model, output, total (latency)
    backend: str = ''
    backend_reason: str = ''
    threads: str = ''                 # the model's CPU threads, fixed or adaptive, and why (live.model_threads)
    mouth_gain: float | None = None   # the lip motion's gain in use; None: the model names no lip keypoints
    camera_state: str = 'stopped'     # opening | running | reconnecting | ended | stopped | failed
    camera_message: str = ''
    camera_resolution: tuple[int, int] | None = None
    camera_fps: float | None = None   # the source's nominal fps
    camera_measured_fps: float = 0.0
    face_detector: str = ''
    face_found: bool = False
    calibrated: bool = False
    status: str = ''                  # the newest frame's status ('no face', ...)
    notices: list[str] = field(default_factory=list)
    error: str = ''                   # why the engine failed or stopped an output
    remote: str = ''                  # --remote: the link's state, round trip, server model time and device
    remote_state: str = ''            # connected | reconnecting | refused | closed ('' when the model is local)


def camera_request(capture: CaptureOptions, device_type: str) -> tuple[tuple[int, int], str]:
    """The resolution to ask a camera for, and why.

    The face crop is only 128-256 px, so 640x480 holds all the detail the model uses. A 1280x720 MJPEG frame
    took ~4.5 ms of CPU to decode here (640x480: ~0.6 ms): with the model on the same 2 cores that is a tenth
    of the frame budget, so CPU runs ask for 640x480; GPU runs, whose CPU is otherwise idle, for 1280x720."""
    if capture.camera_size is not None:
        return tuple(capture.camera_size), 'as asked'
    if device_type == 'cpu':
        return CPU_CAMERA_SIZE, ('the model runs on the CPU, where decoding 720p camera frames would take time from '
                                 'it; --camera-size 1280x720 to change')
    return GPU_CAMERA_SIZE, 'the model runs on a GPU; --camera-size to change'


class Engine:
    """Capture -> pipeline -> outputs on one engine thread; thread-safe control methods.

    ``realtime`` None paces file sources (a window shows them like a camera); headless runs pass False to
    process every frame of a file."""

    def __init__(self, model: ModelOptions | None = None, capture: CaptureOptions | None = None,
                 settings: Settings | None = None):
        self.model_options = model or ModelOptions()
        self.capture_options = capture or CaptureOptions()
        self._settings = settings or Settings()
        self._spec: SourceSpec = resolve_source(self.capture_options.input)   # SourceError: bad --input
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._finished = threading.Event()
        self._stats_lock = threading.Lock()
        self._state = 'idle'
        self._error = ''
        self._pipeline: Pipeline | None = None
        self._backend = self._backend_reason = ''
        self._device_type = 'cpu'
        self._threads = ModelThreads()
        self._detector_state = 'not started'
        self._avatar_detector: Any = None
        self._capture: Capture | None = None
        self._last_capture: Capture | None = None   # a stopped one, whose counts the stats still show
        self._listeners: list[Callable[[FrameResult], None]] = []
        self._sinks: list[Any] = []
        self._vcam: VirtualCamera | None = None
        self._vcam_status = VirtualCameraStatus('off')
        self._latest: FrameResult | None = None
        self._notices: list[str] = []
        self._times: dict[str, deque] = {k: deque(maxlen=600) for k in STAGES}
        self._out_times: deque = deque(maxlen=60)
        self._frames_out = self._frames_in_before = self._dropped_before = 0
        self._next_due = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name='fomm-engine', daemon=True)
        self._thread.start()
        weakref.finalize(self, Engine._shutdown, self._inbox, self._wake)

    # == commands ===================================================================================
    def submit(self, fn: Callable[..., T], *args: Any) -> Future:
        """Run ``fn(*args)`` on the engine thread between two frames; the Future holds its result."""
        future: Future = Future()
        if threading.current_thread() is self._thread:
            self._execute(future, fn, args)
        elif self._closed:
            future.set_exception(EngineError('the engine is closed'))
        else:
            self._inbox.put((future, fn, args))
            self._wake.set()
        return future

    def _call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        return self.submit(fn, *args).result(timeout)

    @staticmethod
    def _execute(future: Future, fn: Callable, args: tuple) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the Future
            future.set_exception(exc)

    @staticmethod
    def _shutdown(inbox: queue.SimpleQueue, wake: threading.Event) -> None:
        inbox.put(None)
        wake.set()

    # == public control ============================================================================
    def load(self) -> Future:
        """Load the model, pick and check the backend, start face detection (once); EngineError on failure."""
        return self.submit(self._ensure_loaded)

    def start(self) -> None:
        """Load if needed and open the source; frames flow to listeners, sinks and the virtual camera."""
        self._call(self._start)

    def start_async(self) -> Future:
        return self.submit(self._start)

    def stop(self) -> None:
        """Close the source, the sinks and the virtual camera; the model stays loaded."""
        if not self._closed:
            self._call(self._stop)

    def close(self, timeout: float = 10.0) -> None:
        """Stop and end the engine thread (idempotent)."""
        if self._closed:
            return
        try:
            self._call(self._stop, timeout=timeout)
        finally:
            self._closed = True
            self._shutdown(self._inbox, self._wake)
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout)

    def set_avatar(self, image: np.ndarray | str | Path, keep_full_image: bool = False) -> AvatarInfo:
        """Load, crop and prepare an avatar; on error the previous avatar stays."""
        return self._call(self._set_avatar, image, keep_full_image)

    def calibrate(self) -> None:
        """The next frame with a face becomes the anchor (the pose that maps onto the avatar's pose)."""
        self.submit(lambda: self._loaded().request_calibration())

    def reset_calibration(self) -> None:
        self.submit(lambda: self._loaded().reset_calibration())

    @property
    def settings(self) -> Settings:
        return self._settings

    def update_settings(self, **changes: Any) -> Settings:
        """Check the changes here (ValueError/TypeError naming the setting), apply them between frames."""
        new = replace_checked(self._settings, **changes)
        self._settings = new   # read once per frame by the loop: one reference, one consistent snapshot
        return new

    def set_source(self, source: str | int) -> None:
        """Switch camera or file live; calibration is reset (the anchor pose belonged to the old view)."""
        spec = resolve_source(source)
        self._call(self._set_source, spec)

    def set_model(self, model: ModelOptions) -> None:
        """Rebuild the model with other options (backend, device, precision, checkpoint); the source, avatar and
        virtual camera stay."""
        self._call(self._set_model, model)

    def add_listener(self, callback: Callable[[FrameResult], None]) -> None:
        """``callback(FrameResult)`` is called on the engine thread after each frame: it must not block."""
        self.submit(self._listeners.append, callback)

    def remove_listener(self, callback: Callable[[FrameResult], None]) -> None:
        self.submit(self._listeners.remove, callback)

    def add_sink(self, sink: Any) -> None:
        """An output with ``write(frame)`` and ``close()``; a write that fails stops the engine (see stats)."""
        self.submit(self._sinks.append, sink)

    def start_virtual_camera(self, width: int = 1280, height: int = 720, fps: float = 30,
                             device: str | None = None, mirror: bool | None = None,
                             backend: str | None = None) -> VirtualCameraStatus:
        """Open the virtual camera; never raises for a missing device (status 'unavailable' with the fix).
        ``mirror`` None follows the ``mirror_output`` setting."""
        return self._call(self._start_vcam, width, height, fps, device, mirror, backend)

    def stop_virtual_camera(self) -> None:
        self._call(self._stop_vcam)

    def virtual_camera_status(self) -> VirtualCameraStatus:
        cam = self._vcam
        return cam.status() if cam is not None else self._vcam_status

    def latest(self) -> FrameResult | None:
        return self._latest

    def wait_until_finished(self, timeout: float | None = None) -> bool:
        """True once a non-looping file has ended and its last frame was processed, or a fatal error stopped
        the engine."""
        return self._finished.wait(timeout)

    @property
    def pipeline(self) -> Pipeline | None:
        """The per-frame logic and its animator: for benchmarks and tests, touched only inside :meth:`submit`."""
        return self._pipeline

    @property
    def source(self) -> SourceSpec:
        return self._spec

    @property
    def state(self) -> str:
        return self._state

    @property
    def running(self) -> bool:
        return self._state == 'running'

    # == on the engine thread =======================================================================
    def _loop(self) -> None:
        self._init_thread()
        while True:
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._stop()
                    self._close_detection()
                    self._state = 'closed'
                    return
                self._execute(*item)
            if self._vcam is not None and self._vcam.next_due() is not None:
                self._vcam_do(lambda cam: cam.flush())            # frames held for the output delay
            now = time.perf_counter()
            delay = self._next_due - now
            frame = self._capture.read(0) if self._capture is not None and delay <= 0 else None
            if frame is None:
                if self._capture is not None and self._capture.finished:
                    if self._capture.state == 'failed' and self._state != 'failed':
                        self._fail(self._capture.message)
                        self._state = 'failed'
                    self._finished.set()
                wait = delay if delay > 0 else 0.1
                held = self._vcam.next_due() if self._vcam is not None else None
                self._wake.wait(max(0.0, min(wait, held - now)) if held is not None else wait)
                self._wake.clear()
                continue
            self._process(frame)

    def _close_detection(self) -> None:
        """The detection thread first (it may be mid-detection), then the detectors: no detection may run into a
        closed detector, or at interpreter exit into mediapipe's stopped executor (a traceback on a normal quit)."""
        if self._pipeline is not None:
            _close_cropper(self._pipeline.cropper)
        if self._avatar_detector is not None:
            self._avatar_detector.close()

    def _init_thread(self) -> None:
        import torch
        threads = self.model_options.threads or torch.get_num_threads()
        torch.set_num_threads(threads)  # OpenMP's thread count is a per-thread setting

    def _notice(self, text: str) -> None:
        if text not in self._notices:
            self._notices.append(text)
            log.warning('%s', text)

    def _loaded(self) -> Pipeline:
        if self._pipeline is None:
            raise EngineError('the model is not loaded yet' if self._state != 'failed' else self._error)
        return self._pipeline

    def _ensure_loaded(self) -> Pipeline:
        if self._pipeline is None:
            self._state = 'loading'
            try:
                self._pipeline = self._build_pipeline(self.model_options)
            except EngineError as exc:
                self._state, self._error = 'failed', str(exc)
                raise
            model = self.model_options
            self._threads.start(self._pipeline.animator.runner, model.threads,
                                adaptive=not getattr(model, 'remote', None))
            self._state = 'ready'
        return self._pipeline

    def _build_pipeline(self, model: ModelOptions) -> Pipeline:
        from fomm_model import Animator
        from fomm_model.inference import RunnerError

        from .cropper import FaceCropper
        from .model_files import load_model
        try:
            if model.remote:   # the model runs on a server (main.py serve); never a silent local fallback
                from .remote.connect import remote_animator
                animator = remote_animator(model)
            else:
                models, key = load_model(model)
                animator = Animator(models, backend=model.backend, device=model.device, dtype=model.dtype,
                                    channels_last=model.channels_last or None, model_key=key)
        except RunnerError as exc:
            raise EngineError(str(exc)) from exc
        self._backend, self._backend_reason = animator.describe(), animator.selection_reason
        self._device_type = animator.runner.device.type
        if animator.mouth_keypoints is None and self._settings.mouth_gain not in (None, 1.0):
            self._notice('the mouth gain has no effect: this model names no lip keypoints; the lips move as yours do')
        detector = self._make_detector()
        c = self.capture_options
        cropper = FaceCropper(animator.size, detector, detect_every=c.detect_every, asynchronous=not c.detect_sync)
        weakref.finalize(self, cropper.close)  # registered after the detector's: stops the thread before it closes
        log.info('engine ready: %s, %s', self._backend, self._detector_state)
        return Pipeline(animator, cropper)

    def _make_detector(self) -> Any:
        from fomm_model.face_detection import FaceDetector, FaceDetectorUnavailable
        try:
            detector = FaceDetector(min_confidence=0.5)
        except FaceDetectorUnavailable as exc:
            self._detector_state = f'unavailable: {exc}'
            self._notice(f'face detection is off ({exc}); using a fixed centre crop - fetch the model with: '
                         f'python -m fomm_model.face_detection --fetch')
            return None
        every = self.capture_options.detect_every
        where = 'on the engine thread' if self.capture_options.detect_sync else 'on its own thread'
        self._detector_state = f'mediapipe BlazeFace ({"every frame" if every == 1 else f"every {every} frames"}, ' \
                               f'{where})'
        weakref.finalize(self, detector.close)  # before interpreter shutdown: mediapipe's own __del__ fails then
        return detector

    def _set_model(self, model: ModelOptions) -> None:
        old = self._pipeline
        changed_model = old is None or (model.config, model.checkpoint) != (self.model_options.config,
                                                                          self.model_options.checkpoint)
        self._pipeline = None
        previous, self.model_options = self.model_options, model
        try:
            pipeline = self._ensure_loaded()
        except EngineError:
            self.model_options, self._pipeline = previous, old   # keep running what worked
            self._state = 'running' if self._capture is not None else 'ready'
            raise
        if old is not None:
            _close_cropper(old.cropper)
            if old.avatar is not None:
                pipeline.set_avatar(old.avatar)
            if not changed_model and old.calibrated:
                pipeline.set_anchor(old.animator.kp_anchor)
            old.animator.close()
        if self._capture is not None:
            self._state = 'running'

    def _set_avatar(self, image: Any, keep_full_image: bool) -> AvatarInfo:
        pipeline = self._ensure_loaded()
        if self._avatar_detector is None and pipeline.cropper.detector is not None:
            from fomm_model.face_detection import AVATAR_MIN_CONFIDENCE, FaceDetector
            # own instance: the cropper's runs apart
            self._avatar_detector = FaceDetector(min_confidence=AVATAR_MIN_CONFIDENCE)
            weakref.finalize(self, self._avatar_detector.close)
        info = load_avatar(image, pipeline.animator.size, self._avatar_detector, keep_full_image)
        pipeline.set_avatar(info)
        return info

    def _new_capture(self) -> Capture:
        c = self.capture_options
        (width, height), why = camera_request(c, self._device_type)
        if self._spec.kind == 'camera':
            log.info('asking camera %s for %dx%d (%s)', self._spec.label, width, height, why)
        factory = reader_factory(self._spec, loop=c.loop, width=width, height=height, fps=30.0)
        realtime = (True if c.realtime is None else c.realtime) or self._spec.live
        # a file processed offline is decoded on this thread, in turn with the model (see live.capture)
        return Capture(factory, realtime=realtime, name=self._spec.label, notify=self._wake.set, inline=not realtime)

    def _start(self) -> None:
        self._ensure_loaded()
        if self._capture is None:
            self._finished.clear()
            self._capture = self._new_capture()
            self._capture.start()
        self._state = 'running'

    def _retire_capture(self) -> None:
        old, self._capture = self._capture, None
        if old is not None:
            old.stop()
            with self._stats_lock:
                self._frames_in_before += old.frames_read
                self._dropped_before += old.dropped
            self._last_capture = old

    def _stop(self) -> None:
        self._retire_capture()
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - one bad sink must not keep others open
                log.exception('closing %r failed', sink)
                self._fail(f'could not finish {getattr(sink, "path", sink)}: {exc}')
        self._sinks.clear()
        self._stop_vcam()
        if self._state == 'running':
            self._state = 'ready'

    def _set_source(self, spec: SourceSpec) -> None:
        self._spec = spec
        if self._pipeline is not None:
            self._pipeline.cropper.reset()
            self._pipeline.reset_calibration()
        if self._capture is not None:
            self._retire_capture()
            self._capture = self._new_capture()
            self._capture.start()

    def _start_vcam(self, width, height, fps, device, mirror, backend) -> VirtualCameraStatus:
        self._stop_vcam()
        try:
            cam = VirtualCamera(width, height, fps, device, mirror=bool(mirror), backend=backend)
        except VirtualCameraUnavailable as exc:
            self._vcam_status = VirtualCameraStatus('unavailable', str(exc))
            log.warning('virtual camera unavailable: %s', exc)
            return self._vcam_status
        cam.follow_setting = mirror is None
        self._vcam = cam
        return cam.status()

    def _stop_vcam(self) -> None:
        cam, self._vcam = self._vcam, None
        if cam is not None:
            cam.close()
            self._vcam_status = VirtualCameraStatus('off', f'stopped after {cam.frames_sent} frames')

    def _fail(self, message: str) -> None:
        """Record why the engine stopped (stats.error, and a notice for the window); the caller reports it."""
        self._error = message
        if message not in self._notices:
            self._notices.append(message)
        log.info('%s', message)

    def _process(self, frame) -> None:
        s = self._settings
        started = time.perf_counter()
        try:
            result = self._loaded().process(frame.image, frame.index, frame.timestamp, s)
        except Exception as exc:  # noqa: BLE001 - keep running; the error is reported, not swallowed
            log.exception('frame %d failed', frame.index)
            self._notice(f'processing error: {exc}')
            self._next_due = time.perf_counter() + 0.05
            return
        if self._pipeline.avatar is not None and not s.passthrough:   # frames the model animated
            self._threads.record(result.timings_ms.get('model', 0.0))
        t0 = time.perf_counter()
        self._send_outputs(result, s)
        t1 = time.perf_counter()
        tm = result.timings_ms
        tm['capture'] = frame.read_ms
        tm['output'] = tm.pop('present', 0.0) + (t1 - t0) * 1000
        tm['total'] = (t1 - frame.timestamp) * 1000
        with self._stats_lock:
            for k in STAGES:
                self._times[k].append(tm.get(k, 0.0))
            self._out_times.append(t1)
            self._frames_out += 1
        self._latest = result
        for callback in self._listeners:
            try:
                callback(result)
            except Exception:  # noqa: BLE001
                log.exception('listener %r failed', callback)
        self._next_due = started + 1.0 / s.fps_cap if s.fps_cap else 0.0

    def _send_outputs(self, result: FrameResult, s: Settings) -> None:
        cam = self._vcam
        if cam is not None:
            if cam.follow_setting:
                cam.mirror = s.mirror_output
            due = result.timestamp + s.output_delay_ms / 1000 if s.output_delay_ms else None
            self._vcam_do(lambda c: c.send(result.output_unmirrored, due))
        for sink in list(self._sinks):
            try:
                sink.write(result.output)
            except Exception as exc:  # noqa: BLE001 - a file that cannot be written ends the run, loudly
                self._sinks.remove(sink)
                self._fail(f'writing {getattr(sink, "path", "the output")} failed: {exc}')
                self._retire_capture()
                self._state = 'failed'
                self._finished.set()

    def _vcam_do(self, action: Callable[[VirtualCamera], None]) -> None:
        """``action`` on the virtual camera; if it fails (e.g. the device vanished) turn it off and say why."""
        cam = self._vcam
        try:
            action(cam)
        except Exception as exc:  # noqa: BLE001 - reported in the status and the log, the engine runs on
            self._vcam = None
            cam.close()
            self._vcam_status = VirtualCameraStatus('unavailable', f'virtual camera failed: {exc}')
            log.error('virtual camera failed: %s', exc)

    # == stats ====================================================================================
    def reset_stats(self) -> None:
        """Forget the stage timings so far (benchmarks skip their warm-up frames)."""
        with self._stats_lock:
            for q in self._times.values():
                q.clear()
            self._out_times.clear()

    def stats(self) -> EngineStats:
        with self._stats_lock:
            times = {k: np.fromiter(v, float) if v else np.zeros(1) for k, v in self._times.items()}
            out_times = list(self._out_times)
            frames_out, frames_in_before, dropped_before = \
                self._frames_out, self._frames_in_before, self._dropped_before
        stages = {k: StageStats(float(a.mean()), *(float(v) for v in np.percentile(a, (50, 95, 99))))
                  for k, a in times.items()}
        fps = (len(out_times) - 1) / (out_times[-1] - out_times[0]) \
            if len(out_times) > 1 and out_times[-1] > out_times[0] else 0.0
        cap = self._capture or self._last_capture
        live = self._capture
        p = self._pipeline
        latest = self._latest
        return EngineStats(
            state=self._state, fps=fps, frames_in=frames_in_before + (live.frames_read if live else 0),
            frames_out=frames_out, dropped=dropped_before + (live.dropped if live else 0), stages=stages,
            backend=self._backend, backend_reason=self._backend_reason, threads=self._threads.text,
            mouth_gain=p.animator.mouth_gain if p and p.animator.mouth_keypoints is not None else None,
            camera_state=cap.state if cap else 'stopped', camera_message=cap.message if cap else '',
            camera_resolution=cap.size if cap else None, camera_fps=cap.nominal_fps if cap else None,
            camera_measured_fps=cap.measured_fps if cap else 0.0, face_detector=self._detector_state,
            face_found=bool(latest and latest.face_found), calibrated=bool(p and p.calibrated),
            status=latest.status if latest else '', notices=list(self._notices), error=self._error,
            **_link(p))


def _close_cropper(cropper: Any) -> None:
    """Its detection thread, then its detector (each pipeline has its own)."""
    cropper.close()
    if cropper.detector is not None:
        cropper.detector.close()


def _link(pipeline: Pipeline | None) -> dict[str, str]:
    """The remote runner's status for EngineStats (read from any thread: it only swaps references)."""
    status = getattr(pipeline.animator.runner, 'link_status', None) if pipeline is not None else None
    if status is None:
        return {}
    link = status()
    return {'remote': link.line(), 'remote_state': link.state}

