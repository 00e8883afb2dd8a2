"""The strip under the videos: frame rate, per-stage latency, what runs where, camera and notices.

``EngineStats`` is read with ``getattr`` defaults so a field the engine renames later shows as "—"
instead of crashing the window.
"""
from __future__ import annotations

from typing import Any

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QGridLayout, QLabel, QWidget

STAGES = ('capture', 'crop', 'model', 'output', 'total')


def _stage_text(stats: Any) -> str:
    """'capture 3 · crop 5 · model 80 · output 2  =  total 95 ms (p95 120)' from ``stats.stages``
    (name -> object with ``mean_ms``/``p95_ms``)."""
    stages = getattr(stats, 'stages', None) or {}
    mean = {k: float(getattr(v, 'mean_ms', 0.0)) for k, v in stages.items()}
    p95 = {k: float(getattr(v, 'p95_ms', 0.0)) for k, v in stages.items()}
    if not mean or not any(mean.values()):
        return 'latency —'
    parts = [f'{name} {mean[name]:.0f}' for name in STAGES if name in mean and name != 'total']
    parts += [f'{name} {v:.0f}' for name, v in mean.items() if name not in STAGES]
    text = ' · '.join(parts)
    if 'total' in mean:
        return text + f"  =  total {mean['total']:.0f} ms (p95 {p95['total']:.0f})"
    return text + ' ms'


PROBLEM_STATES = {'reconnecting': 'Camera not available', 'ended': 'The video file ended',
                  'unavailable': 'Camera not available', 'error': 'Camera error'}


def camera_problem(stats: Any) -> str | None:
    """A message when the camera is not delivering (not found, lost, file ended), else None."""
    state = str(getattr(stats, 'camera_state', '') or '')
    message = str(getattr(stats, 'camera_message', '') or '')
    if state not in PROBLEM_STATES:
        return None
    return PROBLEM_STATES[state] + (f' ({message})' if message else '')


class StatusPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.fps_label = QLabel('— fps')
        self.latency_label = QLabel('latency —')
        self.runtime_label = QLabel('engine not started')
        self.camera_label = QLabel('camera —')
        self.vcam_label = QLabel('virtual camera off')
        self.notice_label = QLabel('')
        self.notice_label.setWordWrap(True)
        self.notice_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bold = self.fps_label.font()
        bold.setBold(True)
        self.fps_label.setFont(bold)
        grid = QGridLayout(self)
        grid.setContentsMargins(4, 2, 4, 2)
        grid.addWidget(self.fps_label, 0, 0)
        grid.addWidget(self.latency_label, 0, 1)
        grid.addWidget(self.runtime_label, 0, 2)
        grid.addWidget(self.camera_label, 1, 0)
        grid.addWidget(self.vcam_label, 1, 1, 1, 2)
        grid.addWidget(self.notice_label, 2, 0, 1, 3)
        grid.setColumnStretch(1, 1)

    def show_stats(self, stats: Any) -> None:
        fps = getattr(stats, 'fps', None)
        shown = isinstance(fps, (int, float)) and getattr(stats, 'frames_out', 1) > 0
        self.fps_label.setText(f'{fps:.1f} fps' if shown else '— fps')
        dropped = getattr(stats, 'dropped', None)
        self.latency_label.setText(_stage_text(stats) + (f'   dropped {dropped}' if dropped else ''))
        backend = getattr(stats, 'backend', '') or ''
        self.runtime_label.setText(backend or 'loading the model…')
        threads = getattr(stats, 'threads', '') or ''
        self.runtime_label.setToolTip(str(getattr(stats, 'backend_reason', '') or '')
                                      + (f'\nthreads: {threads}' if threads else ''))
        state = getattr(stats, 'camera_state', None) or '?'
        message = getattr(stats, 'camera_message', '') or ''
        self.camera_label.setText(f'camera {state}' + (f' ({message})' if message and len(message) < 60 else ''))
        self.camera_label.setToolTip(str(message))

    def show_engine_error(self, message: str) -> None:
        self.fps_label.setText('— fps')
        self.runtime_label.setText('engine stopped')
        self.show_notice(message)

    def show_vcam(self, state: str, message: str) -> None:
        text = {'on': 'virtual camera ON', 'off': 'virtual camera off',
                'unavailable': 'virtual camera not available'}.get(state, f'virtual camera {state}')
        self.vcam_label.setText(text + (f' — {message}' if message else ''))
        self.vcam_label.setToolTip(message)

    def show_notice(self, text: str, warning: bool = True) -> None:
        """Warnings (something to fix) in amber, plain information in the normal colour."""
        self.notice_label.setStyleSheet('color: #b26a00' if warning else '')
        self.notice_label.setText(text)
        self.notice_label.setToolTip(text)
