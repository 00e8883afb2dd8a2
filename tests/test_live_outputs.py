"""Outputs: the pyvirtualcam path through a registered in-process backend, the unavailable message, file sink."""
from __future__ import annotations

import numpy as np
import pytest
import pyvirtualcam

from live.sinks import VideoFileSink
from live.virtual_camera import (
    LINUX_FIX,
    Letterbox,
    VirtualCamera,
    VirtualCameraUnavailable,
    platform_fix,
)


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


def test_virtual_camera_holds_frames_until_due_in_order_and_drops_them_on_close(recording_backend):
    import time
    cam = VirtualCamera(64, 64, 25, backend='recording')
    be = recording_backend.instances[0]
    frames = [np.full((32, 32, 3), v, np.uint8) for v in (10, 20, 30, 40)]
    later = time.perf_counter() + 100
    cam.send(frames[0], due=later)
    cam.mirror = True                      # a held frame keeps the mirroring it was sent with
    cam.send(frames[1], due=later + 1)
    cam.send(frames[2], due=0.0)           # already due, but after the held ones: waits, never overtakes
    assert be.frames == [] and cam.next_due() == later and cam.frames_sent == 0
    cam.flush(until=later + 0.5)
    assert [f.reshape(64, 64, 3)[32, 32, 0] for f in be.frames] == [10]
    cam.send(frames[3])                    # the delay turned off: what was held goes out first, in order
    assert [f.reshape(64, 64, 3)[32, 32, 0] for f in be.frames] == [10, 20, 30, 40] and cam.next_due() is None
    cam.send(frames[0], due=later)
    cam.close()                            # held frames are dropped with the camera
    assert len(be.frames) == 4 and be.closed and cam.next_due() is None


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


def test_video_file_sink_writes_every_frame_fitted_to_the_first_size(tmp_path):
    out = tmp_path / 'out.mp4'
    sink = VideoFileSink(out, fps=25)
    for i in range(12):
        sink.write(np.full((128, 128, 3), i * 20, np.uint8))
    assert not out.exists(), 'the file appears only when complete'
    sink.write(np.full((64, 128, 3), 250, np.uint8))   # another avatar, another shape: fitted, not refused
    sink.close()
    from fomm_model.video_io import read_video
    frames, fps = read_video(out)
    assert frames.shape == (13, 128, 128, 3) and fps == pytest.approx(25)
    assert abs(int(frames[5].mean()) - 100) <= 3
    assert frames[12][:20].max() < 10 and frames[12][50:70].min() > 240   # letterboxed
    with pytest.raises(ValueError, match="cannot write '.txt' files"):
        VideoFileSink(tmp_path / 'x.txt')


def _children(name: str) -> list[int]:
    import os
    pids = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                stat = open(f'/proc/{entry}/stat').read()
            except OSError:
                continue
            if int(stat.rsplit(')', 1)[1].split()[1]) == os.getpid() and name in stat.split(')')[0]:
                pids.append(int(entry))
    return pids


def test_an_encoder_that_dies_is_an_error_and_the_old_file_stays(tmp_path):
    import os
    import signal
    out = tmp_path / 'out.mp4'
    out.write_bytes(b'an earlier result')
    sink = VideoFileSink(out, fps=25)
    frame = np.full((128, 128, 3), 90, np.uint8)
    sink.write(frame)
    import time
    deadline = time.time() + 10
    while not _children('ffmpeg') and time.time() < deadline:
        time.sleep(0.05)
    for pid in _children('ffmpeg'):
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(OSError, match='ffmpeg encoder was killed'):
        for _ in range(200):
            sink.write(frame)
        sink.close()
    assert out.read_bytes() == b'an earlier result'
