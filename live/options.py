"""Every option of the live app, declared once: name, type, default, choices, range and help.

Each group is a dataclass whose fields carry their declaration (:func:`option`). From it come the headless
flags and the window's flags (:func:`add_arguments`), the parsed values (:func:`from_args`), the checks of a
value set at run time (:func:`check`) and the window's remembered settings (``live.gui.settings_store`` stores
the same dataclasses by field name). Adding an option is one field here.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from fomm_model.devices import device_name
from fomm_model.inference import BACKENDS
from fomm_model.mouth_gain import MAX_MOUTH_GAIN

DTYPE_CHOICES = ('float32', 'bfloat16', 'float16')


def option(default: Any, help: str, *, choices: tuple | None = None, minimum: float | None = None,
           maximum: float | None = None, flag: str | None = None, short: str | None = None,
           metavar: str | None = None, parse: Any = None, positive: bool = False) -> Any:
    """A dataclass field with its command-line and validation declaration in ``metadata``."""
    meta = {'help': help, 'choices': choices, 'minimum': minimum, 'maximum': maximum, 'flag': flag,
            'short': short, 'metavar': metavar, 'parse': parse, 'positive': positive}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def resolution(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720)."""
    try:
        w, h = (int(v) for v in str(text).lower().replace('×', 'x').split('x'))
    except ValueError:
        raise ValueError(f'expected WIDTHxHEIGHT such as 1280x720, got {text!r}') from None
    if w <= 0 or h <= 0:
        raise ValueError(f'width and height must be positive, got {text!r}')
    return w, h


def _remote_url(text: str) -> str:
    """A ws:// or wss:// URL (ValueError with an example otherwise); 'none' or 'local': this computer ('')."""
    if str(text).strip().lower() in ('', 'none', 'local'):
        return ''
    from .remote.client import check_url
    return check_url(text)


@dataclass
class ModelOptions:
    """Which model runs where; fixed while the engine runs (a change rebuilds it)."""
    config: str | None = option(None, 'model config name or YAML (default: found from the checkpoint, or the '
                                      "bundled model's)")
    checkpoint: str | None = option(None, 'model checkpoint .pth.tar, or the name of an installed model (python -m '
                                          'fomm_model models list; default: the bundled face model)',
                                    metavar='FILE_OR_NAME')
    backend: str = option('auto', 'runtime for the model: auto measures the candidates and keeps the fastest',
                          choices=BACKENDS)
    device: str = option('auto', 'cpu, cuda or cuda:N; auto: CUDA when available, else the CPU', parse=device_name)
    dtype: str | None = option(None, 'precision (default: chosen with the backend; float16 needs CUDA)',
                               choices=DTYPE_CHOICES)
    channels_last: bool = option(False, 'channels_last memory layout for the torch backend')
    threads: int | None = option(None, 'CPU threads for the model (default: what the cores allow)', minimum=1)
    remote: str | None = option(None, 'run the model on a fomm-live model server (main.py serve) at ws://HOST:PORT '
                                      'or wss://HOST/PATH (default: on this computer)', metavar='URL',
                                parse=_remote_url)
    remote_send: str = option('keypoints', 'what goes to the model server each frame: keypoints (the keypoint '
                                           'detector runs here, 0.4 KiB up, one round trip; needs the same '
                                           'checkpoint here) or crop (the driving crop, two round trips)',
                              choices=('keypoints', 'crop'))
    remote_codec: str = option('jpeg', 'images to and from the model server: jpeg (quality 90, ~11x fewer bytes) '
                                       'or raw (lossless: the same frames as a local float32 model)',
                               choices=('jpeg', 'raw'))
    token_file: str | None = option(None, "file holding the model server's token (default: $FOMM_LIVE_TOKEN, "
                                          'else the token file the server created on this machine)')


@dataclass
class CaptureOptions:
    """Where frames come from and how faces are found in them."""
    input: str = option('0', 'camera index or name, video file, or stream URL', short='-i')
    camera_size: tuple[int, int] | None = option(
        None, 'resolution to ask the camera for (default: 640x480 when the model runs on the CPU, whose cores '
              'decoding 720p would take from it; 1280x720 on a GPU)', metavar='WxH', parse=resolution)
    loop: bool = option(False, 'loop a video file input')
    realtime: bool | None = option(None, 'pace a video file at its fps and drop frames like a camera (default: '
                                         'paced in the window, every frame processed headless)')
    detect_every: int = option(3, 'face detection every N frames while the face moves (10 Hz from a 30 fps '
                                  'camera), 10x less often while it keeps still', minimum=1)
    detect_sync: bool = option(False, 'run face detection on the engine thread, in the frame it crops (no '
                                      'one-frame crop lag, slower)')


@dataclass
class Settings:
    """What the user changes while it runs (window controls, keys); applied between two frames."""
    relative: bool = option(True, 'relative motion: your motion from the calibrated pose moves the avatar '
                                  '(off: absolute keypoints)')
    adapt_scale: bool = option(True, "scale the motion to the avatar's face size")
    mouth_gain: float | None = option(None, "scale your lip motion (beyond your head's) on the avatar: 1 = as it is, 2 "
                                            "= twice as wide, 0 = the avatar's mouth stays still (default: the gain "
                                            "the model was calibrated with; models that name no lip keypoints "
                                            "ignore it)", minimum=0.0, maximum=MAX_MOUTH_GAIN, metavar='GAIN')
    passthrough: bool = option(False, 'send the camera crop instead of the avatar')
    mirror_preview: bool = option(True, 'mirror the camera preview')
    mirror_output: bool = option(False, 'mirror the animated output')
    crop_zoom: float = option(1.0, 'zoom of the face crop', minimum=0.5, maximum=3.0)
    crop_offset: tuple[float, float] = option((0.0, 0.0), 'crop offset (x, y) in crop widths', minimum=-0.5,
                                              maximum=0.5, metavar='X,Y', parse=lambda t: tuple(
                                                  float(v) for v in str(t).split(',')))
    kp_smoothing: float = option(0.0, 'keypoint smoothing: 0 (off) .. 1 (strongest, lags more)', minimum=0.0,
                                 maximum=1.0)
    auto_calibrate: bool = option(False, 're-anchor when your pose matches the avatar better than the anchor')
    fps_cap: float | None = option(None, 'frame rate cap, leaving CPU/GPU to the call app (default: none)',
                                   positive=True)
    overlay_alpha: float = option(0.0, 'blend the avatar over the camera crop to match poses (preview only)',
                                  minimum=0.0, maximum=1.0)
    paste_back: bool = option(True, 'paste the animated face back into the whole avatar image when it is '
                                    'larger than the face crop (off: the square face crop)')
    output_delay_ms: float = option(0.0, 'send each virtual-camera frame this many ms after its camera frame was '
                                         'captured: a constant delay to give your microphone too (audio delay in '
                                         'the call app or OBS), so the avatar speaks in time with your voice; 0: '
                                         'as soon as it is ready', minimum=0.0, maximum=2000.0, metavar='MS',
                                    flag='--output-delay')


@dataclass
class OutputOptions:
    """Where the animated avatar goes besides the preview."""
    virtual_camera: bool = option(False, 'send the output to a virtual camera')
    vcam_size: tuple[int, int] = option((1280, 720), 'virtual camera WIDTHxHEIGHT (the avatar is fitted in)',
                                        metavar='WxH', parse=resolution)
    vcam_fps: float = option(30.0, 'virtual camera frame rate', minimum=1.0, maximum=120.0)
    vcam_device: str | None = option(None, 'virtual camera device, e.g. /dev/video10')
    output: str | None = option(None, 'write the animated avatar to this video file (.mp4, .mov, .mkv, .avi, .gif)',
                                short='-o')


@dataclass
class RunOptions:
    """Headless runs only: what to animate and when to stop."""
    avatar: str | None = option(None, 'avatar image (any size; the face is found and cropped)', short='-a')
    keep_full_avatar: bool = option(False, 'use the whole avatar image instead of cropping its face')
    calibrate_at: float = option(0.0, 'calibrate on the first frame with a face at or after this time (file time '
                                      'for files, wall time for cameras)', minimum=0.0, metavar='SECONDS')
    max_frames: int | None = option(None, 'stop after this many output frames', minimum=1)
    duration: float | None = option(None, 'stop after this many seconds', positive=True)


GROUPS = (ModelOptions, CaptureOptions, Settings, OutputOptions, RunOptions)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get('flag') or '--' + f.name.replace('_', '-')


def check(f: dataclasses.Field, value: Any) -> Any:
    """``value`` if it fits the declaration of field ``f``, else ValueError naming the flag and the range."""
    meta, name = f.metadata, flag_of(f)
    if value is None:
        return value
    if meta.get('choices') and value not in meta['choices']:
        raise ValueError(f'{name} must be one of {", ".join(map(str, meta["choices"]))}, not {value!r}')
    numbers = value if isinstance(value, tuple) else (value,)
    for v in numbers:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        low, high = meta.get('minimum'), meta.get('maximum')
        if meta.get('positive') and not v > 0:
            raise ValueError(f'{name} must be more than 0, got {v:g}')
        if (low is not None and v < low) or (high is not None and v > high):
            span = f'between {low:g} and {high:g}' if low is not None and high is not None else \
                f'at least {low:g}' if low is not None else f'at most {high:g}'
            raise ValueError(f'{name} must be {span}, got {v:g}')
    return value


def _parser_type(f: dataclasses.Field):
    """argparse ``type`` for a field: parse, then check against the declaration (argparse shows the message)."""
    base = f.metadata.get('parse') or {int: int, float: float}.get(_scalar_type(f), str)

    def parse(text: str):
        try:
            return check(f, base(text))
        except ValueError as exc:
            message = str(exc) if flag_of(f) in str(exc) or base not in (int, float) else \
                f'expected a number, got {text!r}'
            raise argparse.ArgumentTypeError(message) from None
    parse.__name__ = f.name
    return parse


def _scalar_type(f: dataclasses.Field) -> type:
    text = str(f.type)
    return bool if text.startswith('bool') else int if text.startswith('int') else \
        float if text.startswith('float') else str


def add_arguments(parser: argparse.ArgumentParser, *groups: type, defaults: bool = True) -> None:
    """Flags for every field of ``groups``. ``defaults=False`` leaves every default None (the window fills in
    what is not given from the last run)."""
    for group in groups:
        section = parser.add_argument_group(group.__name__, group.__doc__)
        for f in dataclasses.fields(group):
            names = [flag_of(f)] + ([f.metadata['short']] if f.metadata.get('short') else [])
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kwargs = {'dest': f.name, 'help': f.metadata['help'], 'default': default if defaults else None}
            if _scalar_type(f) is bool:
                kwargs['action'] = argparse.BooleanOptionalAction
            else:
                kwargs['type'] = _parser_type(f)
                kwargs['metavar'] = f.metadata.get('metavar') or (
                    '{' + ','.join(f.metadata['choices']) + '}' if f.metadata.get('choices') else f.name.upper())
            section.add_argument(*names, **kwargs)
    if Settings in groups:  # the old spelling of --no-relative
        parser.add_argument('--absolute', dest='relative', action='store_false', help=argparse.SUPPRESS)


def from_args(group: type, args: argparse.Namespace, base: Any = None) -> Any:
    """The ``group`` dataclass from parsed flags; flags left None keep ``base``'s value (or the default)."""
    base = base if base is not None else group()
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(group)
               if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **changes)


def replace_checked(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` after checking each change against its declaration (ValueError/TypeError)."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    unknown = set(changes) - set(fields)
    if unknown:
        raise TypeError(f'unknown setting(s) {", ".join(sorted(unknown))}; known: {", ".join(sorted(fields))}')
    for name, value in changes.items():
        if isinstance(value, list):
            changes[name] = value = tuple(value)
        check(fields[name], value)
    return dataclasses.replace(obj, **changes)
