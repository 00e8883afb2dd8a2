""""Model runs on: this computer / a server": the window's switch for ``--remote``.

The choice goes to the session as a model change (``remote`` = the server's ws:// URL, or '' for this
computer); the engine rebuilds its model and keeps the camera and the avatar. The server's token comes from
``--token-file``, ``$FOMM_LIVE_TOKEN`` or the token file a server created on this machine.
"""
from __future__ import annotations

from typing import Any

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

DEFAULT_URL = 'ws://127.0.0.1:8765'


class ModelLocation(QGroupBox):
    changed = pyqtSignal(dict)   # {'remote': URL or ''}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__('Model runs on', parent)
        self.where_combo = QComboBox()
        self.where_combo.addItem('this computer', 'here')
        self.where_combo.addItem('a model server', 'server')
        self.url_edit = QLineEdit(DEFAULT_URL)
        self.url_edit.setPlaceholderText('ws://HOST:8765 or wss://HOST/PATH')
        self.url_edit.setToolTip('Start the server with: python main.py serve (see README, "Remote model server")')
        self.apply_button = QPushButton('Connect')
        self.message_label = QLabel('')
        self.message_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.url_edit, 1)
        row.addWidget(self.apply_button)
        v = QVBoxLayout(self)
        v.addWidget(self.where_combo)
        v.addLayout(row)
        v.addWidget(self.message_label)
        self.where_combo.activated.connect(lambda _: self._on_where())
        self.apply_button.clicked.connect(self.apply)
        self.url_edit.returnPressed.connect(self.apply)
        self._sync()

    def set_model(self, model: Any) -> None:
        """Show a ``ModelOptions``' ``remote``."""
        remote = getattr(model, 'remote', None) or ''
        self.where_combo.setCurrentIndex(1 if remote else 0)
        if remote:
            self.url_edit.setText(remote.rstrip('/'))
        self.message_label.setText('')
        self._sync()

    def _sync(self) -> None:
        server = self.where_combo.currentData() == 'server'
        self.url_edit.setEnabled(server)
        self.apply_button.setEnabled(server)

    def _on_where(self) -> None:
        self._sync()
        if self.where_combo.currentData() == 'here':
            self.changed.emit({'remote': ''})

    def apply(self) -> None:
        """Check the address and ask for the server (the engine connects; failures come back as notices)."""
        from live.remote.client import check_url
        try:
            url = check_url(self.url_edit.text())
        except ValueError as exc:
            self.message_label.setText(str(exc).replace('--remote', 'the address'))
            return
        self.message_label.setText(f'connecting to {url}…')
        self.changed.emit({'remote': url})

    def show_link(self, text: str, problem: bool) -> None:
        self.message_label.setStyleSheet('color: #b26a00' if problem else '')
        self.message_label.setText(text)
