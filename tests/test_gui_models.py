"""Models in the window: the picker and dropping a checkpoint onto the window (installed once it loads, then used),
with the real engine on a face clip and random-weight checkpoints (the bundled face-128-v6 model has 15 keypoints, a
face-128 checkpoint 10, so the frames say which model runs)."""
from __future__ import annotations

import os
import queue
import time
from pathlib import Path

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

import pytest  # noqa: E402

pytest.importorskip('PyQt6.QtWidgets')
pytest.importorskip('pytestqt')

from helpers import CLIPS, make_checkpoint  # noqa: E402
from PyQt6.QtCore import QMimeData, QPointF, Qt, QUrl  # noqa: E402
from PyQt6.QtGui import QDropEvent  # noqa: E402

import live.cv2_compat  # noqa: E402,F401 - cv2 before Qt widgets, the way run_gui does it
from fomm_model.model_store import MODELS_DIR_ENV  # noqa: E402
from live.gui.avatar_library import AvatarLibrary  # noqa: E402
from live.gui.launch import create_window, parse_gui_args  # noqa: E402
from live.gui.session import Session  # noqa: E402
from live.gui.settings_store import AppPrefs, SettingsStore  # noqa: E402
from live.options import CaptureOptions, ModelOptions, OutputOptions, Settings  # noqa: E402

TIMEOUT_MS = 60_000


@pytest.fixture(scope='module')
def ten_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp('ckpt') / 'ten.pth.tar', 'face-128')


@pytest.fixture()
def bad_checkpoint(tmp_path) -> Path:
    path = tmp_path / 'incoming' / 'broken.pth.tar'
    path.parent.mkdir()
    path.write_bytes(b'PK\x03\x04 not really a checkpoint')
    return path


class Harness:
    """A session whose GUI-thread hand-overs run on the test's thread when it pumps; newest frame kept."""

    def __init__(self, tmp_path: Path, models_dir: Path):
        self.events: list[tuple[str, object]] = []
        self.last = None
        self._soon: queue.Queue = queue.Queue()
        self.models_dir = models_dir
        self.session = Session(ModelOptions(backend='torch', device='cpu'),
                               CaptureOptions(input=str(CLIPS[0]), loop=True),
                               Settings(), OutputOptions(), AppPrefs(), SettingsStore(tmp_path / 'settings.ini'),
                               AvatarLibrary(tmp_path / 'avatars'), on_event=lambda n, p: self.events.append((n, p)),
                               on_frame=self._frame, call_soon=self._soon.put)

    def _frame(self, result) -> None:
        self.last = result

    def pump_until(self, condition, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            try:
                self._soon.get(timeout=0.1)()
            except queue.Empty:
                assert time.monotonic() < deadline, f'timed out; events so far: {self.events}'

    def notices(self) -> list[tuple[str, bool]]:
        return [p for n, p in self.events if n == 'notice']

    def keypoints(self) -> int | None:
        kp = self.last.keypoints if self.last is not None else None
        return None if kp is None else kp.reshape(-1, 2).shape[0]


def test_session_installs_a_checkpoint_switches_to_it_and_back(tmp_path, monkeypatch, ten_checkpoint,
                                                               bad_checkpoint):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / 'models'))
    h = Harness(tmp_path, tmp_path / 'models')
    s = h.session
    try:
        s.start()
        h.pump_until(lambda: h.keypoints() == 15)                  # the bundled model
        s.install_model(ten_checkpoint)
        h.pump_until(lambda: h.keypoints() == 10)                  # installed, then loaded in place
        assert s.model.checkpoint == 'ten' and s.model.config is None
        assert [e.name for e in s.models()] == ['face-128-v6', 'ten']
        assert ('models' in [n for n, _ in h.events]) and any('Installed the model "ten"' in t
                                                               for t, _ in h.notices())
        s.install_model(bad_checkpoint)                            # refused: said why, nothing copied, model stays
        h.pump_until(lambda: any(warn and t.startswith('Model not installed:') for t, warn in h.notices()))
        assert 'broken.pth.tar' in h.notices()[-1][0] and 'could not read checkpoint' in h.notices()[-1][0]
        assert sorted(p.name for p in h.models_dir.iterdir()) == ['ten.json', 'ten.pth.tar']
        assert s.model.checkpoint == 'ten'
        s.use_model(None)
        h.pump_until(lambda: h.keypoints() == 15 and s.engine.model_options.checkpoint is None)
    finally:
        s.close_engine()


def _keypoints(result) -> int | None:
    return None if result is None or result.keypoints is None else result.keypoints.reshape(-1, 2).shape[0]


def _drop(widget, paths: list[Path]) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)


def test_dropping_a_checkpoint_on_the_window_installs_and_picks_it(qtbot, tmp_path, monkeypatch, ten_checkpoint,
                                                                  bad_checkpoint):
    models = tmp_path / 'models'
    monkeypatch.setenv(MODELS_DIR_ENV, str(models))
    ns = parse_gui_args(['--input', str(CLIPS[0]), '--backend', 'torch', '--device', 'cpu'])
    window = create_window(ns, store=SettingsStore(tmp_path / 'settings.ini'),
                           library=AvatarLibrary(tmp_path / 'avatars'), camera_lister=lambda: [])
    qtbot.addWidget(window)
    try:
        window.show()
        combo = window.controls.model_combo
        assert combo.count() == 1 and combo.currentData() is None and 'face-128-v6' in combo.currentText()
        qtbot.waitUntil(lambda: window.last_result is not None, timeout=TIMEOUT_MS)

        _drop(window, [bad_checkpoint])                            # a bad file: a clear message, nothing installed
        qtbot.waitUntil(lambda: 'Model not installed' in window.status_panel.notice_label.text(), timeout=TIMEOUT_MS)
        assert 'broken.pth.tar' in window.status_panel.notice_label.text()
        assert not models.exists() or list(models.iterdir()) == []
        assert combo.count() == 1

        _drop(window, [ten_checkpoint])
        qtbot.waitUntil(lambda: combo.count() == 2 and combo.currentData() == 'ten', timeout=TIMEOUT_MS)
        qtbot.waitUntil(lambda: _keypoints(window.last_result) == 10,
                        timeout=TIMEOUT_MS)
        assert (models / 'ten.pth.tar').is_file()

        combo.setCurrentIndex(combo.findData(None))               # the picker: back to the bundled model
        combo.activated.emit(combo.currentIndex())
        qtbot.waitUntil(lambda: _keypoints(window.last_result) == 15,
                        timeout=TIMEOUT_MS)
        assert window.session.model.checkpoint is None
    finally:
        window.close()


def test_a_checkpoint_on_the_command_line_brings_its_own_config(qtbot, tmp_path, monkeypatch, ten_checkpoint):
    """Not the config remembered from a run with another model: the window finds it from the file."""
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / 'models'))
    store = SettingsStore(tmp_path / 'settings.ini')
    store.save_dataclass('model', ModelOptions(config='face-128-v6'))
    store.sync()
    ns = parse_gui_args(['--input', str(CLIPS[0]), '--backend', 'torch', '--device', 'cpu',
                         '--checkpoint', str(ten_checkpoint)])
    window = create_window(ns, store=store, library=AvatarLibrary(tmp_path / 'avatars'), camera_lister=lambda: [])
    qtbot.addWidget(window)
    try:
        window.show()
        qtbot.waitUntil(lambda: _keypoints(window.last_result) == 10, timeout=TIMEOUT_MS)
        assert window.session.model.config is None
        assert window.controls.model_combo.currentText() == 'ten.pth.tar (file, not installed)'
    finally:
        window.close()
