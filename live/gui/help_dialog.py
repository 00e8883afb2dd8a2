"""F1: the keyboard shortcuts, generated from the same table that registers them, so it cannot go stale."""
from __future__ import annotations

from collections.abc import Sequence

from PyQt6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QLabel, QTableWidget,
                             QTableWidgetItem, QVBoxLayout, QWidget)

from .controls import CALIBRATION_GUIDANCE


class HelpDialog(QDialog):
    def __init__(self, shortcuts: Sequence[tuple[str, str]], parent: QWidget | None = None) -> None:
        """``shortcuts``: (keys as shown, what they do)."""
        super().__init__(parent)
        self.setWindowTitle('fomm-live — keyboard shortcuts')
        self.resize(560, 600)
        self.table = QTableWidget(len(shortcuts), 2)
        self.table.setHorizontalHeaderLabels(['Keys', 'Action'])
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for row, (keys, action) in enumerate(shortcuts):
            self.table.setItem(row, 0, QTableWidgetItem(keys))
            self.table.setItem(row, 1, QTableWidgetItem(action))
        tips = QLabel('<b>Getting a good result</b><br>' + CALIBRATION_GUIDANCE +
                      '<br>Keep your face well and evenly lit and fill the crop box with it; use crop zoom '
                      'if you sit far from the camera.')
        tips.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(tips)
        layout.addWidget(buttons)
