"""The window's state and behaviour without its widgets: engine lifecycle, avatar and source switching, the
virtual camera and the remembered preferences.

The window draws and forwards the user's intents here; the session tells the window what changed through
``on_event(name, payload)``, always on the GUI thread: engine results arrive on the engine thread and are
handed over with ``call_soon`` (a queued Qt call in the window, a plain list in tests). Nothing here needs
a widget, so tests drive the whole behaviour directly.

Events: ``engine`` (state text), ``engine_failed`` (message), ``avatar`` ((entry, AvatarInfo)),
``avatar_failed`` ((entry, message)), ``vcam`` (VirtualCameraStatus), ``notice`` ((text, warning)),
``models`` (the installed models changed: the list of ModelEntry).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fomm_model.model_store import ModelEntry, ModelStoreError, install, list_models
from fomm_model.mouth_gain import MAX_MOUTH_GAIN

from ..engine import Engine
from ..options import CaptureOptions, ModelOptions, OutputOptions, Settings, replace_checked
from .avatar_library import AvatarEntry, AvatarLibrary
from .settings_store import AppPrefs, SettingsStore

log = logging.getLogger(__name__)

EngineFactory = Callable[[ModelOptions, CaptureOptions, Settings], Any]


class Session:
    def __init__(self, model: ModelOptions, capture: CaptureOptions, settings: Settings, output: OutputOptions,
                 prefs: AppPrefs, store: SettingsStore, library: AvatarLibrary, *,
                 on_event: Callable[[str, Any], None], on_frame: Callable[[Any], None],
                 call_soon: Callable[[Callable[[], None]], None], engine_factory: EngineFactory = Engine):
        self.model, self.capture, self.settings, self.output = model, capture, settings, output
        self.prefs, self.store, self.library = prefs, store, library
        self._emit, self._on_frame, self._call_soon = on_event, on_frame, call_soon
        self._factory = engine_factory
        self.engine: Any = None
        self.error: str | None = None
        self.avatar: AvatarEntry | None = library.find(prefs.avatar) or next(iter(library.entries()), None)
        self.applied: AvatarEntry | None = None     # the avatar the engine animates, and its AvatarInfo
        self.avatar_info: Any = None

    # -- engine lifecycle ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.state in ('ready', 'running')

    def start(self) -> None:
        """Build the engine; loading the model, the avatar and the source happen on the engine thread."""
        self.error = None
        try:
            engine = self._factory(self.model, self.capture, self.settings)
        except Exception as exc:  # noqa: BLE001 - any start failure must reach the user, not kill the window
            self._failed(f'The engine could not start: {exc}')
            return
        self.engine = engine
        engine.add_listener(self._on_frame)
        entry = self.avatar
        self._when_done(engine.submit(self._start_on_engine, engine, entry), self._started, engine, entry)

    @staticmethod
    def _start_on_engine(engine: Engine, entry: AvatarEntry | None) -> Any:
        info = engine.set_avatar(entry.source()) if entry is not None else None
        engine.start()
        return info

    def _started(self, future: Future, engine: Engine, entry: AvatarEntry | None) -> None:
        if engine is not self.engine:   # closed or replaced meanwhile
            return
        if future.exception() is not None:
            self.close_engine()
            self._failed(f'The engine could not start: {future.exception()}')
            return
        self._emit('engine', self.engine.stats().backend)
        if entry is not None:
            self._avatar_applied(entry, future.result())
        if self.avatar is not entry and self.avatar is not None:
            self.use_avatar(self.avatar)   # picked while the model was loading

    def _failed(self, message: str) -> None:
        log.error('%s', message)
        self.error = message
        self._emit('engine_failed', message)

    def change_model(self, **changes: Any) -> None:
        """Backend, device, precision or checkpoint: the engine rebuilds its model in place (source, avatar and
        virtual camera stay); if that fails the previous model keeps running and the user is told."""
        self.model = dataclasses.replace(self.model, **changes)
        if self.engine is None:
            self.start()
            return
        self._emit('notice', (f'Loading {self.model.checkpoint or "the bundled model"} with {self.model.backend} on '
                              f'{self.model.device} ({self.model.dtype or "auto precision"})…', False))
        self._when_done(self.engine.submit(self.engine.set_model, self.model), self._model_changed)

    def _model_changed(self, future: Future) -> None:
        if self.engine is None:
            return
        if future.exception() is not None:
            self.model = self.engine.model_options
            self._emit('notice', (f'Model not changed: {future.exception()}', True))
        self._emit('engine', self.engine.stats().backend)

    # -- models --------------------------------------------------------------------------------------
    def models(self) -> list[ModelEntry]:
        """The bundled model, then the installed ones (what the picker offers; the folder is
        fomm_model.model_store.models_dir(), where the engine looks names up too)."""
        return list_models()

    def use_model(self, name: str | None) -> None:
        """Switch to an installed model by name (None: the bundled one); its recorded config comes with it."""
        if (name, None) != (self.model.checkpoint, self.model.config):
            self.change_model(checkpoint=name, config=None)

    def install_model(self, path: str | Path) -> None:
        """Install a dropped or chosen checkpoint, then switch to it. Checking that it loads takes a while for a
        large file, so it runs off the GUI thread; a file that does not load is not installed and the
        ``notice`` says why."""
        path = Path(path)
        self._emit('notice', (f'Checking the model {path.name}…', False))

        def work() -> None:
            try:
                entry = install(path)
            except ModelStoreError as exc:
                message = str(exc)
                self._call_soon(lambda: self._emit('notice', (f'Model not installed: {message}', True)))
            except Exception as exc:  # noqa: BLE001 - a disk error or a bug must reach the user, not a log
                message = f'{path} was not installed: {exc}'
                self._call_soon(lambda: self._emit('notice', (f'Model not installed: {message}', True)))
            else:
                self._call_soon(lambda: self._installed(entry))
        threading.Thread(target=work, name='install-model', daemon=True).start()

    def _installed(self, entry: ModelEntry) -> None:
        self._emit('models', self.models())
        self._emit('notice', (f'Installed the model "{entry.name}" (config {Path(entry.config).name})', False))
        self.use_model(entry.name)

    def close_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close()

    # -- avatars ------------------------------------------------------------------------------------
    def use_avatar(self, entry: AvatarEntry) -> None:
        """Remember ``entry`` and hand it to the engine (queued behind a model still loading)."""
        self.avatar = entry
        self.prefs.avatar = entry.key
        if self.engine is not None and self.engine.state != 'failed':
            self._when_done(self.engine.submit(self.engine.set_avatar, entry.source()), self._avatar_done, entry)

    def _avatar_done(self, future: Future, entry: AvatarEntry) -> None:
        if self.engine is None:
            return
        if future.exception() is not None:
            self._emit('avatar_failed', (entry, str(future.exception())))
        else:
            self._avatar_applied(entry, future.result())

    def _avatar_applied(self, entry: AvatarEntry, info: Any) -> None:
        self.applied, self.avatar_info = entry, info
        self._emit('avatar', (entry, info))

    # -- source, settings, calibration ----------------------------------------------------------------
    def use_source(self, source: str | int, camera_name: str = '') -> None:
        self.capture = dataclasses.replace(self.capture, input=str(source))
        self.prefs.source, self.prefs.source_name = str(source), camera_name
        if self.engine is not None:
            self._when_done(self.engine.submit(self.engine.set_source, source), self._source_done)

    def _source_done(self, future: Future) -> None:
        if future.exception() is not None:
            self._emit('notice', (f'Camera not changed: {future.exception()}', True))

    def apply_settings(self, **changes: Any) -> Settings:
        """Checked at once (ValueError naming the setting); the engine applies them at its next frame."""
        self.settings = self.engine.update_settings(**changes) if self.engine is not None else \
            replace_checked(self.settings, **changes)
        return self.settings

    def toggle(self, name: str) -> Settings:
        return self.apply_settings(**{name: not getattr(self.settings, name)})

    def nudge(self, name: str, step: float, low: float, high: float) -> Settings:
        return self.apply_settings(**{name: round(min(max(getattr(self.settings, name) + step, low), high), 4)})

    def nudge_mouth_gain(self, step: float) -> Settings:
        """From the gain in use (the model's calibrated one until the user picks one); a notice when the model
        has none."""
        current = self.settings.mouth_gain
        if current is None and self.engine is not None:
            current = self.engine.stats().mouth_gain
        if current is None:
            self._emit('notice', ('No mouth gain: the model is not loaded yet, or names no lip keypoints.', True))
            return self.settings
        return self.apply_settings(mouth_gain=round(min(max(current + step, 0.0), MAX_MOUTH_GAIN), 4))

    def nudge_offset(self, dx: float, dy: float) -> Settings:
        x, y = self.settings.crop_offset
        return self.apply_settings(crop_offset=(round(min(max(x + dx, -0.5), 0.5), 4),
                                                round(min(max(y + dy, -0.5), 0.5), 4)))

    def calibrate(self) -> bool:
        """False (with a notice) when there is no engine to calibrate."""
        if not self.ready:
            self._emit('notice', ('Not calibrated: the engine is not running yet.', True))
            return False
        self.engine.calibrate()
        return True

    # -- virtual camera -------------------------------------------------------------------------------
    def start_virtual_camera(self, width: int, height: int, fps: float) -> None:
        self.set_vcam_format((width, height), fps)
        if self.engine is None:
            self._emit('notice', ('The virtual camera starts with the engine: the engine is not running.', True))
            return
        self._when_done(self.engine.submit(self.engine.start_virtual_camera, width, height, fps), self._vcam_done)

    def stop_virtual_camera(self) -> None:
        if self.engine is not None:
            self._when_done(self.engine.submit(self.engine.stop_virtual_camera), self._vcam_done)

    def virtual_camera_on(self) -> bool:
        return self.engine is not None and self.engine.virtual_camera_status().state == 'on'

    def _vcam_done(self, future: Future) -> None:
        if future.exception() is not None:
            self._emit('notice', (f'Virtual camera: {future.exception()}', True))
        if self.engine is not None:
            self._emit('vcam', self.engine.virtual_camera_status())

    # -- persistence ----------------------------------------------------------------------------------
    def set_vcam_format(self, size: tuple[int, int], fps: float) -> None:
        """The virtual camera format to use (and remember) without starting it."""
        self.output = dataclasses.replace(self.output, vcam_size=tuple(size), vcam_fps=float(fps))

    def save(self) -> None:
        """Everything remembered between runs."""
        if self.prefs.source != str(self.capture.input):   # e.g. given on the command line
            self.prefs.source, self.prefs.source_name = str(self.capture.input), ''
        self.store.save_dataclass('model', self.model)
        self.store.save_dataclass('capture', dataclasses.replace(self.capture, input='0'))  # the source is a pref
        self.store.save_dataclass('engine', self.settings)
        self.store.save_dataclass('output', self.output)
        self.store.save_prefs(self.prefs)
        self.store.sync()

    # -- plumbing -------------------------------------------------------------------------------------
    def _when_done(self, future: Future, handler: Callable[..., None], *args: Any) -> None:
        """Run ``handler(future, *args)`` on the GUI thread once ``future`` (from the engine thread) is done."""
        future.add_done_callback(lambda f: self._call_soon(lambda: handler(f, *args)))
