"""The main window: camera view and animated avatar side by side, avatar gallery, controls, status.

It only draws and forwards: what the user asks for goes to the :class:`~live.gui.session.Session` (state and
behaviour, no widgets), and the session's events come back here on the GUI thread to update the widgets.
Frames arrive through a :class:`FrameBridge` (newest frame only, never blocking the engine).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QMimeData, QStandardPaths, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QShortcut
from PyQt6.QtWidgets import (QFileDialog, QFrame, QHBoxLayout, QLabel, QMainWindow, QMessageBox, QPushButton,
                             QScrollArea, QSplitter, QVBoxLayout, QWidget)

from fomm_model.model_store import is_checkpoint_name

from .avatar_gallery import AvatarGallery, image_paths_from_mime
from .avatar_library import AvatarEntry, AvatarLibraryError
from .bridge import FrameBridge
from .controls import ControlsPanel
from .help_dialog import HelpDialog
from .keys import KEYS, help_rows
from .model_location import ModelLocation
from .session import Session
from .status_panel import StatusPanel, camera_problem
from .video_view import VideoView

log = logging.getLogger(__name__)

VIDEO_FILTER = 'Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v *.gif);;All files (*)'
IMAGE_FILTER = 'Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff)'
MODEL_FILTER = 'Checkpoints (*.pth.tar *.pth *.pt *.tar *.ckpt);;All files (*)'
STATS_INTERVAL_MS = 500


def model_paths_from_mime(mime: QMimeData) -> list[Path]:
    """Local checkpoint files (.pth.tar, ...) among dropped URLs."""
    if not mime.hasUrls():
        return []
    return [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile() and is_checkpoint_name(u.toLocalFile())]


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
    _soon = pyqtSignal(object)   # a callable from another thread, run on the GUI thread

    def __init__(self, session_args: dict[str, Any], *, camera_lister: Callable[[], list[Any]] | None = None,
                 stats_interval_ms: int = STATS_INTERVAL_MS):
        """``session_args``: the :class:`Session` arguments besides its callbacks (options, prefs, store,
        library, optionally ``engine_factory``)."""
        super().__init__()
        self._soon.connect(lambda fn: fn(), Qt.ConnectionType.QueuedConnection)
        self._bridge = FrameBridge(self)
        self._bridge.frame_ready.connect(self._on_frame)
        self.session = Session(**session_args, on_event=self._on_event, on_frame=self._bridge.push,
                               call_soon=self._soon.emit)
        self._camera_lister = camera_lister or _default_camera_lister
        self._cameras: list[Any] = []
        self._calibrate_pending = False
        self._was_calibrated = False
        self._seen_notices: set[str] = set()
        self.help_dialog: HelpDialog | None = None
        self.last_result: Any = None
        self.frames_received = 0

        self.setWindowTitle('fomm-live')
        self.setAcceptDrops(True)
        self._build_ui()
        self._install_shortcuts()
        geometry, state = self.session.store.load_geometry()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)
        s = self.session
        self.controls.set_settings(s.settings)
        self.refresh_models()
        self.controls.set_model(s.model)
        self.model_location.set_model(s.model)
        self.controls.set_view(s.prefs.show_crop_box, s.prefs.show_keypoints)
        self.controls.set_vcam(s.output.vcam_size, s.output.vcam_fps)
        self.camera_view.show_crop_box, self.camera_view.show_keypoints = s.prefs.show_crop_box, s.prefs.show_keypoints
        self.refresh_cameras()
        self.refresh_avatars()
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
        self.model_location = ModelLocation()
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
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(self.model_location)
        rv.addWidget(scroll, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([900, 380])
        self.setCentralWidget(splitter)
        self.resize(1280, 800)

        c, s = self.controls, self.session
        c.settings_changed.connect(self.apply_settings)
        c.calibrate_clicked.connect(self.calibrate)
        c.model_changed.connect(lambda changes: s.change_model(**changes))
        self.model_location.changed.connect(lambda changes: s.change_model(**changes))
        c.model_picked.connect(s.use_model)
        c.model_install_requested.connect(self.choose_model_file)
        c.camera_chosen.connect(lambda cam: self._set_source(cam.index, cam.name))
        c.video_file_requested.connect(self.choose_video_file)
        c.refresh_cameras_requested.connect(self.refresh_cameras)
        c.view_changed.connect(self.set_view_option)
        c.vcam_start_requested.connect(s.start_virtual_camera)
        c.vcam_stop_requested.connect(s.stop_virtual_camera)
        g = self.gallery
        g.avatar_clicked.connect(self.use_avatar)
        g.files_dropped.connect(self.add_avatar_files)
        g.add_requested.connect(self.choose_avatar_files)
        g.remove_requested.connect(self.remove_avatar)
        g.step_requested.connect(self.step_avatar)

    def _install_shortcuts(self) -> None:
        self.shortcuts: dict[str, QShortcut] = {}
        for keys, _, action in KEYS:
            for key in keys:
                sc = QShortcut(QKeySequence(key), self)
                sc.setContext(Qt.ShortcutContext.WindowShortcut)
                sc.activated.connect(self._action(action, key))
                self.shortcuts[key] = sc

    def _action(self, action: str, key: str) -> Callable[[], None]:
        """The callable behind a KEYS action name ('toggle:passthrough', 'nudge:crop_zoom:0.05:0.5:3', ...)."""
        kind, *args = action.split(':')
        s = self.session
        if kind == 'toggle':
            return lambda: self._show_settings(s.toggle(args[0]))
        if kind == 'nudge':
            return lambda: self._show_settings(s.nudge(args[0], *map(float, args[1:])))
        if kind == 'mouth_gain':
            return lambda: self._show_settings(s.nudge_mouth_gain(float(args[0])))
        if kind == 'offset':
            return lambda: self._show_settings(s.nudge_offset(*map(float, args)))
        if kind == 'view':
            return lambda: self.set_view_option(args[0], not getattr(s.prefs, args[0]))
        if kind == 'avatar_step':
            return lambda: self.step_avatar(int(args[0]))
        if kind == 'avatar_number':
            return lambda: self.pick_avatar_number(int(key))
        return {'calibrate': self.calibrate, 'add_avatar': self.choose_avatar_files,
                'toggle_virtual_camera': self.toggle_virtual_camera, 'choose_video_file': self.choose_video_file,
                'toggle_full_screen': self.toggle_full_screen, 'show_help': self.show_help,
                'close': self.close}[kind]

    # == engine and session events ========================================================================
    def start_engine(self) -> None:
        self.avatar_view.clear()
        self.avatar_view.set_placeholder('Loading the model and checking the backend…')
        self.status_panel.runtime_label.setText('loading the model…')
        self.banner.hide()
        self.session.start()

    def _on_event(self, name: str, payload: Any) -> None:
        if name == 'engine':
            self.banner.hide()
            self.avatar_view.set_placeholder('Waiting for the first animated frame…')
            self.status_panel.runtime_label.setText(payload)
            self.controls.set_model(self.session.model)
            self.model_location.set_model(self.session.model)
        elif name == 'engine_failed':
            self.banner.show_message(payload, 'Retry', self.start_engine)
            self.status_panel.show_engine_error(payload)
            self.avatar_view.set_placeholder('The engine is not running.')
        elif name == 'avatar':
            self._show_avatar_info(*payload)
        elif name == 'avatar_failed':
            entry, message = payload
            QMessageBox.warning(self, 'Avatar not usable', f'"{entry.name}" cannot be used as an avatar:\n{message}')
        elif name == 'vcam':
            self.controls.set_vcam_state(payload.state, payload.message)
            self.status_panel.show_vcam(payload.state, payload.message)
        elif name == 'models':
            self.refresh_models()
        elif name == 'notice':
            text, warning = payload
            self.status_panel.show_notice(text, warning)
            self.controls.set_model(self.session.model)
            self.model_location.set_model(self.session.model)

    def _on_frame(self, result: Any) -> None:
        self.frames_received += 1
        self.last_result = result
        self.camera_view.set_frame(result.camera, result.crop_box, result.keypoints)
        # the engine blends the avatar into the driving crop (mirrored like the preview): show it in the box
        self.camera_view.set_overlay(result.driving if self.session.settings.overlay_alpha > 0 else None, 1.0)
        self.avatar_view.set_frame(result.output)
        if result.calibrated and (self._calibrate_pending or not self._was_calibrated):
            self._calibrate_pending = False
            self.controls.set_calibration_state(f'Calibrated at {time.strftime("%H:%M:%S")}')
        elif self._calibrate_pending and result.status:
            self.controls.set_calibration_state(f'Calibrating: {result.status}')
        elif not result.calibrated and self._was_calibrated and not self._calibrate_pending:
            self.controls.set_calibration_state('Not calibrated (camera changed): calibrate again')
        self._was_calibrated = result.calibrated

    def refresh_status(self) -> None:
        engine = self.session.engine
        if engine is None:
            return
        stats = engine.stats()
        self.status_panel.show_stats(stats)
        self.controls.show_mouth_gain(stats.mouth_gain)
        problem = camera_problem(stats)
        if problem:
            self.camera_view.set_placeholder(problem)
            self.banner.show_message(f'{problem}. Connect a camera and pick it under Camera, or use a video '
                                     f'file as the camera.', 'Use a video file…', self.choose_video_file)
        elif self.session.error is None:
            self.banner.hide()
        self._show_link(stats)
        for notice in stats.notices:
            if notice not in self._seen_notices:
                self._seen_notices.add(notice)
                self.status_panel.show_notice(notice)
        status = engine.virtual_camera_status()
        self.controls.set_vcam_state(status.state, status.message)
        self.status_panel.show_vcam(status.state, status.message)

    def _show_link(self, stats: Any) -> None:
        """With --remote: the link (round trip, server model time, device); when the server is lost, say so and
        offer the local model - the engine never switches by itself."""
        state, text = getattr(stats, 'remote_state', ''), getattr(stats, 'remote', '')
        self.model_location.show_link(text, state not in ('', 'connected'))
        if state in ('reconnecting', 'refused'):
            self.banner.show_message(f'{text}. The last frame is held.', 'Run the model on this computer',
                                     lambda: self.session.change_model(remote=''))

    # == settings and calibration =========================================================================
    def apply_settings(self, changes: dict[str, Any]) -> None:
        """Live settings from the controls; what was accepted is shown back in the controls."""
        try:
            self._show_settings(self.session.apply_settings(**changes))
        except (TypeError, ValueError) as exc:   # out of range: keep the previous value, say why
            self.status_panel.show_notice(f'Setting not changed: {exc}')
            self._show_settings(self.session.settings)

    def _show_settings(self, settings: Any) -> None:
        self.controls.set_settings(settings)

    def set_view_option(self, name: str, on: bool) -> None:
        setattr(self.session.prefs, name, on)
        setattr(self.camera_view, name, on)
        self.controls.set_view(self.session.prefs.show_crop_box, self.session.prefs.show_keypoints)
        self.camera_view.update()

    def calibrate(self) -> None:
        if self.session.calibrate():
            self._calibrate_pending = True
            self.controls.set_calibration_state('Calibrating: hold still…')

    # == avatars ==========================================================================================
    def refresh_avatars(self) -> None:
        library = self.session.library
        current = self.session.avatar
        self.gallery.set_entries(library.entries(), current.key if current else None)
        for notice in library.notices:
            self.status_panel.show_notice(notice)

    def use_avatar(self, entry: AvatarEntry) -> None:
        self.gallery.select_key(entry.key)
        self.session.use_avatar(entry)

    def _show_avatar_info(self, entry: AvatarEntry, info: Any) -> None:
        self.gallery.set_face_image(entry.key, info.image)
        if not info.face_found:
            self.status_panel.show_notice(
                f'No face found in "{entry.name}": the centre of the image is used. For best results pick a '
                f'photo with one clear, front-facing face that fills much of the picture.')
        else:
            self.status_panel.show_notice(f'Avatar: {entry.name}', warning=False)

    def pick_avatar_number(self, number: int) -> None:
        entry = self.gallery.entry(number - 1)
        if entry is not None:
            self.use_avatar(entry)

    def step_avatar(self, step: int) -> None:
        entries = self.gallery.entries()
        if entries:
            self.use_avatar(entries[(max(self.gallery.current_index(), 0) + step) % len(entries)])

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
                added.append(self.session.library.add(path))
            except AvatarLibraryError as exc:
                errors.append(str(exc))
        if added:
            self.session.avatar = added[-1]
            self.refresh_avatars()
            self.use_avatar(added[-1])
        if errors:
            QMessageBox.warning(self, 'Some files were not added', '\n'.join(errors))
        return added

    def remove_avatar(self, entry: AvatarEntry) -> None:
        library = self.session.library
        answer = QMessageBox.question(self, 'Remove avatar', f'Remove "{entry.name}" from the gallery?\nThe file '
                                      f'is moved to {library.user_dir / ".removed"}, not deleted.')
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            library.remove(entry)
        except (AvatarLibraryError, OSError) as exc:
            QMessageBox.warning(self, 'Avatar not removed', str(exc))
            return
        self.session.avatar = next(iter(library.entries()), None)
        self.refresh_avatars()
        if self.session.avatar is not None:
            self.use_avatar(self.session.avatar)

    # == models ===========================================================================================
    def refresh_models(self) -> None:
        self.controls.set_models(self.session.models(), self.session.model.checkpoint)

    def choose_model_file(self) -> None:
        start = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DownloadLocation)
        path, _ = QFileDialog.getOpenFileName(self, 'Install a model checkpoint', start, MODEL_FILTER)
        if path:
            self.session.install_model(path)

    # == camera ===========================================================================================
    def refresh_cameras(self) -> None:
        try:
            self._cameras = list(self._camera_lister())
        except Exception as exc:  # noqa: BLE001 - listing must never break the window
            log.warning('listing cameras failed: %s', exc)
            self._cameras = []
        source = self.session.capture.input
        current = int(source) if str(source).isdigit() else None
        self.controls.set_cameras(self._cameras, current, '' if current is not None else
                                  f'Video file: {Path(str(source)).name}')

    def choose_video_file(self) -> None:
        source = str(self.session.capture.input)
        start = str(Path(source).parent) if not source.isdigit() else \
            QStandardPaths.writableLocation(QStandardPaths.StandardLocation.MoviesLocation)
        path, _ = QFileDialog.getOpenFileName(self, 'Use a video file as the camera', start, VIDEO_FILTER)
        if path:
            self._set_source(path)
        else:
            self.refresh_cameras()  # put the combo back on the current source

    def _set_source(self, source: str | int, camera_name: str = '') -> None:
        self.frames_received = 0
        self.camera_view.clear()
        self.camera_view.set_placeholder('Opening the camera…')
        self.banner.hide()
        self.session.use_source(source, camera_name)
        self.refresh_cameras()

    # == virtual camera and window ========================================================================
    def toggle_virtual_camera(self) -> None:
        if self.session.virtual_camera_on():
            self.session.stop_virtual_camera()
        else:
            self.session.start_virtual_camera(*self.controls.vcam_resolution(), self.controls.vcam_fps())

    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def show_help(self) -> HelpDialog:
        """Non-modal, one instance: the user can keep it open while trying the keys."""
        if self.help_dialog is None:
            self.help_dialog = HelpDialog(help_rows(), self)
        self.help_dialog.show()
        self.help_dialog.raise_()
        return self.help_dialog

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if image_paths_from_mime(event.mimeData()) or model_paths_from_mime(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        """Images become avatars; checkpoints are installed as models once they load (then used)."""
        images, models = image_paths_from_mime(event.mimeData()), model_paths_from_mime(event.mimeData())
        if images or models:
            event.acceptProposedAction()
        for path in models:
            self.session.install_model(path)
        if images:
            self.add_avatar_files(images)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        self._stats_timer.stop()
        self._bridge.close()
        try:
            self.session.set_vcam_format(self.controls.vcam_resolution(), self.controls.vcam_fps())
            self.session.save()
            self.session.store.save_geometry(self.saveGeometry(), self.saveState())
            self.session.store.sync()
        finally:
            self.session.close_engine()
        super().closeEvent(event)
