"""GUI building blocks on their own: the frame bridge, the settings store, the avatar library, the video view."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

pytest.importorskip('PyQt6.QtWidgets')
pytest.importorskip('pytestqt')

from PyQt6.QtGui import QColor, QImage  # noqa: E402

from live.gui.avatar_library import AvatarLibrary, AvatarLibraryError  # noqa: E402
from live.gui.bridge import FrameBridge  # noqa: E402
from live.gui.settings_store import AppPrefs, SettingsStore  # noqa: E402
from live.gui.video_view import VideoView  # noqa: E402


def test_bridge_delivers_only_the_newest_frame(qtbot):
    bridge = FrameBridge()
    got = []
    bridge.frame_ready.connect(got.append)
    done = threading.Event()

    def engine_thread():
        for i in range(500):
            bridge.push(i)
        done.set()

    t = threading.Thread(target=engine_thread)
    t.start()
    t.join(5)
    assert done.is_set(), 'push() must never block the engine thread'
    qtbot.waitUntil(lambda: bool(got) and got[-1] == 499, timeout=2000)
    assert len(got) < 50, 'frames piled up instead of being replaced by the newest'
    assert got == sorted(got)
    assert bridge.delivered == len(got) and bridge.dropped == 500 - len(got)
    bridge.close()
    bridge.push(1000)
    qtbot.wait(50)
    assert got[-1] == 499


@dataclass
class _Sample:
    flag: bool = True
    ratio: float = 1.0
    pair: tuple[float, float] = (0.0, 0.0)
    cap: float | None = None
    name: str = 'x'


def test_settings_store_round_trips_types_through_an_ini_file(tmp_path):
    path = tmp_path / 'settings.ini'
    store = SettingsStore(path)
    store.save_dataclass('s', _Sample(False, 2.5, (0.1, -0.2), 24.0, 'cam'))
    store.save_prefs(AppPrefs(source='2', source_name='Logitech', avatar='user:me.png', show_keypoints=True))
    store.sync()
    assert path.is_file()
    again = SettingsStore(path)
    assert again.load_dataclass('s', _Sample()) == _Sample(False, 2.5, (0.1, -0.2), 24.0, 'cam')
    prefs = again.load_prefs()
    assert (prefs.source, prefs.source_name, prefs.avatar, prefs.show_keypoints) == ('2', 'Logitech', 'user:me.png',
                                                                                     True)
    # a value of the wrong type (hand-edited file, older version) falls back to the default
    again.qsettings.setValue('s/ratio', '"fast"')
    again.qsettings.setValue('s/flag', 'not json')
    assert again.load_dataclass('s', _Sample()).ratio == 1.0
    assert again.load_dataclass('s', _Sample()).flag is True
    # a remembered value its option declaration no longer accepts keeps the default
    from live.options import Settings
    again.qsettings.setValue('engine/kp_smoothing', '7')
    again.qsettings.setValue('engine/crop_zoom', '2.0')
    loaded = again.load_dataclass('engine', Settings())
    assert loaded.kp_smoothing == 0.0 and loaded.crop_zoom == 2.0


def _png(path, colour=(200, 30, 30), size=(40, 30)):
    Image.new('RGB', size, colour).save(path)
    return path


def test_avatar_library_copies_dedups_and_removes_recoverably(tmp_path):
    user = tmp_path / 'avatars'
    lib = AvatarLibrary(user)
    assert [e.key for e in lib.entries()] == ['bundled:astronaut']
    astronaut = lib.entries()[0].source()
    assert astronaut.shape == (512, 512, 3)

    src = _png(tmp_path / 'Me.PNG')
    entry = lib.add(src)
    assert entry.path.parent == user and entry.path.read_bytes() == src.read_bytes()
    assert src.exists(), 'the original must be left alone'
    assert lib.add(src) == entry, 'the same picture twice is one avatar'
    other = lib.add(_png(tmp_path / 'sub_me.png', (10, 200, 10)))
    (tmp_path / 'x').mkdir()
    third = lib.add(_png(tmp_path / 'x' / 'Me.png', (10, 10, 200)))
    assert third.path.name == 'Me-2.png', 'an existing avatar is never overwritten'
    assert [e.key for e in lib.entries()] == ['bundled:astronaut', 'user:Me-2.png', 'user:Me.png', 'user:sub_me.png']

    moved = lib.remove(other)
    assert moved.read_bytes() == (tmp_path / 'sub_me.png').read_bytes()
    assert 'user:sub_me.png' not in [e.key for e in lib.entries()]
    with pytest.raises(AvatarLibraryError, match='bundled'):
        lib.remove(lib.entries()[0])
    (tmp_path / 'notes.txt').write_text('hi')
    with pytest.raises(AvatarLibraryError, match='not a supported image'):
        lib.add(tmp_path / 'notes.txt')
    (tmp_path / 'broken.png').write_bytes(b'not a png')
    with pytest.raises(AvatarLibraryError, match='cannot be read'):
        lib.add(tmp_path / 'broken.png')


def test_video_view_draws_frame_crop_box_and_keypoints(qtbot):
    view = VideoView('Camera')
    qtbot.addWidget(view)
    view.resize(400, 300)
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[:] = (0, 0, 255)
    view.show_keypoints = True
    view.set_frame(frame, crop_box=(100, 50, 300, 250), keypoints=np.array([[0.0, 0.0]]))
    image: QImage = view.grab().toImage()
    assert view.image_rect().width() == pytest.approx(400)
    assert QColor(image.pixel(20, 150)).blue() > 200                  # the frame
    edge = QColor(image.pixel(100, 150))
    assert edge.green() > 150 and edge.blue() < 150                    # the crop box (green)
    centre = QColor(image.pixel(200, 150))
    assert centre.red() > 200 and centre.green() > 150                 # the keypoint at crop centre (yellow)
    assert view.frames_shown == 1
    view.set_overlay(np.full((64, 64, 3), 255, np.uint8), 0.5)
    grey = QColor(view.grab().toImage().pixel(150, 100))
    assert 100 < grey.red() < 160 and grey.blue() > 200                # avatar blended over the crop
