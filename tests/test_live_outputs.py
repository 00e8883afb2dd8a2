"""Outputs: the pyvirtualcam path through a registered in-process backend, the unavailable message, file sink."""
from __future__ import annotations

import numpy as np
import pytest
import pyvirtualcam
from pyvirtualcam.camera import BACKENDS

from live.sinks import VideoFileSink
from live.virtual_camera import LINUX_FIX, Letterbox, VirtualCamera, VirtualCameraUnavailable, platform_fix


class RecordingBackend:
    """A real pyvirtualcam backend that keeps frames in memory instead of writing to a device."""
    instances: list = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc, self._device = width, height, fps, fourcc, device
        self.frames: list[np.ndarray] = []
        self.closed = False
        RecordingBackend.instances.append(self)

    def send(self, frame):
        self.frames.append(frame.copy())

    def device(self):
        return self._device or 'recording0'

    def native_fourcc(self):
        return self.fourcc

    def close(self):
        self.closed = True


@pytest.fixture()
def recording_backend():
    RecordingBackend.instances.clear()
    pyvirtualcam.register_backend('recording', RecordingBackend)
    yield RecordingBackend
    BACKENDS.pop('recording', None)


def test_virtual_camera_pillarboxes_rgb_frames(recording_backend):
    cam = VirtualCamera(320, 180, 25, backend='recording')
    frame = np.zeros((128, 128, 3), np.uint8)
    frame[..., 0] = 255           # pure red: checks RGB order survives
    frame[:, :64, 1] = 255        # left half yellow: checks (no) mirroring
    for _ in range(3):
        cam.send(frame)
    status = cam.status()
    cam.close()
    be = recording_backend.instances[0]
    assert (be.width, be.height, be.fps) == (320, 180, 25)
    assert be.fourcc == pyvirtualcam.camera.encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)
    assert len(be.frames) == 3 and status.state == 'on' and status.frames_sent == 3
    img = be.frames[-1].reshape(180, 320, 3)
    assert img[:, :70].max() == 0 and img[:, 251:].max() == 0          # black pillars (side bars 70 px)
    assert tuple(img[90, 200]) == (255, 0, 0)                           # right of centre: red
    assert tuple(img[90, 100]) == (255, 255, 0)                         # left of centre: yellow
    assert be.closed


def test_virtual_camera_mirror_and_square():
    box = Letterbox(64, 64)
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[:, :16] = 200
    out = box.place(frame, mirror=True)
    assert out.shape == (64, 64, 3) and out[:, :31].max() == 0 and out[:, 33:].min() == 200


def test_missing_virtual_camera_says_how_to_fix(monkeypatch):
    monkeypatch.setattr('sys.platform', 'linux')
    assert 'modprobe v4l2loopback' in platform_fix() and 'exclusive_caps=1' in LINUX_FIX
    assert 'OBS' in platform_fix('win32') and 'OBS' in platform_fix('darwin')
    with pytest.raises(VirtualCameraUnavailable, match='modprobe v4l2loopback'):
        VirtualCamera(320, 180, 25, device='/dev/video99', backend='v4l2loopback')


def test_video_file_sink(tmp_path):
    sink = VideoFileSink(tmp_path / 'out.mp4', fps=25)
    for i in range(12):
        sink.write(np.full((128, 128, 3), i * 20, np.uint8))
    sink.close()
    from fomm_model.video_io import read_video
    frames, fps = read_video(tmp_path / 'out.mp4')
    assert frames.shape == (12, 128, 128, 3) and fps == pytest.approx(25)
    assert abs(int(frames[5].mean()) - 100) <= 3
    with pytest.raises(FileNotFoundError):
        VideoFileSink(tmp_path / 'missing' / 'x.mp4')
