"""live: real-time FOMM puppeteering (camera -> face crop -> model -> preview / virtual camera / file).

Modules, one job each: ``options`` (every option, declared once), ``engine`` (the frame loop and its command
queue), ``pipeline`` (per-frame logic: crop, keypoints, calibration, relative motion, face loss, paste-back),
``capture`` / ``cameras`` (sources), ``cropper`` / ``detection_worker`` (face box), ``avatar`` (avatar images),
``virtual_camera`` / ``sinks`` (outputs), ``headless`` / ``app`` (command line), ``gui`` (the window), ``remote``
(the model server, ``main.py serve``, and its client, ``--remote``). The model
itself is ``fomm_model.Animator`` with a runner from ``fomm_model.inference``.

Threads and who owns what
-------------------------
* **Engine thread** (``fomm-engine``, one per Engine): owns the model (the process's only PyTorch work), the
  pipeline and its calibration state, the capture object, the virtual camera and the file sinks. It takes the
  newest camera frame, runs the pipeline, sends the outputs and calls the frame listeners. Every other thread
  talks to it only through ``Engine.submit`` (commands: avatar, calibrate, source, model, virtual camera,
  sinks), carried out between two frames; settings are one immutable object swapped by reference.
* **Capture thread** (``capture-<source>``): reads the camera or file into a one-frame slot (newer frames replace
  unread ones, so latency never grows) and wakes the engine thread. A file processed offline (every frame) has
  none: the engine thread decodes each frame in turn with the model.
* **Face-detection thread** (``fomm-face-detect``): mediapipe, on the frame the engine handed over after its
  model step; the next frame picks the result up.
* **Video-file thread** (``fomm-video-file``): encodes the file output through ffmpeg.
* **Remote link** (``--remote``): the engine thread sends each request to the model server itself and waits for
  its answer (one frame in flight); the ``websockets`` library reads the socket and answers keep-alive pings on
  a thread of its own per connection; after a lost link, ``fomm-remote`` reconnects (handshake, the avatar
  again) and hands the new connection over by one reference swap, never touching one the engine thread uses.
* **GUI thread** (Qt): widgets only. Frames arrive through ``gui.bridge.FrameBridge`` (newest only), command
  results through ``gui.session.Session``'s queued hand-over; it never waits for the engine.
"""
from __future__ import annotations

import os

# OpenMP threads spin briefly, then sleep, between parallel regions. Read once, when PyTorch loads its OpenMP
# runtime, so it is set here, before anything of ``live`` imports torch (why and measurements: OMP_WAIT_ENV in
# fomm_model.inference.threads, which this must equal; a test checks it). Benchmarks import ``live`` for it too.
OMP_WAIT_ENV = {'GOMP_SPINCOUNT': '10000', 'KMP_BLOCKTIME': '1'}
for _key, _value in OMP_WAIT_ENV.items():
    os.environ.setdefault(_key, _value)

__all__ = ['Engine', 'EngineStats', 'EngineError', 'FrameResult', 'Settings', 'ModelOptions', 'CaptureOptions',
           'AvatarInfo', 'VirtualCameraStatus', 'VideoFileSink']

_WHERE = {'Engine': 'engine', 'EngineStats': 'engine', 'EngineError': 'engine', 'FrameResult': 'pipeline',
          'Settings': 'options', 'ModelOptions': 'options', 'CaptureOptions': 'options', 'AvatarInfo': 'avatar',
          'VirtualCameraStatus': 'virtual_camera', 'VideoFileSink': 'sinks'}


def __getattr__(name: str):
    # lazy: importing ``live`` (e.g. for ``live.cv2_compat``) must not pull torch in
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f'.{_WHERE[name]}', __name__), name)
    raise AttributeError(name)
