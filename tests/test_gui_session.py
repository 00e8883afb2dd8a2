"""The window's behaviour without widgets (live.gui.session): the real engine on a face clip, the bundled
model, avatars from a real library folder, settings in a real INI file."""
from __future__ import annotations

import queue
import shutil
import time

import pytest
from helpers import SHARED

pytest.importorskip('PyQt6.QtCore')

from live.gui.avatar_library import AvatarLibrary  # noqa: E402
from live.gui.session import Session  # noqa: E402
from live.gui.settings_store import AppPrefs, SettingsStore  # noqa: E402
from live.options import CaptureOptions, ModelOptions, OutputOptions, Settings  # noqa: E402

CLIP = SHARED / 'data' / 'faces' / 'test' / 'grid_lwbsza#grid_lipnet__lwbsza.mp4'


class Harness:
    """A session whose GUI-thread hand-overs run on the test's thread when it pumps."""

    def __init__(self, tmp_path, model: ModelOptions | None = None, **prefs):
        self.events: list[tuple[str, object]] = []
        self.frames = 0
        self._soon: queue.Queue = queue.Queue()
        avatars = tmp_path / 'avatars'
        avatars.mkdir(exist_ok=True)
        for name in ('einstein.png', 'mona_lisa.png'):
            shutil.copy(SHARED / 'data' / 'avatars' / name, avatars / name)
        self.store = SettingsStore(tmp_path / 'settings.ini')
        self.session = Session(model or ModelOptions(backend='torch', device='cpu'),
                               CaptureOptions(input=str(CLIP), loop=True), Settings(), OutputOptions(),
                               AppPrefs(**prefs), self.store, AvatarLibrary(avatars, bundled={}),
                               on_event=lambda name, payload: self.events.append((name, payload)),
                               on_frame=self._frame, call_soon=self._soon.put)

    def _frame(self, result) -> None:
        self.frames += 1

    def pump_until(self, condition, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            try:
                self._soon.get(timeout=max(0.0, min(0.1, deadline - time.monotonic())))()
            except queue.Empty:
                assert time.monotonic() < deadline, f'timed out; events so far: {self.names()}'

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def payloads(self, name: str) -> list:
        return [p for n, p in self.events if n == name]


@pytest.fixture()
def harness(tmp_path):
    h = Harness(tmp_path, avatar='user:mona_lisa.png')
    yield h
    h.session.close_engine()


def test_start_loads_the_remembered_avatar_and_frames_flow(harness):
    s = harness.session
    s.start()
    harness.pump_until(lambda: 'avatar' in harness.names() and harness.frames >= 3)
    assert harness.names()[:2] == ['engine', 'avatar'] and harness.payloads('engine')[0].startswith('torch')
    entry, info = harness.payloads('avatar')[0]
    assert entry.key == 'user:mona_lisa.png' and info.face_found and s.ready


def test_avatar_picked_while_the_model_loads_is_applied_after(harness):
    s = harness.session
    s.start()
    s.use_avatar(s.library.find('user:einstein.png'))      # queued behind the loading model
    harness.pump_until(lambda: len(harness.payloads('avatar')) >= 2)
    assert [e.key for e, _ in harness.payloads('avatar')][-1] == 'user:einstein.png'
    assert s.prefs.avatar == 'user:einstein.png'


def test_model_change_reloads_in_place_and_a_bad_one_keeps_the_old(harness):
    s = harness.session
    s.start()
    harness.pump_until(lambda: harness.frames >= 2)
    engine = s.engine
    s.change_model(backend='onnx')
    harness.pump_until(lambda: len(harness.payloads('engine')) >= 2)
    assert harness.payloads('engine')[-1].startswith('onnx') and s.engine is engine
    s.change_model(checkpoint='/nonexistent/model.pth.tar')
    harness.pump_until(lambda: any('Model not changed' in t for t, _ in harness.payloads('notice')))
    assert s.model.checkpoint is None and s.model.backend == 'onnx'   # the running model stays
    frames = harness.frames
    harness.pump_until(lambda: harness.frames >= frames + 2)


def test_virtual_camera_states_are_reported(harness, recording_backend):
    s = harness.session
    s.start()
    harness.pump_until(lambda: harness.frames >= 1)
    engine = s.engine
    status = engine.start_virtual_camera(512, 512, 25, backend='recording')   # as the window's start does
    assert status.state == 'on' and s.virtual_camera_on()
    s.stop_virtual_camera()
    harness.pump_until(lambda: harness.payloads('vcam'))
    assert harness.payloads('vcam')[-1].state == 'off' and not s.virtual_camera_on()
    # the window's start: pyvirtualcam picks the first backend that opens (here the in-memory one)
    s.start_virtual_camera(1280, 720, 30)
    harness.pump_until(lambda: len(harness.payloads('vcam')) >= 2)
    last = harness.payloads('vcam')[-1]
    assert last.state == 'on' and (last.width, last.height, last.fps) == (1280, 720, 30)
    assert s.output.vcam_size == (1280, 720) and s.virtual_camera_on()


def test_settings_are_checked_toggled_and_remembered(harness, tmp_path):
    s = harness.session
    assert s.toggle('passthrough').passthrough is True
    assert s.nudge('crop_zoom', 5.0, 0.5, 3.0).crop_zoom == 3.0
    assert s.nudge_offset(0.7, -0.1).crop_offset == (0.5, -0.1)
    with pytest.raises(ValueError, match='--overlay-alpha must be between 0 and 1'):
        s.apply_settings(overlay_alpha=2)
    s.model = ModelOptions(backend='onnx', dtype='float32')
    s.prefs.show_keypoints = True
    s.save()
    again = Harness(tmp_path).session
    loaded = again.store.load_dataclass('engine', Settings())
    assert loaded.passthrough is True and loaded.crop_zoom == 3.0 and loaded.crop_offset == (0.5, -0.1)
    assert again.store.load_dataclass('model', ModelOptions()).backend == 'onnx'
    assert again.store.load_prefs().show_keypoints is True


def test_the_mouth_gain_keys_start_from_the_gain_in_use(harness):
    s = harness.session
    assert s.nudge_mouth_gain(0.25).mouth_gain is None      # no engine yet: no gain known, and it says so
    assert 'No mouth gain' in harness.payloads('notice')[-1][0]
    s.start()
    harness.pump_until(lambda: s.ready and s.engine.stats().mouth_gain is not None)
    calibrated = s.engine.stats().mouth_gain
    assert s.nudge_mouth_gain(0.25).mouth_gain == pytest.approx(calibrated + 0.25)
    assert s.nudge_mouth_gain(10).mouth_gain == 5.0 and s.nudge_mouth_gain(-10).mouth_gain == 0.0


def test_calibrate_needs_a_running_engine(harness):
    assert not harness.session.calibrate()
    assert 'engine is not running' in harness.payloads('notice')[-1][0]


def test_an_engine_that_cannot_start_is_reported(tmp_path):
    h = Harness(tmp_path, ModelOptions(checkpoint=str(tmp_path / 'missing.pth.tar')))
    h.session.start()
    h.pump_until(lambda: 'engine_failed' in h.names())
    assert 'checkpoint not found' in h.payloads('engine_failed')[0]
    assert h.session.engine is None and h.session.error
