"""Capture thread: newest-frame hand-off with drops, reopening lost devices, file sources, source parsing."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from helpers import FACE_CLIP

from live.cameras import CameraInfo, SourceError, resolve_source
from live.capture import Capture, FileReader, ReaderError


class CountingReader:
    """A real frame source producing numbered frames at a fixed rate; ``fail_after`` makes the device vanish."""

    live = True

    def __init__(self, fps: float = 200.0, fail_after: int | None = None, start: int = 0):
        self.fps, self.size = fps, (32, 24)
        self.fail_after, self.n, self.start = fail_after, 0, start
        self.closed = False

    def read(self) -> np.ndarray:
        if self.fail_after is not None and self.n >= self.fail_after:
            raise ReaderError('device unplugged')
        time.sleep(1.0 / self.fps)
        frame = np.full((24, 32, 3), (self.start + self.n) % 256, np.uint8)
        self.n += 1
        return frame

    def close(self) -> None:
        self.closed = True


def test_slow_consumer_gets_newest_frames_and_drops_are_counted():
    cap = Capture(lambda: CountingReader(fps=200), realtime=True, name='fast')
    cap.start()
    try:
        got = []
        for _ in range(6):
            f = cap.read(timeout=2)
            assert f is not None
            got.append(f)
            time.sleep(0.05)  # consumer 10x slower than the source
    finally:
        cap.stop()
    indices = [f.index for f in got]
    assert indices == sorted(indices)
    assert min(np.diff(indices)) >= 3, indices   # stale frames were skipped, not queued
    assert cap.dropped >= 10
    assert cap.frames_read >= cap.dropped + len(got)   # nothing queued: latency cannot grow with a backlog


def test_reader_failing_mid_stream_is_reopened():
    opened = []

    def factory():
        if len(opened) == 1:  # the second open fails too (camera still away), the third works
            opened.append(None)
            raise ReaderError('no such device')
        reader = CountingReader(fps=500, fail_after=5 if not opened else None, start=100 * len(opened))
        opened.append(reader)
        return reader

    states = []
    cap = Capture(factory, realtime=False, name='flaky', backoff=(0.01, 0.05))
    cap.start()
    try:
        values = []
        deadline = time.time() + 5
        while len(values) < 12 and time.time() < deadline:
            f = cap.read(timeout=0.5)
            states.append(cap.state)
            if f is not None:
                values.append(int(f.image[0, 0, 0]))
    finally:
        cap.stop()
    assert values[:5] == [0, 1, 2, 3, 4]
    assert values[5] == 200  # frames continue from the reopened device
    assert len(opened) == 3 and opened[0].closed
    assert cap.reopens == 1
    assert cap.state == 'stopped'


def test_file_source_non_realtime_delivers_every_frame_and_ends():
    cap = Capture(lambda: FileReader(str(FACE_CLIP), loop=False), realtime=False, name='clip')
    cap.start()
    n = 0
    try:
        while True:
            f = cap.read(timeout=5)
            if f is None:
                break
            assert f.image.shape == (256, 256, 3) and f.image.dtype == np.uint8
            n += 1
    finally:
        cap.stop()
    from fomm_model.video_io import read_video
    assert n == len(read_video(FACE_CLIP)[0])
    assert cap.dropped == 0 and cap.size == (256, 256) and cap.nominal_fps and cap.nominal_fps > 0


def test_small_files_decode_on_one_thread_to_the_same_pixels(tmp_path):
    """Up to 720p FFmpeg decodes on one thread (CPU the model needs), with the very frames of its default decoder;
    a larger file keeps FFmpeg's threads."""
    from live.capture import SINGLE_THREAD_DECODE_PIXELS
    from live.cv2_compat import cv2
    from fomm_model.video_io import read_video, write_video
    reader = FileReader(str(FACE_CLIP), loop=False)
    default = cv2.VideoCapture(str(FACE_CLIP))
    try:
        assert reader.cap.get(cv2.CAP_PROP_N_THREADS) == 1
        several = (os.cpu_count() or 1) > 1                                     # FFmpeg's default: one per core
        assert (default.get(cv2.CAP_PROP_N_THREADS) > 1) == several
        for _ in range(30):
            ok, frame = default.read()
            assert ok and np.array_equal(reader.read(), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        reader.close()
        default.release()
    big = tmp_path / 'big.mp4'
    frames = read_video(FACE_CLIP, max_frames=3)[0]
    write_video(big, [cv2.resize(f, (1920, 1088)) for f in frames], fps=25)
    assert 1920 * 1088 > SINGLE_THREAD_DECODE_PIXELS
    reader = FileReader(str(big), loop=False)
    try:
        assert (reader.cap.get(cv2.CAP_PROP_N_THREADS) > 1) == several
        assert reader.read().shape == (1088, 1920, 3)
    finally:
        reader.close()


def test_inline_capture_decodes_every_frame_on_the_callers_thread_and_reports_the_end(tmp_path):
    cap = Capture(lambda: FileReader(str(FACE_CLIP), loop=False), realtime=False, name='clip', inline=True)
    cap.start()
    images = []
    try:
        assert cap.state == 'running' and cap.size == (256, 256)
        assert not any(t.name.startswith('capture-') for t in threading.enumerate())   # no thread of its own
        while (f := cap.read(0)) is not None:
            assert f.index == len(images) and f.read_ms >= 0
            images.append(f.image)
    finally:
        cap.stop()
    from fomm_model.video_io import read_video
    expected = read_video(FACE_CLIP)[0]
    assert len(images) == len(expected) and cap.frames_read == len(expected) and cap.dropped == 0
    assert cap.state == 'ended' and cap.finished and cap.read(0) is None
    # a file that cannot be opened fails with the reader's explanation instead of retrying for ever
    bad = tmp_path / 'broken.mp4'
    bad.write_bytes(b'not a video')
    cap = Capture(lambda: FileReader(str(bad), loop=False), realtime=False, name='broken', inline=True)
    cap.start()
    assert cap.state == 'failed' and 'broken.mp4' in cap.message and cap.finished and cap.read(0) is None


def test_file_source_realtime_is_paced_at_file_fps():
    cap = Capture(lambda: FileReader(str(FACE_CLIP), loop=True), realtime=True, name='clip')
    cap.start()
    try:
        t0 = time.perf_counter()
        first = cap.read(timeout=5)
        time.sleep(0.5)
        last = cap.read(timeout=5)
        elapsed = time.perf_counter() - t0
    finally:
        cap.stop()
    fps = cap.nominal_fps
    produced = last.index - first.index
    assert produced <= fps * elapsed + 3, (produced, fps, elapsed)   # not faster than the file's fps
    assert produced >= fps * 0.5 * 0.6


def test_resolve_source_kinds(tmp_path):
    cams = [CameraInfo(0, 'Integrated Camera', '/dev/video0'), CameraInfo(2, 'Logitech BRIO', '/dev/video2')]
    assert resolve_source(1).index == 1
    assert resolve_source('3').kind == 'camera'
    assert resolve_source('/dev/video2').index == 2
    assert resolve_source('brio', cams).index == 2
    assert resolve_source('rtsp://host/stream').kind == 'stream'
    assert resolve_source(str(FACE_CLIP)).kind == 'file'
    with pytest.raises(SourceError, match='not found'):
        resolve_source(str(tmp_path / 'missing.mp4'))
    with pytest.raises(SourceError, match='Logitech BRIO'):
        resolve_source('no such cam', cams)


def test_list_cameras_reads_v4l2_names(tmp_path):
    from live.cameras import list_cameras
    for node, name, index in (('video0', 'Integrated Camera: Integrated C', '0'),
                              ('video1', 'Integrated Camera: Integrated C', '1'),   # metadata node
                              ('video4', 'fomm-live', '0')):
        (tmp_path / node).mkdir()
        (tmp_path / node / 'name').write_text(name + '\n')
        (tmp_path / node / 'index').write_text(index + '\n')
    cams = list_cameras(tmp_path)
    assert [(c.index, c.name, c.path) for c in cams] == [(0, 'Integrated Camera: Integrated C', '/dev/video0'),
                                                         (4, 'fomm-live', '/dev/video4')]
    assert resolve_source('FOMM', cams).index == 4
