"""live: real-time FOMM puppeteering (webcam -> face crop -> FOMM -> preview / virtual camera / file).

Split by job: ``capture`` (camera/file threads), ``cropper`` (face box, smoothing), ``avatar`` (source image
preparation), ``backends`` (model calls per runtime), ``pipeline`` (per-frame logic), ``engine`` (threads and
the public API the GUI and the headless CLI use), ``virtual_camera`` and ``sinks`` (outputs).
"""
from __future__ import annotations

__all__ = ['Engine', 'EngineOptions', 'EngineSettings', 'FrameResult', 'EngineStats', 'AvatarInfo',
           'VirtualCameraStatus', 'VideoFileSink']


def __getattr__(name: str):
    # Lazy: importing ``live`` (e.g. for ``live.cv2_compat``) must not pull torch in.
    if name in ('Engine', 'EngineOptions', 'EngineSettings', 'FrameResult', 'EngineStats'):
        from . import engine
        return getattr(engine, name)
    if name == 'AvatarInfo':
        from .avatar import AvatarInfo
        return AvatarInfo
    if name == 'VirtualCameraStatus':
        from .virtual_camera import VirtualCameraStatus
        return VirtualCameraStatus
    if name == 'VideoFileSink':
        from .sinks import VideoFileSink
        return VideoFileSink
    raise AttributeError(name)
