"""End to end: the engine and the headless CLI on a real face clip, a real avatar and a random-weight model."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_live_support import AVATAR, SHARED, make_checkpoint

from live.engine import Engine, EngineError, EngineOptions, EngineSettings
from live.headless import main as headless_main

CLIP = SHARED / 'data' / 'faces' / 'test' / 'grid_lwbsza#grid_lipnet__lwbsza.mp4'   # 75 frames, 25 fps
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    return make_checkpoint(tmp_path_factory.mktemp('ckpt') / 'face-128.pth.tar', seed=2)


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv('FOMM_LIVE_CACHE', str(tmp_path_factory.getbasetemp() / 'live-cache'))


def test_headless_cli_writes_every_frame(checkpoint, tmp_path, capsys):
    out = tmp_path / 'out.mp4'
    code = headless_main(['--input', str(CLIP), '--avatar', str(AVATAR), '--checkpoint', str(checkpoint),
                          '--backend', 'torch', '--output', str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert 'frames:     in 75, out 75, dropped 0' in printed
    for stage in ('capture', 'crop', 'model', 'output', 'latency'):
        assert stage in printed
    assert 'torch on cpu (float32)' in printed
    from fomm_model.video_io import read_video
    frames, fps = read_video(out)
    assert frames.shape == (75, 128, 128, 3) and fps == pytest.approx(25)


def test_engine_api_with_listener_calibration_and_stats(checkpoint):
    engine = Engine(EngineOptions(source=str(CLIP), checkpoint=str(checkpoint), backend='torch', loop_file=True,
                                  realtime=True), EngineSettings(mirror_preview=True))
    info = engine.set_avatar(AVATAR)
    assert info.face_found and info.image.shape == (128, 128, 3)
    results, seen = [], threading.Event()

    def on_frame(r):
        results.append(r)
        if len(results) >= 12:
            seen.set()

    engine.add_listener(on_frame)
    engine.start()
    engine.start()  # idempotent
    try:
        assert seen.wait(60)
        first_uncalibrated = results[0]
        engine.calibrate()
        n = len(results)
        deadline = time.time() + 30
        while not (results[-1].calibrated and len(results) > n + 3) and time.time() < deadline:
            time.sleep(0.05)
        engine.update_settings(crop_zoom=1.5, kp_smoothing=0.5, overlay_alpha=0.3)
        with pytest.raises(TypeError, match='unknown setting'):
            engine.update_settings(colour='red')
        with pytest.raises(ValueError):
            engine.update_settings(crop_zoom=0)
        time.sleep(0.3)
        stats = engine.stats()
    finally:
        engine.stop()
        engine.stop()
    assert not first_uncalibrated.calibrated
    assert np.array_equal(first_uncalibrated.output, info.image)  # avatar unmoved before calibration
    r = results[-1]
    assert r.calibrated and r.face_found and r.crop_box is not None
    assert r.camera.shape == (256, 256, 3) and r.driving.shape == (128, 128, 3) and r.keypoints.shape == (10, 2)
    assert set(r.timings_ms) >= {'capture', 'crop', 'model', 'output', 'total'}
    assert engine.latest() is results[-1]
    assert engine.settings.crop_zoom == 1.5
    assert stats.frames_out >= 15 and stats.frames_in >= stats.frames_out
    assert stats.camera_state == 'running' and stats.camera_resolution == (256, 256) and stats.camera_fps == 25
    assert stats.stages['total'].p95_ms >= stats.stages['total'].mean_ms * 0.5 > 0
    assert stats.backend.startswith('torch') and stats.face_detector.startswith('mediapipe')
    assert engine.virtual_camera_status().state == 'off'


def test_bad_inputs_exit_2_with_clear_messages(checkpoint, tmp_path, capsys):
    base = ['--input', str(CLIP), '--avatar', str(AVATAR), '--checkpoint', str(checkpoint), '--backend', 'torch']
    cases = [
        (['--avatar', str(tmp_path / 'none.png')], 'avatar image not found'),
        (['--input', str(tmp_path / 'none.mp4')], 'input file not found'),
        (['--checkpoint', str(tmp_path / 'none.pth.tar')], 'checkpoint not found'),
        (['--device', 'cuda'], 'download.pytorch.org' if not torch.cuda.is_available() else None),
        (['--input', 'no camera with this name'], 'no camera named'),
    ]
    for extra, message in cases:
        if message is None:
            continue
        args = list(base)
        for i in range(0, len(extra), 2):
            if extra[i] in args:
                args[args.index(extra[i]) + 1] = extra[i + 1]
            else:
                args += extra[i:i + 2]
        assert headless_main(args) == 2, extra
        assert message in capsys.readouterr().err, extra


def test_camera_resolution_is_chosen_for_the_device_and_can_be_set(checkpoint, capsys):
    from live.engine import EngineOptions, camera_request
    size, why = camera_request(EngineOptions(device='cpu'))
    assert size == (640, 480) and 'CPU' in why and '--camera-size' in why
    assert camera_request(EngineOptions(device='cuda'))[0] == (1280, 720)
    assert camera_request(EngineOptions(device='cpu', capture_size=(1920, 1080))) == ((1920, 1080), 'as asked')
    base = ['--input', str(CLIP), '--avatar', str(AVATAR), '--checkpoint', str(checkpoint), '--backend', 'torch']
    with pytest.raises(SystemExit) as exc:
        headless_main(base + ['--camera-size', '640by480'])
    assert exc.value.code == 2
    assert "--camera-size: expected WIDTHxHEIGHT such as 1280x720, got '640by480'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        headless_main(base + ['--vcam-size', '0x720'])
    assert 'must be positive' in capsys.readouterr().err


def test_default_model_missing_is_explained(monkeypatch, tmp_path):
    import fomm_model.defaults as defaults
    monkeypatch.setattr(defaults, 'default_checkpoint_path', lambda: tmp_path / 'face-128.pth.tar')
    with pytest.raises(EngineError, match='does not exist yet'):
        Engine(EngineOptions(source=str(CLIP)))


def test_main_py_runs_headless_as_a_program(checkpoint, tmp_path):
    out = tmp_path / 'o.mp4'
    proc = subprocess.run([sys.executable, 'main.py', '--headless', '--input', str(CLIP), '--avatar', str(AVATAR),
                           '--checkpoint', str(checkpoint), '--backend', 'onnx', '--max-frames', '10',
                           '--output', str(out), '--virtual-camera', '--vcam-size', '640x360'],
                          cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**__import__('os').environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'virtual camera: unavailable' in proc.stderr and 'modprobe v4l2loopback' in proc.stderr
    assert 'onnx on cpu' in proc.stdout and out.is_file()


def test_engine_switches_source_live_and_caps_fps(checkpoint):
    other = SHARED / 'data' / 'faces' / 'test' / 'grid_swiz3n#grid_lipnet__swiz3n.mp4'
    engine = Engine(EngineOptions(source=str(CLIP), checkpoint=str(checkpoint), backend='torch', realtime=True),
                    EngineSettings(fps_cap=8.0))
    engine.set_avatar(AVATAR)
    labels = []
    engine.add_listener(lambda r: labels.append(engine.source.label))
    engine.start()
    try:
        time.sleep(1.5)
        engine.set_source(str(other))
        time.sleep(1.5)
        stats = engine.stats()
    finally:
        engine.stop()
    assert labels[0] == CLIP.name and labels[-1] == other.name
    assert stats.camera_state == 'running' and stats.frames_out >= 10
    assert stats.fps <= 9.5            # fps_cap honoured (the source runs at 25 fps)
    assert stats.dropped > 0           # frames beyond the cap are dropped, not queued
