"""Helper threads (capture and its decoder, face detection and mediapipe's own threads) run at low priority so
that the model keeps the cores; the engine thread and the model's threads keep normal priority."""
from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest
from helpers import AVATAR, FACE_CLIP

from live import priority
from live.capture import Capture, FileReader
from live.detection_worker import DetectionWorker

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='per-thread nice values are Linux only')


def nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def tasks() -> set[int]:
    return {int(t) for t in os.listdir('/proc/self/task')}


def test_lowering_affects_only_the_calling_thread_and_what_it_starts():
    main = nice_of(threading.get_native_id())
    seen = {}

    def child():
        seen['child'] = nice_of(threading.get_native_id())

    def worker():
        assert priority.lower_current_thread()
        seen['worker'] = nice_of(threading.get_native_id())
        t = threading.Thread(target=child)
        t.start()
        t.join()
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {'worker': priority.BACKGROUND_NICE, 'child': priority.BACKGROUND_NICE}
    assert nice_of(threading.get_native_id()) == main == nice_of(os.getpid())


def test_create_in_background_returns_the_object_and_raises_its_error():
    made = priority.create_in_background(lambda: (threading.current_thread().name,
                                                  nice_of(threading.get_native_id())))
    assert made == ('fomm-background-init', priority.BACKGROUND_NICE)
    with pytest.raises(ValueError, match='bad'):
        priority.create_in_background(lambda: (_ for _ in ()).throw(ValueError('bad')))


def test_capture_thread_and_its_decoder_run_at_low_priority():
    before = tasks()
    cap = Capture(lambda: FileReader(str(FACE_CLIP), loop=False), realtime=False, name='clip')
    cap.start()
    try:
        assert cap.read(timeout=10) is not None
        new = tasks() - before
        assert new and all(nice_of(t) == priority.BACKGROUND_NICE for t in new)   # capture + FFmpeg's threads
    finally:
        cap.stop()


def test_detection_worker_runs_at_low_priority():
    seen = []
    worker = DetectionWorker(lambda frame: seen.append(nice_of(threading.get_native_id())))
    try:
        assert worker.submit(np.zeros((4, 4, 3), np.uint8), 0.0)
        assert worker.wait_idle(5)
    finally:
        worker.close()
    assert seen == [priority.BACKGROUND_NICE]


def test_engine_helpers_low_engine_and_model_normal():
    """A real engine: the face detector's threads (mediapipe) and the capture threads are lowered, the engine
    thread and the model's threads are not, and frames still flow with face tracking."""
    from live.engine import Engine
    from live.options import CaptureOptions, ModelOptions, Settings
    before = tasks()
    engine = Engine(ModelOptions(backend='torch', device='cpu', threads=2),
                    CaptureOptions(input=str(FACE_CLIP), loop=True, realtime=False),
                    Settings(mirror_preview=False, paste_back=False))
    frames = []
    done = threading.Event()

    def listen(result):
        frames.append(result.face_found)
        if len(frames) >= 20:
            done.set()
    try:
        engine.set_avatar(AVATAR)
        engine.calibrate()
        engine.add_listener(listen)
        engine.start()
        assert done.wait(120)
        names = {t.native_id: t.name for t in threading.enumerate()}
        started = [(names.get(t) or open(f'/proc/self/task/{t}/comm').read().strip(), nice_of(t))
                   for t in tasks() - before]
        lowered = {n for n, nice in started if nice == priority.BACKGROUND_NICE}
        normal = {n for n, nice in started if nice < priority.BACKGROUND_NICE}
        assert 'fomm-engine' in normal and 'fomm-face-detect' in lowered and 'drishti' in lowered
        assert any(n.startswith('capture-') for n in lowered)
        detections = engine.submit(lambda: engine.pipeline.cropper.detections).result(30)
    finally:
        engine.close()
    assert all(frames[5:]) and detections >= 2
