"""Which cameras exist, by index and name, and what a ``--input`` value means (camera, file or stream URL)."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

SYSFS_V4L = Path('/sys/class/video4linux')


class SourceError(ValueError):
    """A source that names no camera, file or URL; the message lists what is available."""


@dataclass(frozen=True)
class CameraInfo:
    index: int
    name: str
    path: str  # /dev/videoN on Linux, '' elsewhere


@dataclass(frozen=True)
class SourceSpec:
    """A resolved source: ``kind`` 'camera' (``index``), 'file' or 'stream' (``location``)."""
    kind: str
    index: int | None = None
    location: str | None = None
    label: str = ''

    @property
    def live(self) -> bool:
        """Live sources produce frames in real time (no pacing, reopen on failure); files can loop."""
        return self.kind in ('camera', 'stream')


def list_cameras(sysfs: Path = SYSFS_V4L) -> list[CameraInfo]:
    """Cameras with names. Linux reads v4l2 names from sysfs (instant, no device opened).

    Elsewhere OpenCV cannot name devices, so indices 0-4 are probed and called "Camera N".
    """
    if sys.platform.startswith('linux'):
        cams = []
        if sysfs.is_dir():
            for dev in sysfs.iterdir():
                m = re.fullmatch(r'video(\d+)', dev.name)
                if not m:
                    continue
                try:
                    name = (dev / 'name').read_text().strip()
                except OSError:
                    name = dev.name
                # multi-node devices expose metadata nodes; index 0 of a device is the capture node
                try:
                    if (dev / 'index').read_text().strip() not in ('0', ''):
                        continue
                except OSError:
                    pass
                cams.append(CameraInfo(int(m.group(1)), name, f'/dev/{dev.name}'))
        return sorted(cams, key=lambda c: c.index)
    from .cv2_compat import cv2  # pragma: no cover - not Linux
    cams = []
    for i in range(5):  # pragma: no cover
        cap = cv2.VideoCapture(i)
        if cap.isOpened():
            cams.append(CameraInfo(i, f'Camera {i}', ''))
        cap.release()
    return cams


def describe_cameras(cams: list[CameraInfo] | None = None) -> str:
    """'available cameras: 0: "Integrated Camera", ...' or 'no cameras found'."""
    cams = list_cameras() if cams is None else cams
    if not cams:
        return 'no cameras found'
    return 'available cameras: ' + ', '.join(f'{c.index}: "{c.name}"' for c in cams)


def resolve_source(source: str | int, cameras: list[CameraInfo] | None = None) -> SourceSpec:
    """A camera index ("0", 0, "/dev/video2"), a camera name (substring, case-insensitive), a video file
    path or a stream URL (rtsp://, http://, ...)."""
    if isinstance(source, bool):
        raise SourceError(f'invalid source {source!r}')
    if isinstance(source, int):
        return SourceSpec('camera', index=source, label=f'camera {source}')
    text = str(source).strip()
    if not text:
        raise SourceError('empty source: give a camera index, a camera name, a video file or a stream URL')
    if text.isdigit():
        return SourceSpec('camera', index=int(text), label=f'camera {text}')
    m = re.fullmatch(r'/dev/video(\d+)', text)
    if m:
        return SourceSpec('camera', index=int(m.group(1)), label=text)
    if re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*://', text):
        return SourceSpec('stream', location=text, label=text)
    path = Path(text).expanduser()
    if path.is_dir():
        raise SourceError(f'{text} is a folder: give a video file in it, a camera index or a stream URL')
    if path.is_file():
        return SourceSpec('file', location=str(path), label=path.name)
    if path.suffix or '/' in text or '\\' in text:
        raise SourceError(f'input file not found: {text}')
    cams = list_cameras() if cameras is None else cameras
    matches = [c for c in cams if text.lower() in c.name.lower()]
    if len(matches) >= 1:
        c = matches[0]
        return SourceSpec('camera', index=c.index, label=f'{c.name} ({c.index})')
    raise SourceError(f'no camera named "{text}" ({describe_cameras(cams)}); give a camera index, a name, '
                      f'a video file or a stream URL')
