"""``main.py run`` end to end on a real face clip, a real avatar and the bundled model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import AVATAR, SHARED, make_checkpoint

from fomm_model.video_io import read_video
from live.app import split_command
from live.headless import main as headless_main

CLIP = SHARED / 'data' / 'faces' / 'test' / 'grid_lwbsza#grid_lipnet__lwbsza.mp4'   # 75 frames, 25 fps
REPO = Path(__file__).resolve().parents[1]
BASE = ['--input', str(CLIP), '--avatar', str(AVATAR), '--backend', 'torch', '--device', 'cpu']


def main_py(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, 'main.py', *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_every_frame_of_a_file_is_written(tmp_path, capsys):
    out = tmp_path / 'out.mp4'
    assert headless_main(BASE + ['--output', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'frames:     in 75, out 75, dropped 0' in printed
    for stage in ('capture', 'crop', 'model', 'output', 'latency'):
        assert stage in printed
    assert 'torch on cpu (float32)' in printed and 'output:     ' in printed
    frames, fps = read_video(out)
    assert frames.shape[0] == 75 and fps == pytest.approx(25)


def test_a_mouth_gain_on_a_model_without_lip_keypoints_is_reported(tmp_path, capsys):
    plain = make_checkpoint(tmp_path / 'plain.pth.tar')   # face-128: no train_params.landmark_keypoints
    assert headless_main(BASE + ['--checkpoint', str(plain), '--config', 'face-128', '--max-frames', '3',
                                 '--mouth-gain', '2']) == 0
    printed = capsys.readouterr().out
    assert 'mouth gain: n/a' in printed
    assert 'notice:     the mouth gain has no effect: this model names no lip keypoints' in printed


def test_max_frames_writes_exactly_that_many(tmp_path, capsys):
    out = tmp_path / 'ten.mp4'
    assert headless_main(BASE + ['--output', str(out), '--max-frames', '10', '--loop']) == 0
    assert 'out 10,' in capsys.readouterr().out
    assert read_video(out)[0].shape[0] == 10


@pytest.mark.parametrize('extra,message', [
    (['--avatar', '/nonexistent/none.png'], 'avatar image not found'),
    (['--input', '/nonexistent/none.mp4'], 'input file not found'),
    (['--checkpoint', '/nonexistent/none.pth.tar'], 'checkpoint not found'),
    (['--input', 'no camera with this name'], 'no camera named'),
])
def test_bad_inputs_exit_2_with_clear_messages(extra, message, capsys):
    args = list(BASE)
    if extra[0] in args:
        args[args.index(extra[0]) + 1] = extra[1]
    else:
        args += extra
    assert headless_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err


@pytest.mark.parametrize('extra,message', [
    (['--vcam-fps', '0'], '--vcam-fps must be between 1 and 120'),
    (['--vcam-fps', '-1'], '--vcam-fps must be between 1 and 120'),
    (['--kp-smoothing', '5'], '--kp-smoothing must be between 0 and 1'),
    (['--max-frames', '0'], '--max-frames must be at least 1'),
    (['--duration', '-1'], '--duration must be more than 0'),
    (['--camera-size', '640by480'], "expected WIDTHxHEIGHT such as 1280x720, got '640by480'"),
    (['--vcam-size', '0x720'], 'must be positive'),
    (['--device', 'gpu'], "unknown device 'gpu'"),
    (['--backend', 'fast'], '--backend must be one of auto, torch'),
    (['--mouth-gain', '6'], '--mouth-gain must be between 0 and 5'),
])
def test_bad_numbers_and_names_are_refused_before_anything_runs(extra, message, capsys):
    with pytest.raises(SystemExit) as exc:
        headless_main(BASE + extra)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the no-GPU message')
def test_cuda_without_a_gpu_says_how_to_get_one(capsys):
    assert headless_main(BASE + ['--device', 'cuda']) == 2
    err = capsys.readouterr().err
    assert 'no CUDA support' in err and 'pytorch.org' in err and 'Traceback' not in err


def test_calibration_past_the_end_of_the_file_is_reported(capsys):
    assert headless_main(BASE + ['--calibrate-at', '60']) == 0
    assert 'never calibrated' in capsys.readouterr().err


def test_main_py_commands_and_the_old_headless_flag(tmp_path):
    assert split_command(['--headless', '--input', '0']) == ('run', ['--input', '0'])
    assert split_command(['cameras']) == ('cameras', [])
    assert split_command(['--input', 'x.mp4']) == ('gui', ['--input', 'x.mp4'])
    out = tmp_path / 'o.mp4'
    proc = main_py('--headless', *BASE[:4], '--backend', 'onnx', '--max-frames', '6', '--loop', '--output', str(out),
                   '--virtual-camera', '--vcam-size', '640x360', '--mouth-gain', '1.5')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'virtual camera: unavailable' in proc.stderr and 'modprobe v4l2loopback' in proc.stderr
    assert 'onnx on cpu' in proc.stdout and read_video(out)[0].shape[0] == 6
    assert 'mouth gain: 1.5' in proc.stdout
    cams = main_py('cameras', timeout=60)
    assert cams.returncode == 0 and cams.stdout.strip()


def digest(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize('target,message', [
    ('input', '--output'), ('avatar', '--output'), ('x.txt', "cannot write '.txt' files"), ('folder', 'is a folder'),
])
def test_an_output_that_is_an_input_or_unwritable_is_refused_before_anything_runs(tmp_path, capsys, target,
                                                                                   message):
    import shutil
    clip, avatar = tmp_path / 'in.mp4', tmp_path / 'me.png'
    shutil.copy(CLIP, clip)
    shutil.copy(AVATAR, avatar)
    before = {p: digest(p) for p in (clip, avatar)}
    out = {'input': clip, 'avatar': avatar, 'x.txt': tmp_path / 'x.txt', 'folder': tmp_path}[target]
    args = ['--input', str(clip), '--avatar', str(avatar), '--backend', 'torch', '--device', 'cpu',
            '--output', str(out)]
    assert headless_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err
    assert {p: digest(p) for p in before} == before
    assert not (tmp_path / 'x.txt').exists()


@pytest.mark.parametrize('content,message', [(b'', 'it is empty'), (b'not a video\n', 'not a video OpenCV can decode')])
def test_a_file_that_is_no_video_fails_at_once_and_says_why(tmp_path, capsys, content, message):
    bad = tmp_path / 'clip.mp4'
    bad.write_bytes(content)
    args = ['--input', str(bad), '--avatar', str(AVATAR), '--backend', 'torch', '--device', 'cpu']
    assert headless_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and 'reconnecting' not in err and 'Traceback' not in err
    assert headless_main(['--input', str(tmp_path), '--avatar', str(AVATAR)]) == 2
    assert 'is a folder' in capsys.readouterr().err


def test_calibration_waits_for_the_first_frame_with_a_face(tmp_path, capsys):
    import numpy as np

    from fomm_model.video_io import write_video
    frames, fps = read_video(CLIP, max_frames=20)
    clip = tmp_path / 'late_face.mp4'
    write_video(clip, [np.zeros_like(frames[0])] * 10 + list(frames), fps)
    out = tmp_path / 'out.mp4'
    args = ['--input', str(clip), '--avatar', str(AVATAR), '--backend', 'torch', '--device', 'cpu',
            '--output', str(out), '--no-paste-back']
    assert headless_main(args) == 0
    err = capsys.readouterr().err
    assert 'frame 0: no face, so calibration waits' in err
    calibrated = int(err.split('calibrated on frame ')[1].split()[0])
    assert 10 <= calibrated <= 12          # the first face frames (detection may lag a frame)
    written = read_video(out)[0]
    assert written.shape[0] == 30
    assert np.abs(written[0].astype(int) - written[5]).mean() < 2   # before: the avatar, unmoved


def test_malformed_yaml_config_is_named_by_file_and_line_without_a_traceback(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model_params:\n  common_params:\n    num_kp: 10\n   kp_detector_params: {temperature: 0.1\n')
    out = tmp_path / 'out.mp4'
    proc = main_py('run', *BASE, '--config', str(bad), '--output', str(out), '--max-frames', '2')
    assert proc.returncode == 2, proc.stderr
    assert f'{bad}, line 4' in proc.stderr and 'not valid YAML' in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr and not out.exists()


def test_output_delay_is_said_with_what_to_do_about_the_microphone(capsys, recording_backend):
    assert headless_main(BASE + ['--max-frames', '3', '--virtual-camera', '--vcam-size', '320x180',
                                 '--output-delay', '120']) == 0
    err = capsys.readouterr().err
    assert 'virtual camera: on' in err and '120 ms after its camera frame' in err and 'microphone' in err
    assert recording_backend.instances and recording_backend.instances[-1].closed
