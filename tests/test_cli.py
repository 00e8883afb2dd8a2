"""End-to-end runs of ``fomm animate``, ``fomm reconstruct`` and ``fomm crop`` on real clips, tiny models."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from helpers import CLIPS, TINY_CONFIG, fomm, make_checkpoint, make_clip
from helpers import EINSTEIN as AVATAR

from fomm_model.defaults import default_checkpoint_path
from fomm_model.face_detection import model_path
from fomm_model.video_io import has_audio, read_video, video_fps


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny.pth.tar', TINY_CONFIG, with_discriminator=True)


def test_animate_with_audio_and_best_frame(tmp_path, tiny_ckpt):
    driving = make_clip(tmp_path / 'driving.mp4', frames=12, tone=True)
    assert has_audio(driving)
    result = tmp_path / 'out' / 'result.mp4'
    proc = fomm('animate', '--config', TINY_CONFIG, '--checkpoint', tiny_ckpt, '--source_image', AVATAR,
                '--driving_video', driving, '--result_video', result, '--relative', '--adapt_scale',
                '--find_best_frame', '--audio', '--cpu')
    assert proc.returncode == 0, proc.stderr
    assert 'best frame:' in proc.stderr
    frames, fps = read_video(result)
    assert frames.shape == (12, 128, 128, 3)
    assert fps == pytest.approx(video_fps(driving))
    assert has_audio(result)
    assert frames.dtype == np.uint8


def test_animate_without_cpu_flag_announces_device(tmp_path, tiny_ckpt):
    driving = make_clip(tmp_path / 'd.mp4', frames=4)
    result = tmp_path / 'r.mp4'
    proc = fomm('animate', '--config', TINY_CONFIG, '--checkpoint', tiny_ckpt, '--source_image', AVATAR,
                '--driving_video', driving, '--result_video', result, '--best_frame', '2', '--dtype', 'bfloat16',
                '--side_by_side')
    assert proc.returncode == 0, proc.stderr
    import torch
    if not torch.cuda.is_available():
        # which runtime runs bfloat16 fastest depends on the CPU (auto); the device and precision are announced
        assert re.search(r'model runs on: \w+ on cpu \(bfloat16', proc.stderr), proc.stderr
        assert 'model runs on the CPU' in proc.stderr
    frames = read_video(result)[0]
    assert frames.shape == (4, 128, 3 * 128, 3)  # source | driving | result
    from fomm_model.video_io import resize_image
    expected = resize_image(read_video(driving)[0][0], (128, 128)).astype(float)  # middle panel = driving frame
    assert np.abs(frames[0, :, 128:256].astype(float) - expected).mean() < 8  # video codec loss only


def test_animate_default_checkpoint(tmp_path):
    driving = make_clip(tmp_path / 'd.mp4', frames=3)
    proc = fomm('animate', '--source_image', AVATAR, '--driving_video', driving, '--result_video',
                tmp_path / 'r.mp4', '--cpu')
    if default_checkpoint_path().is_file():
        assert proc.returncode == 0, proc.stderr
        assert read_video(tmp_path / 'r.mp4')[0].shape == (3, 128, 128, 3)
    else:
        assert proc.returncode == 2
        assert 'face-128.pth.tar' in proc.stderr and 'does not exist yet' in proc.stderr


def test_reconstruct_writes_scores_and_videos(tmp_path, tiny_ckpt):
    data = tmp_path / 'data'
    (data / 'test').mkdir(parents=True)
    (data / 'train').mkdir()
    for clip in CLIPS[:2]:
        make_clip(data / 'test' / clip.name, frames=8, clip=clip)
    make_clip(data / 'train' / 'ignored.mp4', frames=3)
    out = tmp_path / 'rec'
    js = tmp_path / 'scores.json'
    proc = fomm('reconstruct', '--config', TINY_CONFIG, '--checkpoint', tiny_ckpt, '--data', data, '--out', out,
                '--json', js, '--cpu')
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(js.read_text())
    for key in ('l1', 'l1_static', 'improvement', 'l1_video_mean', 'num_videos', 'num_frames', 'videos'):
        assert key in scores
    assert scores['num_videos'] == 2 and scores['num_frames'] == 16
    assert [v['video'] for v in scores['videos']] == [c.name for c in CLIPS[:2]]
    for v in scores['videos']:
        assert v['frames'] == 8
        assert all(math.isfinite(v[k]) for k in ('l1', 'l1_static', 'improvement'))
        assert 0 < v['l1'] < 1 and 0 < v['l1_static'] < 1
    assert scores['improvement'] == pytest.approx(1 - scores['l1'] / scores['l1_static'])
    frames, _ = read_video(out / (CLIPS[0].stem + '.mp4'))
    assert frames.shape == (8, 128, 256, 3)  # driving | prediction
    assert 'static baseline' in proc.stdout


def test_crop_prints_commands_and_writes_clip(tmp_path):
    if not model_path().is_file():
        pytest.skip('face detector model not fetched (python -m fomm_model.face_detection --fetch)')
    # a face clip placed off-centre in a larger frame, so the crop position is meaningful
    frames, fps = read_video(CLIPS[0], max_frames=30)
    canvas = np.full((30, 360, 480, 3), 40, np.uint8)
    canvas[:, 80:336, 200:456] = frames
    src = tmp_path / 'wide.mp4'
    from fomm_model.video_io import write_video
    write_video(src, canvas, fps)
    out = tmp_path / 'crops'
    proc = fomm('crop', '--input', src, '--output', out, '--min_frames', '20', '--image_shape', '128')
    assert proc.returncode == 0, proc.stderr
    commands = [ln for ln in proc.stdout.splitlines() if ln.startswith('ffmpeg ')]
    assert len(commands) == 1
    assert '-ss 0 ' in commands[0] and 'scale=128:128' in commands[0]
    crop = commands[0].split('crop=')[1].split(',')[0]
    w, h, x, y = map(int, crop.split(':'))
    assert 200 <= x <= 330 and 80 <= y <= 230 and x + w <= 480 and y + h <= 360  # around the face
    assert 80 <= w <= 256 and abs(w - h) <= 2
    clips = sorted(out.glob('*.mp4'))
    assert len(clips) == 1
    cropped, fps2 = read_video(clips[0])
    assert cropped.shape == (29, 128, 128, 3) and fps2 == pytest.approx(fps)
    # the crop shows the face, not the flat background
    assert cropped.std() > 20


def test_crop_reports_short_tubes(tmp_path):
    if not model_path().is_file():
        pytest.skip('face detector model not fetched')
    src = make_clip(tmp_path / 'short.mp4', frames=10)
    proc = fomm('crop', '--input', src)
    assert proc.returncode == 0
    assert 'no face tube longer than 150' in proc.stderr and not proc.stdout.strip()


def test_crop_box_geometry():
    from fomm_model.cli.crop import crop_box, iou
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    # a tall 100x140 box in the middle of a big frame: grown by >= 10% per side and made square
    x, y, w, h = crop_box((200, 100, 300, 240), (720, 1280, 3), 0.1)
    assert w == h and w >= 140 * 1.2 - 1 and x < 200 and y < 100
    assert (x + w / 2, y + h / 2) == pytest.approx((250, 170), abs=1)
    # clipped at the frame border
    x, y, w, h = crop_box((0, 0, 100, 100), (200, 200, 3), 0.1)
    assert (x, y) == (0, 0) and w == h == 110
