"""The main window: camera view and animated avatar side by side, avatar gallery, controls, status.

The engine runs on its own threads; its listener only pushes into a :class:`FrameBridge`, which delivers
the newest frame to the GUI thread. Everything the user changes goes to the engine at once (settings) or
by restarting it (backend, device, precision), and is remembered through :class:`SettingsStore`.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QStandardPaths, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QShortcut
from PyQt6.QtWidgets import (QFileDialog, QFrame, QHBoxLayout, QLabel, QMainWindow, QMessageBox, QPushButton,
                             QScrollArea, QSplitter, QVBoxLayout, QWidget)

from .avatar_gallery import AvatarGallery, image_paths_from_mime
from .avatar_library import AvatarEntry, AvatarLibrary, AvatarLibraryError
from .bridge import FrameBridge
from .controls import ControlsPanel
from .help_dialog import HelpDialog
from .settings_store import AppPrefs, SettingsStore
from .status_panel import StatusPanel, camera_problem
from .video_view import VideoView

log = logging.getLogger(__name__)

VIDEO_FILTER = 'Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v *.gif);;All files (*)'
IMAGE_FILTER = 'Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff)'
STATS_INTERVAL_MS = 500
CROP_STEP = 0.05
ZOOM_STEP = 0.05
OVERLAY_STEP = 0.1

EngineFactory = Callable[[Any, Any], Any]   # (EngineOptions, EngineSettings) -> Engine


def _default_engine_factory(options: Any, settings: Any) -> Any:
    from live.engine import Engine
    return Engine(options, settings)


def _default_camera_lister() -> list[Any]:
    from live.cameras import list_cameras
    return list_cameras()


class Banner(QFrame):
    """A problem that needs the user (no camera, engine failed), with an optional action button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setStyleSheet('Banner { background: #fff3cd; border: 1px solid #e0c060; border-radius: 4px; }'
                           'QLabel { color: #4a3b00; }')
        self.label = QLabel('')
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.button = QPushButton('')
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 8, 4)
        row.addWidget(self.label, 1)
        row.addWidget(self.button)
        self._action: Callable[[], None] | None = None
        self.button.clicked.connect(lambda: self._action() if self._action else None)
        self.hide()

    def show_message(self, text: str, action_text: str = '', action: Callable[[], None] | None = None) -> None:
        self.label.setText(text)
        self._action = action
        self.button.setText(action_text)
        self.button.setVisible(bool(action_text))
        self.show()


class MainWindow(QMainWindow):
    _engine_prepared = pyqtSignal(object)   # (engine, entry, AvatarInfo | None, error | None) from the start thread

    def __init__(self, options: Any, settings: Any, prefs: AppPrefs, store: SettingsStore,
                 library: AvatarLibrary, *, engine_factory: EngineFactory | None = None,
                 camera_lister: Callable[[], list[Any]] | None = None, stats_interval_ms: int = STATS_INTERVAL_MS):
        """``options``/``settings``: EngineOptions/EngineSettings to start with (CLI and remembered values
        already merged); ``engine_factory`` and ``camera_lister`` default to the real engine and cameras."""
        super().__init__()
        self.options = options
        self.settings = settings          # the local copy; the engine's own copy wins while it runs
        self.prefs = prefs
        self.store = store
        self.library = library
        self.engine: Any = None
        self.engine_error: str | None = None
        self._engine_factory = engine_factory or _default_engine_factory
        self._camera_lister = camera_lister or _default_camera_lister
        self._bridge: FrameBridge | None = None
        self._calibrate_pending = False
        self._was_calibrated = False
        self._seen_notices: set[str] = set()
        self._cameras: list[Any] = []
        self.last_result: Any = None
        self.current_avatar_key: str | None = None   # the avatar the engine animates
        self.avatar_info: Any = None                   # its AvatarInfo (face crop, warnings)
        self.engine_ready = False
        self.help_dialog: HelpDialog | None = None
        self._cancel_start: threading.Event | None = None
        self._start_thread: threading.Thread | None = None
        self._vcam_after_start: tuple[int, int, int] | None = None
        self._engine_prepared.connect(self._on_engine_prepared, Qt.ConnectionType.QueuedConnection)
        self.frames_received = 0

        self.setWindowTitle('fomm-live')
        self.setAcceptDrops(True)
        self._build_ui()
        self._shortcut_table = self._install_shortcuts()
        self._restore_geometry()

        self.controls.set_settings(self.settings)
        self.controls.set_options(options.backend, options.device, options.dtype)
        self.controls.set_view(prefs.show_crop_box, prefs.show_keypoints)
        self.controls.set_vcam(prefs.vcam_resolution, prefs.vcam_fps)
        self.camera_view.show_crop_box = prefs.show_crop_box
        self.camera_view.show_keypoints = prefs.show_keypoints
        self.refresh_cameras()
        self.refresh_avatars(select=prefs.avatar)

        self._stats_timer = QTimer(self)
        self._stats_timer.timeout.connect(self.refresh_status)
        self._stats_timer.start(stats_interval_ms)
        self.start_engine()

    # == UI ==============================================================================================
    def _build_ui(self) -> None:
        self.camera_view = VideoView('Camera', 'Waiting for the camera…')
        self.avatar_view = VideoView('Avatar', 'Waiting for the first animated frame…')
        self.banner = Banner()
        self.status_panel = StatusPanel()
        self.gallery = AvatarGallery()
        self.controls = ControlsPanel()

        views = QHBoxLayout()
        views.addWidget(self.camera_view, 1)
        views.addWidget(self.avatar_view, 1)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(6, 6, 6, 6)
        lv.addWidget(self.banner)
        lv.addLayout(views, 1)
        lv.addWidget(self.status_panel)
        lv.addWidget(self.gallery)

        scroll = QScrollArea()
        scroll.setWidget(self.controls)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(self.controls.sizeHint().width() + 24)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(scroll)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 0)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([900, 380])
        self.setCentralWidget(splitter)
        self.resize(1280, 800)

        c = self.controls
        c.settings_changed.connect(self.apply_settings)
        c.calibrate_clicked.connect(self.calibrate)
        c.options_changed.connect(lambda opts: self.restart_engine(**opts))
        c.camera_chosen.connect(self.use_camera)
        c.video_file_requested.connect(self.choose_video_file)
        c.refresh_cameras_requested.connect(self.refresh_cameras)
        c.view_changed.connect(self.set_view_option)
        c.vcam_start_requested.connect(self.start_virtual_camera)
        c.vcam_stop_requested.connect(self.stop_virtual_camera)
        g = self.gallery
        g.avatar_clicked.connect(self.use_avatar)
        g.files_dropped.connect(self.add_avatar_files)
        g.add_requested.connect(self.choose_avatar_files)
        g.remove_requested.connect(self.remove_avatar)
        g.step_requested.connect(self.step_avatar)

    def _install_shortcuts(self) -> list[tuple[str, str]]:
        """Registers every shortcut and returns the (keys, action) rows the help dialog shows."""
        s = self.controls
        table: list[tuple[Sequence[str], str, Callable[[], None]]] = [
            (('C', 'X'), 'Calibrate: the next frame becomes the reference pose', self.calibrate),
            (('F',), 'Auto-calibrate on/off', lambda: s.auto_calibrate_check.toggle()),
            (('[', ']'), 'Avatar overlay weaker / stronger (to match poses)', None),
            (('A', 'D'), 'Previous / next avatar', None),
            ((str(i) for i in range(1, 10)), 'Pick avatar 1-9', None),
            (('Ctrl+O',), 'Add an avatar from a file (or drop image files on the window)', self.choose_avatar_files),
            (('0',), 'Passthrough on/off (send the camera instead of the avatar)',
             lambda: s.passthrough_check.toggle()),
            (('R',), 'Mirror the preview on/off', lambda: s.mirror_preview_check.toggle()),
            (('T',), 'Mirror the output on/off', lambda: s.mirror_output_check.toggle()),
            (('O',), 'Show keypoints on/off', lambda: s.show_keypoints_check.toggle()),
            (('B',), 'Show the crop box on/off', lambda: s.show_crop_box_check.toggle()),
            (('W', 'S'), 'Crop zoom in / out', None),
            (('U', 'J', 'H', 'K'), 'Move the crop up / down / left / right', None),
            (('V',), 'Start / stop the virtual camera', self.toggle_virtual_camera),
            (('Ctrl+Shift+O',), 'Use a video file as the camera', self.choose_video_file),
            (('F11',), 'Full screen on/off', self.toggle_full_screen),
            (('F1',), 'This help', self.show_help),
            (('Ctrl+Q',), 'Quit', self.close),
        ]
        pairs: dict[str, Callable[[], None]] = {
            '[': lambda: self.nudge_setting('overlay_alpha', -OVERLAY_STEP, 0.0, 1.0),
            ']': lambda: self.nudge_setting('overlay_alpha', OVERLAY_STEP, 0.0, 1.0),
            'A': lambda: self.step_avatar(-1), 'D': lambda: self.step_avatar(1),
            'W': lambda: self.nudge_setting('crop_zoom', ZOOM_STEP, 0.5, 3.0),
            'S': lambda: self.nudge_setting('crop_zoom', -ZOOM_STEP, 0.5, 3.0),
            'U': lambda: self.nudge_offset(0, -CROP_STEP), 'J': lambda: self.nudge_offset(0, CROP_STEP),
            'H': lambda: self.nudge_offset(-CROP_STEP, 0), 'K': lambda: self.nudge_offset(CROP_STEP, 0),
        }
        pairs.update({str(i): (lambda i=i: self.pick_avatar_number(i)) for i in range(1, 10)})
        rows = []
        self.shortcuts: dict[str, QShortcut] = {}
        for keys, text, action in table:
            keys = list(keys)
            for key in keys:
                sc = QShortcut(QKeySequence(key), self)
                sc.setContext(Qt.ShortcutContext.WindowShortcut)
                sc.activated.connect(action or pairs[key])
                self.shortcuts[key] = sc
            shown = '1 – 9' if keys[0] == '1' else ' / '.join(keys)
            rows.append((shown, text))
        return rows

    def _restore_geometry(self) -> None:
        geometry, state = self.store.load_geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    # == engine lifecycle ===============================================================================
    def start_engine(self) -> bool:
        """Build the engine with ``self.options`` and prepare it off the GUI thread (loading the model and
        checking the backend take seconds); on failure the window stays usable and says why."""
        self.engine_error = None
        try:
            engine = self._engine_factory(self.options, self.settings)
        except Exception as exc:  # noqa: BLE001 - any start failure must reach the user, not kill the window
            log.exception('engine failed to start')
            self._engine_failed(f'The engine could not start: {exc}')
            return False
        self.engine = engine
        bridge = FrameBridge(self)
        bridge.frame_ready.connect(self._on_frame)
        engine.add_listener(bridge.push)
        self._bridge = bridge
        self.engine_ready = False
        self._cancel_start = cancel = threading.Event()
        entry = self.gallery.current_entry()
        self.avatar_view.clear()
        self.avatar_view.set_placeholder('Loading the model and checking the backend…')
        self.status_panel.runtime_label.setText('loading the model…')
        self._start_thread = threading.Thread(target=self._prepare_engine, args=(engine, entry, cancel),
                                              name='fomm-gui-start', daemon=True)
        self._start_thread.start()
        return True

    def _prepare_engine(self, engine: Any, entry: AvatarEntry | None, cancel: threading.Event) -> None:
        """Worker thread: the slow part of start-up; the result goes back through a queued signal."""
        info, error = None, None
        try:
            if entry is not None:
                info = engine.set_avatar(entry.source())
            if not cancel.is_set():
                engine.start()
        except Exception as exc:  # noqa: BLE001 - reported in the window
            log.exception('engine failed to start')
            error = f'The engine could not start: {exc}'
        if cancel.is_set():  # the window moved on (restart, close) while this engine was loading
            engine.stop()
            return
        try:
            self._engine_prepared.emit((engine, entry, info, error))
        except RuntimeError:  # the window is gone
            engine.stop()

    def _on_engine_prepared(self, payload: tuple) -> None:
        engine, entry, info, error = payload
        if engine is not self.engine:
            engine.stop()
            return
        if error is not None:
            self.stop_engine()
            self._engine_failed(error)
            return
        self.engine_ready = True
        self.banner.hide()
        self.avatar_view.set_placeholder('Waiting for the first animated frame…')
        current = self.gallery.current_entry()
        if entry is not None and info is not None:
            self._show_avatar_info(entry, info)
        if current is not None and current != entry:
            self._apply_avatar(current)   # picked while the model was loading
        if self._vcam_after_start is not None:
            self.start_virtual_camera(*self._vcam_after_start)
            self._vcam_after_start = None
        self.refresh_status()

    def _engine_failed(self, message: str) -> None:
        self.engine = None
        self.engine_ready = False
        self.engine_error = message
        self.banner.show_message(message, 'Retry', self.start_engine)
        self.status_panel.show_engine_error(message)
        self.avatar_view.set_placeholder(message)

    def stop_engine(self) -> None:
        if self._cancel_start is not None:
            self._cancel_start.set()
        if self._bridge is not None:
            self._bridge.close()
            self._bridge.deleteLater()
            self._bridge = None
        self.engine_ready = False
        if self.engine is not None:
            engine, self.engine = self.engine, None
            self.settings = engine.settings
            engine.stop()   # also stops its virtual camera

    def restart_engine(self, **option_changes: Any) -> bool:
        """New backend / device / precision: the engine is rebuilt; the virtual camera comes back if it was on."""
        vcam_was_on = False
        if self.engine is not None:
            vcam_was_on = self.engine.virtual_camera_status().state == 'on'
        self.stop_engine()
        self.options = dataclasses.replace(self.options, **option_changes)
        for key in ('backend', 'device', 'dtype'):
            setattr(self.prefs, key, getattr(self.options, key))
        self.status_panel.show_notice(f'Restarting the engine: {self.options.backend} on {self.options.device} '
                                      f'({self.options.dtype})…', warning=False)
        if vcam_was_on:
            self._vcam_after_start = (*self.controls.vcam_resolution(), self.controls.vcam_fps_spin.value())
        return self.start_engine()

    # == frames and status =================================================================================
    def _on_frame(self, result: Any) -> None:
        self.frames_received += 1
        self.last_result = result
        box = result.crop_box if result.face_found or result.crop_box is not None else None
        self.camera_view.set_frame(result.camera, box, result.keypoints)
        # the engine blends the avatar into the driving crop (mirrored like the preview): show it in the box
        self.camera_view.set_overlay(result.driving if self.settings.overlay_alpha > 0 else None, 1.0)
        self.avatar_view.set_frame(result.output)
        if result.calibrated and (self._calibrate_pending or not self._was_calibrated):
            self._calibrate_pending = False
            self.controls.set_calibration_state(f'Calibrated at {time.strftime("%H:%M:%S")}')
        elif not result.calibrated and self._was_calibrated and not self._calibrate_pending:
            self.controls.set_calibration_state('Not calibrated (camera changed): calibrate again')
        self._was_calibrated = result.calibrated

    def refresh_status(self) -> None:
        if self.engine is None:
            return
        try:
            stats = self.engine.stats()
        except Exception as exc:  # noqa: BLE001 - a stats hiccup must not stop the GUI
            log.warning('engine.stats() failed: %s', exc)
            return
        self.status_panel.show_stats(stats)
        problem = camera_problem(stats)
        if problem:
            self.camera_view.set_placeholder(problem)
            self.banner.show_message(f'{problem}. Connect a camera and pick it under Camera, or use a video '
                                     f'file as the camera.', 'Use a video file…', self.choose_video_file)
        elif self.engine_error is None:
            self.banner.hide()
        for notice in getattr(stats, 'notices', None) or []:
            if notice not in self._seen_notices:
                self._seen_notices.add(notice)
                self.status_panel.show_notice(notice)
        status = self.engine.virtual_camera_status()
        self.controls.set_vcam_state(status.state, status.message)
        self.status_panel.show_vcam(status.state, status.message)

    # == settings ======================================================================================
    def apply_settings(self, changes: dict[str, Any]) -> None:
        """Live settings from the controls or shortcuts; reflected back into the controls."""
        if self.engine is not None:
            try:
                self.engine.update_settings(**changes)
            except (TypeError, ValueError) as exc:  # out of range: keep the previous value, say why
                self.status_panel.show_notice(f'Setting not changed: {exc}')
            self.settings = self.engine.settings
        else:
            self.settings = dataclasses.replace(self.settings, **changes)
        self.controls.set_settings(self.settings)  # shows what the engine accepted (it may clamp)

    def nudge_setting(self, name: str, step: float, low: float, high: float) -> None:
        value = min(max(getattr(self.settings, name) + step, low), high)
        self.apply_settings({name: round(value, 4)})

    def nudge_offset(self, dx: float, dy: float) -> None:
        x, y = self.settings.crop_offset
        self.apply_settings({'crop_offset': (round(min(max(x + dx, -0.5), 0.5), 4),
                                             round(min(max(y + dy, -0.5), 0.5), 4))})

    def set_view_option(self, name: str, on: bool) -> None:
        setattr(self.prefs, name, on)
        setattr(self.camera_view, name, on)
        self.camera_view.update()

    def calibrate(self) -> None:
        if self.engine is None or not self.engine_ready:
            self.status_panel.show_notice('Not calibrated: the engine is not running yet.')
            return
        self.engine.calibrate()
        self._calibrate_pending = True
        self.controls.set_calibration_state('Calibrating: hold still…')

    # == avatars =======================================================================================
    def refresh_avatars(self, select: str | None = None) -> None:
        entries = self.library.entries()
        key = select or (self.gallery.current_entry().key if self.gallery.current_entry() else None)
        if key is None or not any(e.key == key for e in entries):
            key = entries[0].key if entries else None
        self.gallery.set_entries(entries, key)
        for notice in self.library.notices:
            self.status_panel.show_notice(notice)

    def use_avatar(self, entry: AvatarEntry) -> bool:
        """Select ``entry`` in the gallery and hand it to the engine."""
        self.gallery.select_key(entry.key)
        self.prefs.avatar = entry.key
        return self._apply_avatar(entry)

    def _apply_avatar(self, entry: AvatarEntry) -> bool:
        if self.engine is None or not self.engine_ready:
            return False   # remembered in the gallery; applied once the engine is ready
        try:
            info = self.engine.set_avatar(entry.source())
        except Exception as exc:  # noqa: BLE001 - unreadable file, model error: say so, keep the old avatar
            QMessageBox.warning(self, 'Avatar not usable', f'"{entry.name}" cannot be used as an avatar:\n{exc}')
            return False
        self._show_avatar_info(entry, info)
        return True

    def _show_avatar_info(self, entry: AvatarEntry, info: Any) -> None:
        self.current_avatar_key = entry.key
        self.avatar_info = info
        self.gallery.set_face_image(entry.key, info.image)
        if not info.face_found:
            self.status_panel.show_notice(
                f'No face found in "{entry.name}": the centre of the image is used. For best results pick a '
                f'photo with one clear, front-facing face that fills much of the picture.'
                + (f' ({info.warning})' if info.warning else ''))
        elif info.warning:
            self.status_panel.show_notice(f'{entry.name}: {info.warning}')
        else:
            self.status_panel.show_notice(f'Avatar: {entry.name}', warning=False)

    def pick_avatar_number(self, number: int) -> None:
        entry = self.gallery.entry(number - 1)
        if entry is not None:
            self.use_avatar(entry)

    def step_avatar(self, step: int) -> None:
        entries = self.gallery.entries()
        if not entries:
            return
        index = (max(self.gallery.current_index(), 0) + step) % len(entries)
        self.use_avatar(entries[index])

    def choose_avatar_files(self) -> None:
        start = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
        files, _ = QFileDialog.getOpenFileNames(self, 'Add avatar photos', start, IMAGE_FILTER)
        if files:
            self.add_avatar_files([Path(f) for f in files])

    def add_avatar_files(self, paths: Sequence[Path]) -> list[AvatarEntry]:
        """File dialog and drag and drop: copy into the user folder, then use the last one added."""
        added, errors = [], []
        for path in paths:
            try:
                added.append(self.library.add(path))
            except AvatarLibraryError as exc:
                errors.append(str(exc))
        if added:
            self.refresh_avatars(select=added[-1].key)
            self.use_avatar(added[-1])
        if errors:
            QMessageBox.warning(self, 'Some files were not added', '\n'.join(errors))
        return added

    def remove_avatar(self, entry: AvatarEntry) -> None:
        answer = QMessageBox.question(
            self, 'Remove avatar', f'Remove "{entry.name}" from the gallery?\n'
            f'The file is moved to {self.library.user_dir / ".removed"}, not deleted.')
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            self.library.remove(entry)
        except (AvatarLibraryError, OSError) as exc:
            QMessageBox.warning(self, 'Avatar not removed', str(exc))
            return
        self.refresh_avatars()
        current = self.gallery.current_entry()
        if current is not None:
            self.use_avatar(current)

    # == camera ========================================================================================
    def refresh_cameras(self) -> None:
        try:
            self._cameras = list(self._camera_lister())
        except Exception as exc:  # noqa: BLE001
            log.warning('listing cameras failed: %s', exc)
            self._cameras = []
        source = self.options.source
        current = source if isinstance(source, int) else (int(source) if str(source).isdigit() else None)
        label = '' if current is not None else f'Video file: {Path(str(source)).name}'
        self.controls.set_cameras(self._cameras, current, label)

    def use_camera(self, camera: Any) -> None:
        self.prefs.source, self.prefs.source_name = str(camera.index), camera.name
        self._set_source(camera.index)

    def use_video_file(self, path: str | Path) -> None:
        self.prefs.source, self.prefs.source_name = str(path), ''
        self._set_source(str(path))

    def choose_video_file(self) -> None:
        start = str(Path(str(self.options.source)).parent) if not str(self.options.source).isdigit() else \
            QStandardPaths.writableLocation(QStandardPaths.StandardLocation.MoviesLocation)
        path, _ = QFileDialog.getOpenFileName(self, 'Use a video file as the camera', start, VIDEO_FILTER)
        if path:
            self.use_video_file(path)
        else:
            self.refresh_cameras()  # put the combo back on the current source

    def _set_source(self, source: str | int) -> None:
        self.options = dataclasses.replace(self.options, source=source)
        self.frames_received = 0
        self.camera_view.clear()
        self.camera_view.set_placeholder('Opening the camera…')
        if self.engine is not None:
            try:
                self.engine.set_source(source)
            except Exception as exc:  # noqa: BLE001 - e.g. a file that does not exist
                QMessageBox.warning(self, 'Camera not changed', str(exc))
        self.banner.hide()
        self.refresh_cameras()

    # == virtual camera ================================================================================
    def start_virtual_camera(self, width: int, height: int, fps: int) -> None:
        self._remember_source()
        self.prefs.vcam_resolution = self.controls.vcam_resolution_label()
        self.prefs.vcam_fps = fps
        if self.engine is None or not self.engine_ready:
            self._vcam_after_start = (width, height, fps)
            self.controls.set_vcam_state('off', 'starts when the engine is ready')
            return
        status = self.engine.start_virtual_camera(width=width, height=height, fps=fps)
        self.controls.set_vcam_state(status.state, status.message)
        self.status_panel.show_vcam(status.state, status.message)

    def stop_virtual_camera(self) -> None:
        if self.engine is not None:
            self.engine.stop_virtual_camera()
            status = self.engine.virtual_camera_status()
            self.controls.set_vcam_state(status.state, status.message)
            self.status_panel.show_vcam(status.state, status.message)

    def toggle_virtual_camera(self) -> None:
        if self.engine is not None and self.engine.virtual_camera_status().state == 'on':
            self.stop_virtual_camera()
        else:
            self.start_virtual_camera(*self.controls.vcam_resolution(), self.controls.vcam_fps_spin.value())

    # == misc ==========================================================================================
    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def show_help(self) -> HelpDialog:
        """Non-modal, one instance: the user can keep it open while trying the keys."""
        if self.help_dialog is None:
            self.help_dialog = HelpDialog(self._shortcut_table, self)
        self.help_dialog.show()
        self.help_dialog.raise_()
        return self.help_dialog

    def _remember_source(self) -> None:
        """Store the source in use (also one given on the command line), with the camera's name when it is one."""
        source = self.options.source
        self.prefs.source = str(source)
        if str(source).isdigit():
            cam = next((c for c in self._cameras if c.index == int(source)), None)
            self.prefs.source_name = cam.name if cam is not None else self.prefs.source_name
        else:
            self.prefs.source_name = ''

    def save_state(self) -> None:
        """Everything remembered between runs; also called on close."""
        if self.engine is not None:
            self.settings = self.engine.settings
        self._remember_source()
        self.prefs.vcam_resolution = self.controls.vcam_resolution_label()
        self.prefs.vcam_fps = self.controls.vcam_fps_spin.value()
        self.store.save_engine_settings(self.settings)
        self.store.save_prefs(self.prefs)
        self.store.save_geometry(self.saveGeometry(), self.saveState())
        self.store.sync()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if image_paths_from_mime(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        paths = image_paths_from_mime(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.add_avatar_files(paths)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        self._stats_timer.stop()
        try:
            self.save_state()
        finally:
            self.stop_engine()
            # a model still loading is cancelled; wait for it so the process never exits inside torch/mediapipe
            if self._start_thread is not None:
                self._start_thread.join(30)
        super().closeEvent(event)
