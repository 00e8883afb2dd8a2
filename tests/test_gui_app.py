"""The window end to end: the real engine on a face clip as the camera and the bundled model, driven through
its widgets and keys (the behaviour behind them is tested without widgets in test_gui_session)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

import pytest  # noqa: E402

pytest.importorskip('PyQt6.QtWidgets')
pytest.importorskip('pytestqt')
pytest.importorskip('skimage')

from PIL import Image  # noqa: E402
from PyQt6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl  # noqa: E402
from PyQt6.QtGui import QDropEvent  # noqa: E402

import live.cv2_compat  # noqa: E402,F401 - cv2 before Qt widgets, the way run_gui does it
from live.gui.avatar_library import AvatarLibrary  # noqa: E402
from live.gui.help_dialog import HelpDialog  # noqa: E402
from live.gui.keys import KEYS  # noqa: E402
from live.gui.launch import create_window, parse_gui_args  # noqa: E402
from live.gui.settings_store import SettingsStore  # noqa: E402

FRAME_TIMEOUT_MS = 60_000


@pytest.fixture(scope='module')
def clip(shared_dir) -> Path:
    clips = sorted((shared_dir / 'data' / 'faces' / 'test').glob('*.mp4'))
    if not clips:
        pytest.fail(f'no face clips in {shared_dir}/data/faces/test')
    return clips[0]


@pytest.fixture
def make_window(qtbot, tmp_path, clip):
    """Opens windows on the clip with a temporary settings file and avatar folder; closes them afterwards."""
    windows = []

    def make(*argv, input=str(clip), settings='settings.ini'):
        ns = parse_gui_args([*(['--input', input] if input else []), '--backend', 'torch', '--device', 'cpu', *argv])
        window = create_window(ns, store=SettingsStore(tmp_path / settings),
                               library=AvatarLibrary(tmp_path / 'avatars'), camera_lister=lambda: [])
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        windows.append(window)
        return window

    yield make
    for w in windows:
        w.close()


def wait_frames(qtbot, window, n: int = 3) -> None:
    start = window.frames_received
    qtbot.waitUntil(lambda: window.frames_received >= start + n, timeout=FRAME_TIMEOUT_MS)


def activate(qtbot, window) -> None:
    """Window shortcuts only fire in the active window."""
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)


def screenshot_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get('FOMM_SCREENSHOT_DIR') or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def shown(window):
    """(key of the avatar the engine animates, its AvatarInfo)."""
    s = window.session
    return (s.applied.key if s.applied else None), s.avatar_info


def test_window_runs_engine_on_a_clip_and_shows_frames(qtbot, make_window, tmp_path):
    window = make_window()
    wait_frames(qtbot, window, 5)
    assert window.avatar_view.frames_shown >= 5 and window.camera_view.frames_shown >= 5
    result = window.last_result
    key, info = shown(window)
    assert key == 'bundled:astronaut' and result.camera.ndim == 3
    # before calibration the relative mode shows the avatar unmoved (pasted back into its whole image)
    assert result.output.shape == info.full_image.shape
    qtbot.waitUntil(lambda: 'model' in window.status_panel.latency_label.text(), timeout=5000)
    assert window.status_panel.fps_label.text().endswith(' fps') and window.status_panel.fps_label.text() != '— fps'
    assert 'torch' in window.status_panel.runtime_label.text()
    assert 'running' in window.status_panel.camera_label.text()
    assert not window.banner.isVisible()

    window.controls.show_keypoints_check.setChecked(True)
    window.controls.overlay_slider.setValue(40)
    window.calibrate()
    wait_frames(qtbot, window, 5)
    path = screenshot_dir(tmp_path) / 'gui-main-window.png'
    assert window.grab().save(str(path))
    assert path.stat().st_size > 10_000


def test_pick_avatar_by_click_and_by_key(qtbot, make_window, tmp_path, shared_dir):
    user = tmp_path / 'avatars'
    user.mkdir()
    for name in ('einstein.png', 'mona_lisa.png'):
        shutil.copy(shared_dir / 'data' / 'avatars' / name, user / name)
    window = make_window()
    wait_frames(qtbot, window)
    assert [e.key for e in window.gallery.entries()] == ['bundled:astronaut', 'user:einstein.png',
                                                       'user:mona_lisa.png']

    def shows(key: str) -> bool:
        return shown(window)[0] == key and window.last_result is not None

    viewport = window.gallery.list.viewport()
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=window.gallery.item_rect_center(2))
    qtbot.waitUntil(lambda: shows('user:mona_lisa.png'), timeout=FRAME_TIMEOUT_MS)
    assert window.gallery.current_entry().key == 'user:mona_lisa.png'

    activate(qtbot, window)
    qtbot.keyClick(window, Qt.Key.Key_2)
    qtbot.waitUntil(lambda: shows('user:einstein.png'), timeout=FRAME_TIMEOUT_MS)
    qtbot.keyClick(window, Qt.Key.Key_A)   # previous
    qtbot.waitUntil(lambda: shows('bundled:astronaut'), timeout=FRAME_TIMEOUT_MS)
    qtbot.keyClick(window, Qt.Key.Key_A)   # wraps around
    qtbot.waitUntil(lambda: shows('user:mona_lisa.png'), timeout=FRAME_TIMEOUT_MS)
    assert window.session.prefs.avatar == 'user:mona_lisa.png'
    assert window.gallery.remove_button.isEnabled()


def _drop(widget, paths: list[Path]) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)


def test_dropping_an_image_copies_it_into_the_user_folder(qtbot, make_window, tmp_path, shared_dir):
    window = make_window()
    wait_frames(qtbot, window)
    photo = tmp_path / 'incoming' / 'Lady Agnew.png'
    photo.parent.mkdir()
    shutil.copy(shared_dir / 'data' / 'avatars' / 'lady_agnew.png', photo)
    _drop(window.gallery, [photo])
    copied = tmp_path / 'avatars' / 'Lady Agnew.png'
    assert copied.is_file() and copied.read_bytes() == photo.read_bytes()
    assert photo.is_file(), 'the original stays where it was'
    assert window.gallery.current_entry().key == 'user:Lady Agnew.png'
    qtbot.waitUntil(lambda: shown(window)[0] == 'user:Lady Agnew.png', timeout=FRAME_TIMEOUT_MS)
    assert shown(window)[1].image.shape == (128, 128, 3)

    # a picture without a face is still added, with a clear notice
    blank = tmp_path / 'incoming' / 'wall.png'
    Image.new('RGB', (200, 160), (120, 140, 160)).save(blank)
    _drop(window.gallery, [blank])
    assert (tmp_path / 'avatars' / 'wall.png').is_file()
    qtbot.waitUntil(lambda: shown(window)[0] == 'user:wall.png', timeout=FRAME_TIMEOUT_MS)
    assert not shown(window)[1].face_found
    assert 'No face found' in window.status_panel.notice_label.text()
    assert [e.name for e in window.gallery.entries()] == ['astronaut', 'Lady Agnew', 'wall']


def test_calibrate_button_reanchors(qtbot, make_window):
    window = make_window()
    wait_frames(qtbot, window)
    assert not window.last_result.calibrated
    qtbot.mouseClick(window.controls.calibrate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.last_result.calibrated, timeout=FRAME_TIMEOUT_MS)
    assert window.session.engine.stats().calibrated
    assert window.controls.calibration_state_label.text().startswith('Calibrated')


def click_check(qtbot, check) -> None:
    """Click a check box on its indicator (its centre may be empty space in a wide row)."""
    qtbot.mouseClick(check, Qt.MouseButton.LeftButton, pos=QPoint(8, check.height() // 2))


def test_controls_and_shortcuts_reach_the_engine(qtbot, make_window):
    window = make_window()
    wait_frames(qtbot, window)
    c = window.controls
    click_check(qtbot, c.passthrough_check)
    click_check(qtbot, c.mirror_output_check)
    click_check(qtbot, c.relative_check)
    click_check(qtbot, c.adapt_scale_check)
    click_check(qtbot, c.auto_calibrate_check)
    c.zoom_slider.setValue(150)
    c.offset_x_slider.setValue(10)
    c.offset_y_slider.setValue(-20)
    c.smoothing_slider.setValue(60)
    c.overlay_slider.setValue(30)
    c.fps_cap_spin.setValue(15)
    s = window.session.engine.settings
    assert (s.passthrough, s.mirror_output, s.relative, s.adapt_scale, s.auto_calibrate) == (True, True, False,
                                                                                          False, True)
    assert s.crop_zoom == pytest.approx(1.5) and s.crop_offset == pytest.approx((0.1, -0.2))
    assert s.kp_smoothing == pytest.approx(0.6) and s.overlay_alpha == pytest.approx(0.3) and s.fps_cap == 15
    c.fps_cap_spin.setValue(0)
    assert window.session.engine.settings.fps_cap is None
    c.output_delay_spin.setValue(150)
    assert window.session.engine.settings.output_delay_ms == 150
    # the bundled model names its lip keypoints: the slider shows its calibrated gain until the user picks one
    default_gain = window.session.engine.stats().mouth_gain
    qtbot.waitUntil(lambda: c.mouth_gain_slider.isEnabled(), timeout=FRAME_TIMEOUT_MS)
    assert default_gain > 1 and c.mouth_gain_slider.value() == round(default_gain * 100)
    assert window.session.engine.settings.mouth_gain is None
    c.mouth_gain_slider.setValue(300)
    assert window.session.engine.settings.mouth_gain == pytest.approx(3.0)
    qtbot.waitUntil(lambda: window.session.engine.stats().mouth_gain == pytest.approx(3.0), timeout=FRAME_TIMEOUT_MS)

    activate(qtbot, window)
    qtbot.keyClick(window, Qt.Key.Key_R)
    assert window.session.engine.settings.mirror_preview is False and not c.mirror_preview_check.isChecked()
    qtbot.keyClick(window, Qt.Key.Key_W)
    assert window.session.engine.settings.crop_zoom == pytest.approx(1.55) and c.zoom_slider.value() == 155
    qtbot.keyClick(window, Qt.Key.Key_0)
    assert window.session.engine.settings.passthrough is False and not c.passthrough_check.isChecked()
    qtbot.keyClick(window, Qt.Key.Key_M)   # the mouth gain, from the 3.0 picked on the slider above
    assert window.session.engine.settings.mouth_gain == pytest.approx(3.25) and c.mouth_gain_slider.value() == 325
    qtbot.keyClick(window, Qt.Key.Key_N)
    qtbot.keyClick(window, Qt.Key.Key_N)
    assert window.session.engine.settings.mouth_gain == pytest.approx(2.75)
    qtbot.keyClick(window, Qt.Key.Key_O)
    assert window.session.prefs.show_keypoints and c.show_keypoints_check.isChecked()
    wait_frames(qtbot, window, 2)   # frames keep coming with the new settings


def test_precision_change_reloads_the_model_in_place(qtbot, make_window):
    window = make_window()
    wait_frames(qtbot, window)
    engine = window.session.engine
    window.controls.mirror_output_check.setChecked(True)
    combo = window.controls.backend_combo
    combo.setCurrentIndex(combo.findData('onnx'))
    combo.activated.emit(combo.currentIndex())
    qtbot.waitUntil(lambda: 'onnx' in window.status_panel.runtime_label.text(), timeout=FRAME_TIMEOUT_MS)
    assert window.session.engine is engine and engine.settings.mirror_output is True
    assert window.session.model.backend == 'onnx'
    wait_frames(qtbot, window, 2)


def test_settings_are_remembered_between_runs(qtbot, make_window, tmp_path):
    window = make_window()
    wait_frames(qtbot, window)
    c = window.controls
    c.mirror_preview_check.setChecked(False)
    c.zoom_slider.setValue(130)
    c.offset_x_slider.setValue(-5)
    c.fps_cap_spin.setValue(20)
    c.output_delay_spin.setValue(120)
    c.mouth_gain_slider.setValue(250)
    c.show_keypoints_check.setChecked(True)
    c.vcam_resolution_combo.setCurrentIndex(3)
    c.vcam_resolution_combo.activated.emit(3)
    window.resize(window.minimumSizeHint().width(), 640)   # offscreen screens are 800x800: stay inside
    window.close()
    assert (tmp_path / 'settings.ini').is_file()

    again = make_window(input=None)
    s = again.session.settings
    assert s.mirror_preview is False and s.crop_zoom == pytest.approx(1.3)
    assert s.crop_offset == pytest.approx((-0.05, 0.0)) and s.fps_cap == 20 and s.output_delay_ms == 120
    assert again.controls.output_delay_spin.value() == 120
    assert s.mouth_gain == pytest.approx(2.5) and again.controls.mouth_gain_slider.value() == 250
    assert again.controls.zoom_slider.value() == 130 and not again.controls.mirror_preview_check.isChecked()
    assert again.controls.show_keypoints_check.isChecked() and again.camera_view.show_keypoints
    assert again.controls.vcam_resolution() == (512, 512)
    assert again.session.capture.input == window.session.capture.input, 'the video file used as camera'
    assert again.height() == 640, 'window geometry is restored'
    wait_frames(qtbot, again)


def test_no_camera_still_opens_and_offers_a_video_file(qtbot, make_window, clip, tmp_path):
    window = make_window(input='9')   # /dev/video9 does not exist here
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=FRAME_TIMEOUT_MS)
    assert 'Camera' in window.banner.label.text() and window.banner.button.text().startswith('Use a video file')
    assert window.frames_received == 0
    window.grab().save(str(screenshot_dir(tmp_path) / 'gui-no-camera.png'))
    window._set_source(str(clip))
    wait_frames(qtbot, window)
    qtbot.waitUntil(lambda: not window.banner.isVisible(), timeout=5000)
    assert window.session.prefs.source == str(clip)


def test_help_lists_every_shortcut_from_the_one_table(qtbot, make_window, tmp_path):
    window = make_window()
    activate(qtbot, window)
    qtbot.keyClick(window, Qt.Key.Key_F1)
    dialog = window.help_dialog
    assert isinstance(dialog, HelpDialog) and dialog.isVisible()
    dialog.grab().save(str(screenshot_dir(tmp_path) / 'gui-help.png'))
    rows = {dialog.table.item(r, 0).text(): dialog.table.item(r, 1).text() for r in range(dialog.table.rowCount())}
    assert 'Calibrate' in rows['C / X'] and '1 – 9' in rows and 'F1' in rows
    assert dialog.table.rowCount() == len(KEYS)
    assert set(window.shortcuts) == {key for keys, _, _ in KEYS for key in keys}
    dialog.close()


def test_run_gui_entry_point_with_a_command_line(qtbot, tmp_path, clip, shared_dir):
    """What ``main.py`` does: run_gui(argv) opens the window, runs the engine, returns 0 when closed."""
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication

    from live.gui import run_gui
    from live.gui.main_window import MainWindow

    seen = {}

    def check_and_close():
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if len(windows) != 1 or windows[0].frames_received < 3:
            if time.monotonic() - seen.setdefault('start', time.monotonic()) < 60:
                QTimer.singleShot(100, check_and_close)
                return
        if windows:
            seen['frames'] = windows[0].frames_received
            seen['avatar'] = shown(windows[0])[0]
            seen['smoothing'] = windows[0].session.settings.kp_smoothing
            windows[0].close()

    QTimer.singleShot(100, check_and_close)
    code = run_gui(['--input', str(clip), '--backend', 'torch', '--kp-smoothing', '0.4', '--detect-every', '2',
                    '--avatar', str(shared_dir / 'data' / 'avatars' / 'einstein.png'),
                    '--settings', str(tmp_path / 'cli.ini'), '--avatar-dir', str(tmp_path / 'mine')])
    assert code == 0
    assert seen.get('frames', 0) >= 3, 'the window showed no frames before closing'
    assert seen['avatar'] == 'user:einstein.png' and (tmp_path / 'mine' / 'einstein.png').is_file()
    assert seen['smoothing'] == 0.4 and (tmp_path / 'cli.ini').is_file()


def test_camera_choice_by_name(qtbot, tmp_path, clip):
    from live.cameras import CameraInfo
    from live.gui.launch import remembered_source
    from live.gui.settings_store import AppPrefs

    cams = [CameraInfo(7, 'Studio Cam', '/dev/video7')]
    # a remembered camera is found again by name when its index moved
    assert remembered_source(AppPrefs(source='2', source_name='Studio Cam'), cams) == '7'
    assert remembered_source(AppPrefs(source='2', source_name='Gone'), cams) == '2'
    ns = parse_gui_args(['--input', str(clip), '--backend', 'torch', '--camera-size', '800x600'])
    window = create_window(ns, store=SettingsStore(tmp_path / 's.ini'), library=AvatarLibrary(tmp_path / 'a'),
                           camera_lister=lambda: cams)
    assert window.session.capture.camera_size == (800, 600)   # asked of the camera chosen below
    qtbot.addWidget(window)
    window.show()
    wait_frames(qtbot, window)
    combo = window.controls.camera_combo
    texts = [combo.itemText(i) for i in range(combo.count())]
    assert 'Studio Cam  (7)' in texts and 'Video file as camera…' in texts
    combo.setCurrentIndex(texts.index('Studio Cam  (7)'))
    combo.activated.emit(combo.currentIndex())
    assert window.session.capture.input == '7' and window.session.prefs.source_name == 'Studio Cam'
    # /dev/video7 does not exist here: the engine says so and the window offers the video file instead
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=FRAME_TIMEOUT_MS)
    assert 'camera 7' in window.banner.label.text()
    window.close()


def test_remove_moves_a_user_avatar_aside_and_switches_to_another(qtbot, make_window, tmp_path, shared_dir,
                                                                  monkeypatch):
    from PyQt6.QtWidgets import QMessageBox
    window = make_window()
    wait_frames(qtbot, window)
    window.add_avatar_files([shared_dir / 'data' / 'avatars' / 'mona_lisa.png'])
    qtbot.waitUntil(lambda: shown(window)[0] == 'user:mona_lisa.png', timeout=FRAME_TIMEOUT_MS)
    assert window.gallery.remove_button.isEnabled()
    monkeypatch.setattr(QMessageBox, 'question', lambda *a, **k: QMessageBox.StandardButton.Yes)  # the user's "Yes"
    qtbot.mouseClick(window.gallery.remove_button, Qt.MouseButton.LeftButton)
    assert not (tmp_path / 'avatars' / 'mona_lisa.png').exists()
    assert (tmp_path / 'avatars' / '.removed' / 'mona_lisa.png').is_file(), 'removed avatars are recoverable'
    assert [e.key for e in window.gallery.entries()] == ['bundled:astronaut']
    qtbot.waitUntil(lambda: shown(window)[0] == 'bundled:astronaut', timeout=FRAME_TIMEOUT_MS)
    assert not window.gallery.remove_button.isEnabled(), 'bundled avatars cannot be removed'


def test_engine_that_cannot_start_leaves_a_usable_window(qtbot, make_window, tmp_path):
    window = make_window('--checkpoint', str(tmp_path / 'missing.pth.tar'))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=FRAME_TIMEOUT_MS)
    assert window.session.engine is None
    assert 'checkpoint not found' in window.banner.label.text() and window.banner.button.text() == 'Retry'
    assert 'checkpoint not found' in window.status_panel.notice_label.text()
    # controls still work and are kept for when the engine starts
    window.controls.mirror_output_check.setChecked(True)
    assert window.session.settings.mirror_output is True
    window.pick_avatar_number(1)
    window.calibrate()
    assert 'not running' in window.status_panel.notice_label.text()
