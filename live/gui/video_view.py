"""A widget that paints an RGB frame scaled to fit, with the face crop box and keypoints drawn on top.

Painting happens in ``paintEvent`` from the last frame given, so frames arriving faster than the screen
refreshes only replace an image reference (cheap) and Qt coalesces the repaints.
"""
from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PyQt6.QtWidgets import QSizePolicy, QWidget

Box = tuple[int, int, int, int]


def qimage_from_rgb(image: np.ndarray) -> QImage:
    """A QImage owning a copy of an HxWx3 uint8 RGB array (the engine may reuse its buffers)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {image.shape}')
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class VideoView(QWidget):
    """Shows one video stream; ``title`` is painted in a corner, ``placeholder`` when there is no frame."""

    def __init__(self, title: str, placeholder: str = 'Waiting for frames…', parent: QWidget | None = None):
        super().__init__(parent)
        self.title = title
        self._placeholder = placeholder
        self._image: QImage | None = None
        self._crop_box: Box | None = None
        self._keypoints: np.ndarray | None = None
        self._overlay: QImage | None = None
        self._overlay_alpha = 0.0
        self.show_crop_box = True
        self.show_keypoints = False
        self.frames_shown = 0
        self.setMinimumSize(240, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def sizeHint(self) -> QSize:
        return QSize(480, 360)

    def set_frame(self, image: np.ndarray | None, crop_box: Box | None = None,
                  keypoints: np.ndarray | None = None) -> None:
        self._image = None if image is None else qimage_from_rgb(image)
        self._crop_box = crop_box
        self._keypoints = keypoints
        if image is not None:
            self.frames_shown += 1
        self.update()

    def set_overlay(self, image: np.ndarray | None, alpha: float) -> None:
        """Blend ``image`` into the crop box at ``alpha`` (0 = off) so the user can line their pose up."""
        self._overlay = None if image is None or alpha <= 0 else qimage_from_rgb(image)
        self._overlay_alpha = float(alpha)
        self.update()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def clear(self) -> None:
        self._image = None
        self._crop_box = None
        self._keypoints = None
        self.update()

    def image_rect(self) -> QRectF | None:
        """Where the frame is painted: centred, aspect ratio kept."""
        if self._image is None:
            return None
        iw, ih = self._image.width(), self._image.height()
        scale = min(self.width() / iw, self.height() / ih)
        w, h = iw * scale, ih * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(24, 24, 28))
        rect = self.image_rect()
        if rect is None:
            p.setPen(QColor(200, 200, 200))
            p.drawText(self.rect().adjusted(16, 16, -16, -16),
                       Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._placeholder)
        else:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            p.drawImage(rect, self._image)
            self._paint_annotations(p, rect)
        self._paint_title(p)
        p.end()

    def _box_rect(self, rect: QRectF) -> QRectF | None:
        if self._crop_box is None:
            return None
        sx = rect.width() / self._image.width()
        sy = rect.height() / self._image.height()
        x0, y0, x1, y1 = self._crop_box
        return QRectF(rect.x() + x0 * sx, rect.y() + y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy)

    def _paint_annotations(self, p: QPainter, rect: QRectF) -> None:
        box = self._box_rect(rect)
        target = box if box is not None else rect   # keypoints live in crop coordinates
        if self._overlay is not None and box is not None:
            p.setOpacity(min(max(self._overlay_alpha, 0.0), 1.0))
            p.drawImage(box, self._overlay)
            p.setOpacity(1.0)
        if self.show_crop_box and box is not None:
            p.setPen(QPen(QColor(80, 220, 120), 2))
            p.drawRect(box)
        if self.show_keypoints and self._keypoints is not None and len(self._keypoints):
            p.setRenderHint(QPainter.RenderHint.Antialiasing)
            p.setPen(QPen(QColor(20, 20, 20), 1))
            p.setBrush(QColor(255, 200, 40))
            radius = max(2.5, min(target.width(), target.height()) / 90)
            for x, y in np.asarray(self._keypoints, dtype=float)[:, :2]:
                cx = target.x() + (x + 1) / 2 * target.width()
                cy = target.y() + (y + 1) / 2 * target.height()
                p.drawEllipse(QPointF(cx, cy), radius, radius)
            p.setBrush(Qt.BrushStyle.NoBrush)

    def _paint_title(self, p: QPainter) -> None:
        if not self.title:
            return
        font = QFont(self.font())
        font.setBold(True)
        p.setFont(font)
        metrics = p.fontMetrics()
        w = metrics.horizontalAdvance(self.title) + 12
        h = metrics.height() + 6
        p.fillRect(QRectF(6, 6, w, h), QColor(0, 0, 0, 150))
        p.setPen(QColor(240, 240, 240))
        p.drawText(QRectF(6, 6, w, h), Qt.AlignmentFlag.AlignCenter, self.title)
