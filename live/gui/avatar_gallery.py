"""Thumbnail strip of avatars: click or keys 1-9 to pick, Add… or drag and drop image files to add.

The widget only shows entries and reports what the user did; the main window decides what happens
(copying into the library, handing the image to the engine), so the file dialog and drag and drop
share one code path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt6.QtCore import QMimeData, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QDragEnterEvent, QDropEvent, QIcon, QImage, QPainter, QPixmap
from PyQt6.QtWidgets import (QAbstractItemView, QHBoxLayout, QLabel, QListView, QListWidget, QListWidgetItem,
                             QPushButton, QVBoxLayout, QWidget)

from .avatar_library import IMAGE_SUFFIXES, AvatarEntry
from .video_view import qimage_from_rgb

THUMB = 72
KEY_ROLE = Qt.ItemDataRole.UserRole


def image_paths_from_mime(mime: QMimeData) -> list[Path]:
    """Local image files among dropped URLs (other files and remote URLs are ignored)."""
    if not mime.hasUrls():
        return []
    paths = [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile()]
    return [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]


def _square_thumb(image: QImage, number: int | None) -> QIcon:
    """Centre-cropped square thumbnail with the hotkey number in a corner."""
    side = min(image.width(), image.height())
    image = image.copy((image.width() - side) // 2, (image.height() - side) // 2, side, side)
    pix = QPixmap.fromImage(image.scaled(THUMB, THUMB, Qt.AspectRatioMode.IgnoreAspectRatio,
                                         Qt.TransformationMode.SmoothTransformation))
    if number is not None:
        p = QPainter(pix)
        p.fillRect(0, 0, 18, 18, QColor(0, 0, 0, 170))
        p.setPen(QColor(255, 255, 255))
        p.drawText(0, 0, 18, 18, Qt.AlignmentFlag.AlignCenter, str(number))
        p.end()
    return QIcon(pix)


class AvatarGallery(QWidget):
    avatar_clicked = pyqtSignal(object)       # AvatarEntry
    files_dropped = pyqtSignal(list)          # list[Path]
    add_requested = pyqtSignal()
    remove_requested = pyqtSignal(object)     # AvatarEntry
    step_requested = pyqtSignal(int)          # -1 previous, +1 next

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._entries: list[AvatarEntry] = []
        self._images: dict[str, QImage] = {}
        self.setAcceptDrops(True)

        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setFlow(QListView.Flow.LeftToRight)
        self.list.setWrapping(False)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.NoDragDrop)
        self.list.setAcceptDrops(False)
        self.list.viewport().setAcceptDrops(False)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setSpacing(4)
        self.list.setFixedHeight(THUMB + 44)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.list.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keep 1-9 / A / D working as window shortcuts
        self.list.itemClicked.connect(self._on_clicked)
        self.list.currentItemChanged.connect(lambda *_: self._update_buttons())

        self.prev_button = QPushButton('◀')
        self.prev_button.setToolTip('Previous avatar (A)')
        self.next_button = QPushButton('▶')
        self.next_button.setToolTip('Next avatar (D)')
        self.add_button = QPushButton('Add…')
        self.add_button.setToolTip('Add your own avatar photo (Ctrl+O) — or drop image files here')
        self.remove_button = QPushButton('Remove')
        self.remove_button.setToolTip('Remove the selected avatar you added (bundled avatars stay)')
        for b in (self.prev_button, self.next_button):
            b.setFixedWidth(34)
        self.prev_button.clicked.connect(lambda: self.step_requested.emit(-1))
        self.next_button.clicked.connect(lambda: self.step_requested.emit(1))
        self.add_button.clicked.connect(self.add_requested)
        self.remove_button.clicked.connect(self._on_remove)

        buttons = QVBoxLayout()
        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        buttons.addLayout(nav)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)

        header = QLabel('<b>Avatars</b> — click or press 1-9; drop photos here to add')
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(header)
        row = QHBoxLayout()
        row.addWidget(self.list, 1)
        row.addLayout(buttons)
        layout.addLayout(row)
        self._update_buttons()

    # -- content -------------------------------------------------------------------------------------
    def set_entries(self, entries: list[AvatarEntry], current_key: str | None = None) -> None:
        self._entries = list(entries)
        self.list.blockSignals(True)
        self.list.clear()
        for i, entry in enumerate(self._entries):
            item = QListWidgetItem(self._icon(entry, i), entry.name)
            item.setData(KEY_ROLE, entry.key)
            tip = f'{entry.name} (bundled)' if entry.bundled else str(entry.path)
            item.setToolTip(tip + (f'\nkey {i + 1}' if i < 9 else ''))
            self.list.addItem(item)
        self.list.blockSignals(False)
        if current_key is not None:
            self.select_key(current_key)
        self._update_buttons()

    def set_face_image(self, key: str, image: np.ndarray) -> None:
        """Show the engine's face crop as the thumbnail once the avatar has been prepared."""
        self._images[key] = qimage_from_rgb(image)
        for i, entry in enumerate(self._entries):
            if entry.key == key:
                self.list.item(i).setIcon(_square_thumb(self._images[key], i + 1 if i < 9 else None))

    def entries(self) -> list[AvatarEntry]:
        return list(self._entries)

    def entry(self, index: int) -> AvatarEntry | None:
        return self._entries[index] if 0 <= index < len(self._entries) else None

    def current_index(self) -> int:
        return self.list.currentRow()

    def current_entry(self) -> AvatarEntry | None:
        return self.entry(self.current_index())

    def select_key(self, key: str) -> bool:
        for i, entry in enumerate(self._entries):
            if entry.key == key:
                self.list.setCurrentRow(i)
                self.list.scrollToItem(self.list.item(i))
                self._update_buttons()
                return True
        return False

    def item_rect_center(self, index: int):
        """Where a thumbnail is on screen (tests click it)."""
        return self.list.visualItemRect(self.list.item(index)).center()

    # -- drag and drop -------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt API
        if image_paths_from_mime(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt API
        paths = image_paths_from_mime(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.files_dropped.emit(paths)

    # -- internals -----------------------------------------------------------------------------------
    def _icon(self, entry: AvatarEntry, index: int) -> QIcon:
        image = self._images.get(entry.key)
        if image is None:
            try:
                image = QImage(str(entry.path)) if entry.path is not None else qimage_from_rgb(entry.source())
            except Exception:  # a broken bundled package must not break the gallery
                image = QImage()
            if image.isNull():
                image = QImage(THUMB, THUMB, QImage.Format.Format_RGB888)
                image.fill(QColor(90, 90, 90))
            else:  # keep a small copy only: user photos can be tens of megapixels
                image = image.scaled(2 * THUMB, 2 * THUMB, Qt.AspectRatioMode.KeepAspectRatioByExpanding,
                                     Qt.TransformationMode.SmoothTransformation)
                self._images[entry.key] = image
        return _square_thumb(image, index + 1 if index < 9 else None)

    def _on_clicked(self, item: QListWidgetItem) -> None:
        entry = self.entry(self.list.row(item))
        if entry is not None:
            self.avatar_clicked.emit(entry)

    def _on_remove(self) -> None:
        entry = self.current_entry()
        if entry is not None and not entry.bundled:
            self.remove_requested.emit(entry)

    def _update_buttons(self) -> None:
        entry = self.current_entry()
        self.remove_button.setEnabled(entry is not None and not entry.bundled)
        many = len(self._entries) > 1
        self.prev_button.setEnabled(many)
        self.next_button.setEnabled(many)
