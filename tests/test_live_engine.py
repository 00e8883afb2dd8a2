"""The engine: one thread runs the frames and every control call as a command between two frames (real clips,
the bundled model, the real face detector; the virtual camera through an in-memory pyvirtualcam backend)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers import AVATAR, SHARED, bundled_num_kp

from live.engine import Engine, EngineError, camera_request
from live.options import CaptureOptions, ModelOptions, Settings

CLIP = SHARED / 'data' / 'faces' / 'test' / 'grid_lwbsza#grid_lipnet__lwbsza.mp4'   # 75 frames, 25 fps
OTHER = SHARED / 'data' / 'faces' / 'test' / 'grid_swiz3n#grid_lipnet__swiz3n.mp4'
TORCH = ModelOptions(backend='torch', device='cpu')


def make_engine(settings: Settings | None = None, **capture) -> Engine:
    """The clip looped and paced like a camera, unless ``capture`` says otherwise."""
    capture = {'loop': True, 'realtime': True, **capture}
    return Engine(TORCH, CaptureOptions(input=str(CLIP), **capture),
                  settings or Settings(mirror_preview=False, paste_back=False))


class Frames:
    """A listener collecting results; ``wait(n)`` blocks until n more arrive."""

    def __init__(self):
        self.results, self.threads = [], set()
        self._cond = threading.Condition()

    def __call__(self, result):
        with self._cond:
            self.results.append(result)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 120) -> None:
        with self._cond:
            target = len(self.results) + n
            assert self._cond.wait_for(lambda: len(self.results) >= target, timeout), 'frames stopped coming'


def test_engine_runs_frames_and_every_command_on_its_one_thread():
    engine = make_engine()
    frames = Frames()
    try:
        info = engine.set_avatar(AVATAR)
        assert info.face_found and engine.state == 'ready'
        ran_on = engine.submit(lambda: threading.current_thread().name).result(30)
        engine.add_listener(frames)
        engine.start()
        engine.start()  # idempotent
        frames.wait(5)
        assert not frames.results[0].calibrated
        assert np.array_equal(frames.results[0].output, info.image)  # the avatar, unmoved, before calibration
        engine.calibrate()
        deadline = time.time() + 60
        while not frames.results[-1].calibrated and time.time() < deadline:
            frames.wait(1)
        assert engine.update_settings(crop_zoom=1.5, kp_smoothing=0.5).crop_zoom == 1.5
        with pytest.raises(TypeError, match='unknown setting'):
            engine.update_settings(colour='red')
        with pytest.raises(ValueError, match='--crop-zoom must be between 0.5 and 3'):
            engine.update_settings(crop_zoom=0)
        with pytest.raises(ValueError, match='--kp-smoothing must be between 0 and 1'):
            engine.update_settings(kp_smoothing=5)
        frames.wait(3)
        stats = engine.stats()
    finally:
        engine.close()
    assert ran_on == 'fomm-engine' and frames.threads == {'fomm-engine'}
    r = frames.results[-1]
    assert r.calibrated and r.face_found and r.crop_box is not None and r.keypoints.shape == (bundled_num_kp(), 2)
    assert set(r.timings_ms) >= {'capture', 'crop', 'model', 'output', 'total'}
    assert stats.state == 'running' and stats.camera_state == 'running' and stats.camera_fps == 25
    assert stats.frames_out >= 8 and stats.frames_in >= stats.frames_out
    assert stats.stages['total'].p99_ms >= stats.stages['total'].p95_ms > 0
    assert stats.backend.startswith('torch') and stats.face_detector.startswith('mediapipe')
    assert engine.state == 'closed' and not engine._thread.is_alive()
    with pytest.raises(EngineError, match='closed'):
        engine.submit(lambda: None).result(1)
    # closing ended the detection thread, then closed the detectors: none can run into a closed detector
    cropper = engine.pipeline.cropper
    assert not cropper._worker._thread.is_alive()
    assert cropper.detector._detector is None and engine._avatar_detector._detector is None


def test_a_file_processed_offline_is_decoded_on_the_engine_thread_every_frame():
    engine = make_engine(loop=False, realtime=False)
    frames = Frames()
    try:
        engine.set_avatar(AVATAR)
        engine.add_listener(frames)
        engine.start()
        frames.wait(10)
        assert not any(t.name.startswith('capture-') for t in threading.enumerate())
        assert engine.wait_until_finished(120)
        stats = engine.stats()
        assert len(frames.results) == 75 and stats.frames_in == 75 and stats.dropped == 0
        assert [r.index for r in frames.results] == list(range(75)) and stats.camera_state == 'ended'
    finally:
        engine.close()
    realtime = make_engine()                      # a paced source keeps its capture thread
    try:
        realtime.set_avatar(AVATAR)
        realtime.start()
        deadline = time.time() + 30
        while not any(t.name.startswith('capture-') for t in threading.enumerate()) and time.time() < deadline:
            time.sleep(0.05)
        assert any(t.name.startswith('capture-') for t in threading.enumerate())
    finally:
        realtime.close()


def test_virtual_camera_started_and_stopped_while_frames_flow_never_fails_or_leaks(recording_backend):
    """Start/stop from another thread while the engine sends: each is a command between two frames, so a
    camera is never sent to after it was closed and none is left open."""
    engine = make_engine()
    frames = Frames()
    try:
        engine.set_avatar(AVATAR)
        engine.add_listener(frames)
        engine.start()
        frames.wait(2)
        statuses = []
        for _ in range(6):
            statuses.append(engine.start_virtual_camera(320, 180, 25, backend='recording').state)
            frames.wait(1)
            engine.stop_virtual_camera()
            statuses.append(engine.virtual_camera_status().state)
        last = engine.start_virtual_camera(320, 180, 25, backend='recording')
        frames.wait(2)
        sent = engine.virtual_camera_status().frames_sent
    finally:
        engine.close()
    cams = recording_backend.instances
    assert statuses == ['on', 'off'] * 6 and last.state == 'on' and sent >= 2
    assert len(cams) == 7 and all(c.closed for c in cams)      # close() stopped the last one too
    assert all(len(c.frames) >= 1 for c in cams)                # each got frames while it was on


def test_output_delay_sends_each_virtual_camera_frame_its_delay_after_capture_in_order(recording_backend):
    """--output-delay: a constant camera-to-call delay to match with the microphone's."""
    from live.virtual_camera import Letterbox
    delay = 0.3
    engine = make_engine(Settings(mirror_preview=False, paste_back=False, output_delay_ms=delay * 1000))
    frames = Frames()
    try:
        engine.set_avatar(AVATAR)
        engine.add_listener(frames)
        assert engine.start_virtual_camera(96, 96, 25, backend='recording').state == 'on'   # before the first frame
        engine.start()
        frames.wait(12)
        cam = recording_backend.instances[0]
        deadline = time.time() + 60
        while len(cam.frames) < 8 and time.time() < deadline:
            time.sleep(0.05)
        sent = list(zip(cam.frames, cam.sent_at))
    finally:
        engine.close()
    assert len(sent) >= 8
    box = Letterbox(96, 96)
    for (image, sent_at), result in zip(sent, frames.results):   # one send per frame, in order
        assert sent_at - result.timestamp >= delay
        assert np.array_equal(image.reshape(96, 96, 3), box.place(result.output_unmirrored))
    with pytest.raises(ValueError, match='--output-delay must be between 0 and 2000'):
        engine.update_settings(output_delay_ms=-5)


def test_model_change_keeps_source_avatar_and_virtual_camera(recording_backend):
    engine = make_engine()
    frames = Frames()
    try:
        engine.set_avatar(AVATAR)
        engine.add_listener(frames)
        engine.start()
        engine.start_virtual_camera(320, 180, 25, backend='recording')
        frames.wait(2)
        engine.set_model(ModelOptions(backend='onnx', device='cpu'))
        frames.wait(3)
        stats = engine.stats()
        with pytest.raises(EngineError, match='checkpoint not found'):
            engine.set_model(ModelOptions(checkpoint='/nonexistent/model.pth.tar'))
        frames.wait(2)   # the previous model keeps running
        after = engine.stats()
    finally:
        engine.close()
    assert stats.backend.startswith('onnx') and after.backend.startswith('onnx') and after.state == 'running'
    assert engine.virtual_camera_status().state == 'off' and len(recording_backend.instances[0].frames) >= 4


def test_source_switch_and_fps_cap():
    engine = make_engine(Settings(fps_cap=8.0, mirror_preview=False))
    labels, frames = [], Frames()
    try:
        engine.set_avatar(AVATAR)
        engine.add_listener(lambda r: labels.append(engine.source.label))
        engine.add_listener(frames)
        engine.start()
        frames.wait(4)
        engine.set_source(str(OTHER))
        frames.wait(4)
        stats = engine.stats()
    finally:
        engine.close()
    assert labels[0] == CLIP.name and labels[-1] == OTHER.name
    assert stats.camera_state == 'running' and not stats.calibrated   # the anchor belonged to the old view
    assert stats.fps <= 9.5            # fps_cap honoured (the source runs at 25 fps)
    assert stats.dropped > 0           # frames beyond the cap are dropped, not queued


class BrokenSink:
    path = 'broken.mp4'

    def __init__(self):
        self.frames = 0

    def write(self, frame):
        self.frames += 1
        if self.frames == 3:
            raise OSError('No space left on device')

    def close(self):
        pass


def test_a_failing_output_stops_the_run_and_says_why():
    engine = make_engine()
    sink = BrokenSink()
    try:
        engine.set_avatar(AVATAR)
        engine.add_sink(sink)
        engine.start()
        assert engine.wait_until_finished(120)
        stats = engine.stats()
    finally:
        engine.close()
    assert sink.frames == 3 and stats.state == 'failed'
    assert 'writing broken.mp4 failed: No space left on device' in stats.error


def test_camera_resolution_follows_the_device():
    size, why = camera_request(CaptureOptions(), 'cpu')
    assert size == (640, 480) and 'CPU' in why and '--camera-size' in why
    assert camera_request(CaptureOptions(), 'cuda')[0] == (1280, 720)
    assert camera_request(CaptureOptions(camera_size=(1920, 1080)), 'cpu') == ((1920, 1080), 'as asked')


def test_missing_default_model_is_explained(monkeypatch, tmp_path):
    import fomm_model.defaults as defaults
    monkeypatch.setattr(defaults, 'default_checkpoint_path', lambda: tmp_path / 'face-128.pth.tar')
    engine = Engine(ModelOptions(), CaptureOptions(input=str(CLIP)))
    try:
        with pytest.raises(EngineError, match='does not exist yet'):
            engine.load().result(60)
        assert engine.state == 'failed'
    finally:
        engine.close()
