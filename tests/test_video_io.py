"""Video and image IO on real clips: round trips, formats, audio muxing and clear errors."""
from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from fomm_model import video_io as vio

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
CLIP = sorted((SHARED / 'data/faces/test').glob('*.mp4'))[0]


@pytest.fixture(scope='module')
def clip_frames():
    frames, fps = vio.read_video(CLIP, max_frames=12)
    return frames, fps


def test_read_video_shape_and_fps(clip_frames):
    frames, fps = clip_frames
    assert frames.shape == (12, 256, 256, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(vio.video_fps(CLIP)) and 10 <= fps <= 60
    assert frames.std() > 10  # real content, not a blank decode


def test_iter_video_matches_read_video(clip_frames):
    frames, _ = clip_frames
    it = list(vio.iter_video(CLIP, max_frames=12))
    assert len(it) == 12 and np.array_equal(np.stack(it), frames)


def test_mp4_round_trip(tmp_path, clip_frames):
    frames, fps = clip_frames
    out = tmp_path / 'sub' / 'out.mp4'
    assert vio.write_video(out, iter(frames), fps) == len(frames)
    back, fps2 = vio.read_video(out)
    assert back.shape == frames.shape and fps2 == pytest.approx(fps)
    assert np.abs(back.astype(float) - frames).mean() < 4  # lossy but close
    assert not vio.has_audio(out)
    assert not list(out.parent.glob('.*'))  # no temporary files left behind


@pytest.mark.parametrize('ext', ['.gif', '.avi', '.mov'])
def test_other_containers(tmp_path, clip_frames, ext):
    frames, _ = clip_frames
    out = tmp_path / f'clip{ext}'
    vio.write_video(out, frames[:4], 10)
    back, fps = vio.read_video(out)
    assert back.shape == (4, 256, 256, 3)
    assert fps == pytest.approx(10, rel=0.05)
    assert np.abs(back.astype(float) - frames[:4]).mean() < 12  # GIF quantises colours


def test_folder_of_frames_and_strip(tmp_path, clip_frames):
    frames, _ = clip_frames
    folder = tmp_path / 'frames.mp4'  # vox-png style: a directory named like a video
    folder.mkdir()
    for i in range(11, -1, -1):
        Image.fromarray(frames[i]).save(folder / f'{i}.png')
    back, fps = vio.read_video(folder)
    assert np.array_equal(back, frames)  # natural order: 2 before 10
    assert fps == vio.DEFAULT_FOLDER_FPS
    strip = tmp_path / 'strip.png'
    Image.fromarray(np.concatenate(list(frames[:3]), axis=1)).save(strip)
    back, _ = vio.read_video(strip, frame_shape=(256, 256))
    assert np.array_equal(back, frames[:3])


def test_audio_is_muxed(tmp_path, clip_frames):
    frames, fps = clip_frames
    tone = tmp_path / 'tone.m4a'
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-loglevel', 'error', '-f', 'lavfi', '-i',
                    'sine=frequency=440:duration=2', '-c:a', 'aac', str(tone)], check=True)
    assert vio.has_audio(tone)
    out = tmp_path / 'with_audio.mp4'
    vio.write_video(out, frames, fps, audio_from=tone)
    assert vio.has_audio(out)
    back, fps2 = vio.read_video(out)
    assert len(back) == len(frames) and fps2 == pytest.approx(fps)
    silent = tmp_path / 'silent.mp4'
    vio.write_video(silent, frames[:3], fps, audio_from=CLIP)  # no audio there: written silent
    assert not vio.has_audio(silent)


def test_read_image_modes(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, ..., 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba).save(tmp_path / 'a.png')
    img = vio.read_image(tmp_path / 'a.png')
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (200, 0, 0) and tuple(img[7, 7]) == (255, 255, 255)
    Image.fromarray(np.full((8, 8), 77, np.uint8), 'L').save(tmp_path / 'g.png')
    assert np.all(vio.read_image(tmp_path / 'g.png') == 77)
    Image.fromarray(np.full((8, 8), 77, np.uint8), 'L').convert('P').save(tmp_path / 'p.png')
    assert vio.read_image(tmp_path / 'p.png').shape == (8, 8, 3)
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / 'i16.png')
    assert np.all(vio.read_image(tmp_path / 'i16.png') == 255)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.mp4'):
        vio.read_video(tmp_path / 'missing.mp4')
    with pytest.raises(FileNotFoundError, match='missing.png'):
        vio.read_image(tmp_path / 'missing.png')
    bad = tmp_path / 'corrupt.mp4'
    bad.write_bytes(b'\x00garbage' * 500)
    with pytest.raises(vio.VideoReadError, match='corrupt.mp4'):
        vio.read_video(bad)
    with pytest.raises(vio.VideoReadError):
        next(vio.iter_video(bad))
    bad_img = tmp_path / 'corrupt.png'
    bad_img.write_bytes(b'nope')
    with pytest.raises(vio.ImageReadError, match='corrupt.png'):
        vio.read_image(bad_img)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(vio.VideoReadError, match='frame images'):
        vio.read_video(empty)
    assert issubclass(vio.VideoReadError, ValueError)


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match='uint8'):
        vio.write_video(tmp_path / 'x.mp4', [np.zeros((8, 8, 3), np.float32)], 25)
    with pytest.raises(ValueError, match='no frames'):
        vio.write_video(tmp_path / 'x.mp4', [], 25)
    assert not (tmp_path / 'x.mp4').exists()
