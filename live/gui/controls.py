"""The side panel: calibration, view, crop, motion, performance, camera and virtual camera controls.

Widgets report user actions as signals carrying plain values; ``set_*`` methods show the engine's state
without echoing it back (signals are blocked while they run), so there are no update loops.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton,
                             QSizePolicy, QSlider, QSpinBox, QVBoxLayout, QWidget)

from fomm_model.mouth_gain import MAX_MOUTH_GAIN

CALIBRATION_GUIDANCE = ('Look straight at the camera with a neutral face, mouth closed, eyes open, '
                        'then press <b>Calibrate</b> (C). Raise the overlay to line your face up with the '
                        "avatar's pose first: the pose you hold now becomes the avatar's resting pose.")

VCAM_RESOLUTIONS: dict[str, tuple[int, int]] = {
    '1280×720 (HD)': (1280, 720),
    '1920×1080 (Full HD)': (1920, 1080),
    '640×480': (640, 480),
    '512×512 (square)': (512, 512),
}
BACKEND_HELP = {'auto': 'auto (measure, keep the fastest)', 'torch': 'torch', 'compile': 'torch.compile',
                'onnx': 'onnxruntime', 'openvino': 'OpenVINO', 'tensorrt': 'TensorRT (NVIDIA)'}
DTYPE_HELP = {None: 'auto (with the backend)', 'float32': 'float32 (exact)', 'float16': 'float16 (NVIDIA GPU)',
              'bfloat16': 'bfloat16 (CPUs with AVX512-BF16)'}
VIDEO_FILE_ITEM = 'Video file as camera…'


def _model_choices() -> tuple[tuple, list[str], tuple]:
    """(backends, devices that work here, precisions), from the option declarations."""
    from fomm_model.devices import available_devices
    from live.options import DTYPE_CHOICES
    from fomm_model.inference import BACKENDS
    return BACKENDS, ['auto'] + available_devices(), (None,) + DTYPE_CHOICES


def _config_label(path_or_name: str) -> str:
    """A bundled config's name, or a file's name without its folder."""
    from pathlib import Path
    return Path(path_or_name).name


@dataclass
class SliderSpec:
    """An int QSlider standing for a float: value = ticks * scale."""
    minimum: int
    maximum: int
    scale: float
    fmt: Callable[[float], str]


def _slider(spec: SliderSpec) -> tuple[QSlider, QLabel, QWidget]:
    slider = QSlider(Qt.Orientation.Horizontal)
    slider.setRange(spec.minimum, spec.maximum)
    label = QLabel(spec.fmt(slider.value() * spec.scale))
    label.setMinimumWidth(44)
    label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    slider.valueChanged.connect(lambda v: label.setText(spec.fmt(v * spec.scale)))
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(slider, 1)
    row.addWidget(label)
    return slider, label, box


ZOOM = SliderSpec(50, 300, 0.01, lambda v: f'{v:.2f}×')
OFFSET = SliderSpec(-50, 50, 0.01, lambda v: f'{v:+.2f}')
FRACTION = SliderSpec(0, 100, 0.01, lambda v: f'{v * 100:.0f}%')
GAIN = SliderSpec(0, round(MAX_MOUTH_GAIN * 100), 0.01, lambda v: f'{v:.2f}×')
MOUTH_GAIN_TIP = ("Mouth gain: how far the avatar's lips move for yours (1× as they do; more opens a closed avatar "
                  'mouth wider; M / N)')


def _show_value(slider: QSlider, spec: SliderSpec) -> None:
    """The value label of a slider made by :func:`_slider` (its valueChanged may have been blocked)."""
    label = slider.parentWidget().findChild(QLabel)
    if label is not None:
        label.setText(spec.fmt(slider.value() * spec.scale))


class ControlsPanel(QWidget):
    settings_changed = pyqtSignal(dict)         # EngineSettings field -> value
    calibrate_clicked = pyqtSignal()
    model_changed = pyqtSignal(dict)            # backend / device / dtype: the engine rebuilds its model
    model_picked = pyqtSignal(object)           # an installed model's name, None for the bundled one
    model_install_requested = pyqtSignal()
    camera_chosen = pyqtSignal(object)          # CameraInfo
    video_file_requested = pyqtSignal()
    refresh_cameras_requested = pyqtSignal()
    view_changed = pyqtSignal(str, bool)        # 'show_keypoints' | 'show_crop_box'
    vcam_start_requested = pyqtSignal(int, int, int)   # width, height, fps
    vcam_stop_requested = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._cameras: list[Any] = []
        self._model_entries: list[Any] = []
        self._vcam_on = False
        self._mouth_gain_chosen = False   # the user picked a mouth gain (else the model's calibrated one shows)
        layout = QVBoxLayout(self)
        layout.addWidget(self._calibration_group())
        layout.addWidget(self._camera_group())
        layout.addWidget(self._view_group())
        layout.addWidget(self._motion_group())
        layout.addWidget(self._model_group())
        layout.addWidget(self._performance_group())
        layout.addWidget(self._vcam_group())
        layout.addStretch(1)

    # -- groups --------------------------------------------------------------------------------------
    def _calibration_group(self) -> QGroupBox:
        box = QGroupBox('Calibration')
        v = QVBoxLayout(box)
        self.guidance_label = QLabel(CALIBRATION_GUIDANCE)
        self.guidance_label.setWordWrap(True)
        self.calibration_state_label = QLabel('Not calibrated yet')
        self.calibrate_button = QPushButton('Calibrate  (C)')
        self.calibrate_button.setToolTip('The next camera frame becomes the reference pose (C or X)')
        self.calibrate_button.clicked.connect(self.calibrate_clicked)
        self.auto_calibrate_check = QCheckBox('Auto-calibrate (re-anchor when you match the avatar better)')
        self.auto_calibrate_check.toggled.connect(lambda on: self._emit(auto_calibrate=on))
        self.overlay_slider, _, overlay_row = _slider(FRACTION)
        self.overlay_slider.setToolTip('Blend the avatar over your face in the camera view to match poses ([ / ])')
        self.overlay_slider.valueChanged.connect(lambda t: self._emit(overlay_alpha=t * FRACTION.scale))
        form = QFormLayout()
        form.addRow('Avatar overlay', overlay_row)
        v.addWidget(self.guidance_label)
        v.addLayout(form)
        v.addWidget(self.calibrate_button)
        v.addWidget(self.calibration_state_label)
        v.addWidget(self.auto_calibrate_check)
        return box

    def _camera_group(self) -> QGroupBox:
        box = QGroupBox('Camera')
        v = QVBoxLayout(box)
        row = QHBoxLayout()
        self.camera_combo = QComboBox()
        self.camera_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.camera_combo.activated.connect(self._on_camera_activated)
        self.refresh_cameras_button = QPushButton('↻')
        self.refresh_cameras_button.setToolTip('Look for cameras again')
        self.refresh_cameras_button.setFixedWidth(30)
        self.refresh_cameras_button.clicked.connect(self.refresh_cameras_requested)
        row.addWidget(self.camera_combo, 1)
        row.addWidget(self.refresh_cameras_button)
        v.addLayout(row)
        return box

    def _view_group(self) -> QGroupBox:
        box = QGroupBox('View and crop')
        form = QFormLayout(box)
        self.passthrough_check = QCheckBox('Passthrough: send the camera, not the avatar (0)')
        self.passthrough_check.toggled.connect(lambda on: self._emit(passthrough=on))
        self.mirror_preview_check = QCheckBox('Mirror preview (R)')
        self.mirror_preview_check.toggled.connect(lambda on: self._emit(mirror_preview=on))
        self.mirror_output_check = QCheckBox('Mirror output (T)')
        self.mirror_output_check.toggled.connect(lambda on: self._emit(mirror_output=on))
        self.paste_back_check = QCheckBox('Whole avatar picture (paste the animated face back)')
        self.paste_back_check.toggled.connect(lambda on: self._emit(paste_back=on))
        self.show_crop_box_check = QCheckBox('Show crop box')
        self.show_crop_box_check.toggled.connect(lambda on: self.view_changed.emit('show_crop_box', on))
        self.show_keypoints_check = QCheckBox('Show keypoints (O)')
        self.show_keypoints_check.toggled.connect(lambda on: self.view_changed.emit('show_keypoints', on))
        self.zoom_slider, _, zoom_row = _slider(ZOOM)
        self.zoom_slider.setToolTip('Zoom the face crop (W / S)')
        self.offset_x_slider, _, ox_row = _slider(OFFSET)
        self.offset_y_slider, _, oy_row = _slider(OFFSET)
        self.offset_x_slider.setToolTip('Move the crop sideways (H / K)')
        self.offset_y_slider.setToolTip('Move the crop up or down (U / J)')
        self.zoom_slider.valueChanged.connect(lambda t: self._emit(crop_zoom=t * ZOOM.scale))
        self.offset_x_slider.valueChanged.connect(lambda _: self._emit_offset())
        self.offset_y_slider.valueChanged.connect(lambda _: self._emit_offset())
        for w in (self.passthrough_check, self.mirror_preview_check, self.mirror_output_check, self.paste_back_check,
                  self.show_crop_box_check, self.show_keypoints_check):
            form.addRow(w)
        form.addRow('Crop zoom', zoom_row)
        form.addRow('Offset x', ox_row)
        form.addRow('Offset y', oy_row)
        return box

    def _motion_group(self) -> QGroupBox:
        box = QGroupBox('Motion')
        form = QFormLayout(box)
        self.relative_check = QCheckBox('Relative motion (move from the calibrated pose)')
        self.relative_check.toggled.connect(lambda on: self._emit(relative=on))
        self.adapt_scale_check = QCheckBox('Adapt movement scale to the avatar')
        self.adapt_scale_check.toggled.connect(lambda on: self._emit(adapt_scale=on))
        self.smoothing_slider, _, smooth_row = _slider(FRACTION)
        self.smoothing_slider.setToolTip('Keypoint smoothing: more is steadier but lags more')
        self.smoothing_slider.valueChanged.connect(lambda t: self._emit(kp_smoothing=t * FRACTION.scale))
        self.mouth_gain_slider, _, gain_row = _slider(GAIN)
        self.mouth_gain_slider.setToolTip(MOUTH_GAIN_TIP)
        self.mouth_gain_slider.valueChanged.connect(lambda t: self._emit(mouth_gain=t * GAIN.scale))
        self.mouth_gain_slider.setEnabled(False)   # until the model says it names lip keypoints
        form.addRow(self.relative_check)
        form.addRow(self.adapt_scale_check)
        form.addRow('Smoothing', smooth_row)
        form.addRow('Mouth gain', gain_row)
        return box

    def _model_group(self) -> QGroupBox:
        box = QGroupBox('Model')
        v = QVBoxLayout(box)
        row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.model_combo.activated.connect(lambda i: self.model_picked.emit(self.model_combo.itemData(i)))
        self.install_model_button = QPushButton('Install…')
        self.install_model_button.setToolTip('Add a checkpoint (.pth.tar), e.g. a published vox-adv-cpk.pth.tar')
        self.install_model_button.clicked.connect(self.model_install_requested)
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.install_model_button)
        note = QLabel('Or drop a .pth.tar file on the window: it is installed once it loads.')
        note.setWordWrap(True)
        v.addLayout(row)
        v.addWidget(note)
        return box

    def _performance_group(self) -> QGroupBox:
        box = QGroupBox('Performance')
        form = QFormLayout(box)
        backends, devices, dtypes = _model_choices()
        self.backend_combo = QComboBox()
        for name in backends:
            self.backend_combo.addItem(BACKEND_HELP.get(name, name), name)
        self.device_combo = QComboBox()
        for name in devices:
            self.device_combo.addItem('auto (CUDA if available)' if name == 'auto' else name, name)
        self.dtype_combo = QComboBox()
        for name in dtypes:
            self.dtype_combo.addItem(DTYPE_HELP.get(name, name), name)
        for combo in (self.backend_combo, self.device_combo, self.dtype_combo):
            combo.activated.connect(lambda _: self.model_changed.emit(self.model_choice()))
        self.fps_cap_spin = QSpinBox()
        self.fps_cap_spin.setRange(0, 120)
        self.fps_cap_spin.setSpecialValueText('no cap')
        self.fps_cap_spin.setSuffix(' fps')
        self.fps_cap_spin.setToolTip('Limit the frame rate to leave CPU/GPU for the call app (0 = no cap)')
        self.fps_cap_spin.valueChanged.connect(lambda v: self._emit(fps_cap=float(v) if v > 0 else None))
        note = QLabel('Backend, device and precision reload the model; camera and avatar stay.')
        note.setWordWrap(True)
        form.addRow('Backend', self.backend_combo)
        form.addRow('Device', self.device_combo)
        form.addRow('Precision', self.dtype_combo)
        form.addRow('FPS cap', self.fps_cap_spin)
        form.addRow(note)
        return box

    def _vcam_group(self) -> QGroupBox:
        box = QGroupBox('Virtual camera')
        form = QFormLayout(box)
        self.vcam_resolution_combo = QComboBox()
        for label, size in VCAM_RESOLUTIONS.items():
            self.vcam_resolution_combo.addItem(label, size)
        self.vcam_fps_spin = QSpinBox()
        self.vcam_fps_spin.setRange(5, 60)
        self.vcam_fps_spin.setValue(30)
        self.vcam_fps_spin.setSuffix(' fps')
        self.output_delay_spin = QSpinBox()
        self.output_delay_spin.setRange(0, 2000)
        self.output_delay_spin.setSingleStep(10)
        self.output_delay_spin.setSpecialValueText('none')
        self.output_delay_spin.setSuffix(' ms')
        self.output_delay_spin.setToolTip('Send each frame this long after the camera took it: a fixed delay to '
                                          'give your microphone too (audio delay in the call app or OBS), so '
                                          'the avatar speaks in time with your voice')
        self.output_delay_spin.valueChanged.connect(lambda v: self._emit(output_delay_ms=float(v)))
        self.vcam_button = QPushButton('Start virtual camera  (V)')
        self.vcam_button.clicked.connect(self._on_vcam_button)
        self.vcam_label = QLabel('off')
        self.vcam_label.setWordWrap(True)
        self.vcam_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow('Resolution', self.vcam_resolution_combo)
        form.addRow('Frame rate', self.vcam_fps_spin)
        form.addRow('Delay (audio sync)', self.output_delay_spin)
        form.addRow(self.vcam_button)
        form.addRow(self.vcam_label)
        return box

    # -- showing state (no signals emitted) ------------------------------------------------------------
    def set_settings(self, s: Any) -> None:
        """Show a ``live.options.Settings``."""
        widgets = [self.relative_check, self.adapt_scale_check, self.passthrough_check, self.mirror_preview_check,
                   self.mirror_output_check, self.paste_back_check, self.auto_calibrate_check, self.overlay_slider,
                   self.zoom_slider,
                   self.offset_x_slider, self.offset_y_slider, self.smoothing_slider, self.fps_cap_spin,
                   self.output_delay_spin, self.mouth_gain_slider]
        for w in widgets:
            w.blockSignals(True)
        try:
            self.relative_check.setChecked(s.relative)
            self.adapt_scale_check.setChecked(s.adapt_scale)
            self.passthrough_check.setChecked(s.passthrough)
            self.mirror_preview_check.setChecked(s.mirror_preview)
            self.mirror_output_check.setChecked(s.mirror_output)
            self.paste_back_check.setChecked(s.paste_back)
            self.auto_calibrate_check.setChecked(s.auto_calibrate)
            self.overlay_slider.setValue(round(s.overlay_alpha / FRACTION.scale))
            self.zoom_slider.setValue(round(s.crop_zoom / ZOOM.scale))
            self.offset_x_slider.setValue(round(s.crop_offset[0] / OFFSET.scale))
            self.offset_y_slider.setValue(round(s.crop_offset[1] / OFFSET.scale))
            self.smoothing_slider.setValue(round(s.kp_smoothing / FRACTION.scale))
            self.fps_cap_spin.setValue(round(s.fps_cap or 0))
            self.output_delay_spin.setValue(round(s.output_delay_ms))
            self._mouth_gain_chosen = s.mouth_gain is not None
            if s.mouth_gain is not None:
                self.mouth_gain_slider.setValue(round(s.mouth_gain / GAIN.scale))
        finally:
            for w in widgets:
                w.blockSignals(False)
        # value labels follow valueChanged, which was blocked
        for slider, spec in ((self.overlay_slider, FRACTION), (self.zoom_slider, ZOOM),
                             (self.offset_x_slider, OFFSET), (self.offset_y_slider, OFFSET),
                             (self.smoothing_slider, FRACTION), (self.mouth_gain_slider, GAIN)):
            _show_value(slider, spec)

    def show_mouth_gain(self, gain: float | None) -> None:
        """The model's gain in use (``EngineStats.mouth_gain``): None disables the slider (no lip keypoints); the
        model's calibrated gain shows until the user picks one."""
        slider = self.mouth_gain_slider
        slider.setEnabled(gain is not None)
        slider.setToolTip(MOUTH_GAIN_TIP if gain is not None else
                          'No mouth gain: the model names no lip keypoints; the lips follow yours as they move')
        if gain is not None and not self._mouth_gain_chosen and slider.value() != round(gain / GAIN.scale):
            slider.blockSignals(True)
            slider.setValue(round(gain / GAIN.scale))
            slider.blockSignals(False)
            _show_value(slider, GAIN)

    def set_view(self, show_crop_box: bool, show_keypoints: bool) -> None:
        for check, on in ((self.show_crop_box_check, show_crop_box), (self.show_keypoints_check, show_keypoints)):
            check.blockSignals(True)
            check.setChecked(on)
            check.blockSignals(False)

    def set_model(self, model: Any) -> None:
        """Show a ``ModelOptions``' model, backend, device and precision."""
        self._select_model(model.checkpoint)
        for combo, value in ((self.backend_combo, model.backend), (self.device_combo, model.device),
                             (self.dtype_combo, model.dtype)):
            combo.blockSignals(True)
            i = combo.findData(value)
            if i < 0:  # e.g. a remembered 'cuda' on a machine without one: show it, the engine will say why
                combo.addItem(f'{value} (not available here)', value)
                i = combo.count() - 1
            combo.setCurrentIndex(i)
            combo.blockSignals(False)

    def set_models(self, entries: Sequence[Any], current: str | None) -> None:
        """``entries``: ModelEntry list (bundled first); ``current``: ModelOptions.checkpoint (a name, a file or
        None for the bundled model)."""
        self._model_entries = list(entries)
        self._select_model(current)

    def _select_model(self, current: str | None) -> None:
        combo = self.model_combo
        combo.blockSignals(True)
        combo.clear()
        for e in self._model_entries:
            combo.addItem(f'{e.display_name}  ·  {_config_label(e.config)}', None if e.bundled else e.name)
            combo.setItemData(combo.count() - 1, str(e.path), Qt.ItemDataRole.ToolTipRole)
        i = combo.findData(current)
        if i < 0 and current is not None:   # a file given with --checkpoint, not installed
            combo.addItem(f'{_config_label(current)} (file, not installed)', current)
            i = combo.count() - 1
        combo.setCurrentIndex(max(i, 0))
        combo.blockSignals(False)

    def model_choice(self) -> dict[str, Any]:
        return {'backend': self.backend_combo.currentData(), 'device': self.device_combo.currentData(),
                'dtype': self.dtype_combo.currentData()}

    def set_cameras(self, cameras: Sequence[Any], current: Any = None, source_label: str = '') -> None:
        """``cameras``: CameraInfo list; ``current``: the index of the camera in use, or None (a file)."""
        self._cameras = list(cameras)
        self.camera_combo.blockSignals(True)
        self.camera_combo.clear()
        for cam in self._cameras:
            self.camera_combo.addItem(f'{cam.name}  ({cam.index})', cam.index)
        if not self._cameras:
            self.camera_combo.addItem('No camera found', None)
        if current is None and source_label:
            self.camera_combo.addItem(source_label, '__file__')
        self.camera_combo.insertSeparator(self.camera_combo.count())
        self.camera_combo.addItem(VIDEO_FILE_ITEM, '__choose_file__')
        index = self.camera_combo.findData(current if current is not None else '__file__')
        self.camera_combo.setCurrentIndex(max(index, 0))
        self.camera_combo.blockSignals(False)
        self.camera_combo.setToolTip(source_label or self.camera_combo.currentText())

    def vcam_resolution(self) -> tuple[int, int]:
        return self.vcam_resolution_combo.currentData()

    def vcam_fps(self) -> int:
        return self.vcam_fps_spin.value()

    def set_vcam(self, size: tuple[int, int], fps: float) -> None:
        i = self.vcam_resolution_combo.findData(tuple(size))
        if i < 0:
            self.vcam_resolution_combo.addItem(f'{size[0]}×{size[1]}', tuple(size))
            i = self.vcam_resolution_combo.count() - 1
        self.vcam_resolution_combo.setCurrentIndex(i)
        self.vcam_fps_spin.setValue(round(fps))

    def set_vcam_state(self, state: str, message: str) -> None:
        self._vcam_on = state == 'on'
        self.vcam_button.setText('Stop virtual camera  (V)' if self._vcam_on else 'Start virtual camera  (V)')
        self.vcam_resolution_combo.setEnabled(not self._vcam_on)
        self.vcam_fps_spin.setEnabled(not self._vcam_on)
        colour = {'on': '#2e7d32', 'unavailable': '#c62828'}.get(state, '#555')
        text = {'on': 'ON', 'off': 'off', 'unavailable': 'not available'}.get(state, state)
        self.vcam_label.setText(f'<span style="color:{colour}"><b>{text}</b></span>'
                                + (f' — {html.escape(message, quote=False)}' if message else ''))

    def set_calibration_state(self, text: str) -> None:
        self.calibration_state_label.setText(text)

    # -- internals -----------------------------------------------------------------------------------
    def _emit(self, **changes: Any) -> None:
        self.settings_changed.emit(changes)

    def _emit_offset(self) -> None:
        self._emit(crop_offset=(self.offset_x_slider.value() * OFFSET.scale,
                                self.offset_y_slider.value() * OFFSET.scale))

    def _on_camera_activated(self, index: int) -> None:
        data = self.camera_combo.itemData(index)
        if data == '__choose_file__':
            self.video_file_requested.emit()
        elif isinstance(data, int):
            cam = next((c for c in self._cameras if c.index == data), None)
            if cam is not None:
                self.camera_chosen.emit(cam)

    def _on_vcam_button(self) -> None:
        if self._vcam_on:
            self.vcam_stop_requested.emit()
        else:
            w, h = self.vcam_resolution()
            self.vcam_start_requested.emit(w, h, self.vcam_fps_spin.value())
