"""Bad inputs give a clear, actionable error (exit code 2 from the CLI), odd but valid ones just work."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from helpers import EINSTEIN as AVATAR
from helpers import TINY_CONFIG, fomm, make_checkpoint, make_clip
from PIL import Image

from fomm_model.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
)
from fomm_model.cli import animate
from fomm_model.video_io import read_video


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp('ckpts')
    return {'tiny': make_checkpoint(d / 'tiny.pth.tar', TINY_CONFIG, with_discriminator=True),
            'face': make_checkpoint(d / 'face-128.pth.tar', 'face-128', with_discriminator=True)}


@pytest.fixture(scope='module')
def driving(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp('clip') / 'driving.mp4', frames=4)


def _animate(*extra) -> None:
    parser = argparse.ArgumentParser()
    animate.add_arguments(parser)
    assert animate.run(parser.parse_args([str(a) for a in extra])) == 0


def test_mismatched_config_and_checkpoint(ckpts, driving, tmp_path):
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(str(TINY_CONFIG), ckpts['face'])
    msg = str(err.value)
    assert 'tiny-128.yaml' in msg and 'face-128.pth.tar' in msg and 'kp_detector' in msg
    proc = fomm('animate', '--config', TINY_CONFIG, '--checkpoint', ckpts['face'], '--source_image', AVATAR,
                '--driving_video', driving, '--result_video', tmp_path / 'r.mp4', '--cpu')
    assert proc.returncode == 2
    assert 'tiny-128.yaml' in proc.stderr and 'face-128.pth.tar' in proc.stderr
    assert 'checkpoint (' in proc.stderr  # first mismatching keys with both shapes
    assert 'face-128' in proc.stderr.split('fits')[-1]  # names the config that fits
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'r.mp4').exists()


def test_truncated_checkpoint(ckpts, driving, tmp_path):
    bad = tmp_path / 'truncated.pth.tar'
    bad.write_bytes(ckpts['tiny'].read_bytes()[:50_000])
    with pytest.raises(CheckpointError, match='truncated'):
        load_checkpoint(str(TINY_CONFIG), bad)
    proc = fomm('reconstruct', '--config', TINY_CONFIG, '--checkpoint', bad, '--data', driving.parent, '--cpu')
    assert proc.returncode == 2 and 'truncated.pth.tar' in proc.stderr and 'Traceback' not in proc.stderr


def test_missing_and_corrupt_driving_video(ckpts, tmp_path):
    common = ['--config', TINY_CONFIG, '--checkpoint', ckpts['tiny'], '--source_image', AVATAR, '--cpu',
              '--result_video', tmp_path / 'r.mp4']
    proc = fomm('animate', *common, '--driving_video', tmp_path / 'missing.mp4')
    assert proc.returncode == 2 and 'missing.mp4' in proc.stderr and 'Traceback' not in proc.stderr
    corrupt = tmp_path / 'corrupt.mp4'
    corrupt.write_bytes(b'\x00\x00\x00\x18ftypmp42' + b'\x13' * 4000)
    proc = fomm('animate', *common, '--driving_video', corrupt)
    assert proc.returncode == 2 and 'corrupt.mp4' in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'r.mp4').exists()


def test_other_user_errors(ckpts, driving, tmp_path):
    common = ['--config', TINY_CONFIG, '--checkpoint', ckpts['tiny'], '--source_image', AVATAR, '--cpu',
              '--driving_video', driving, '--result_video', tmp_path / 'r.mp4']
    proc = fomm('animate', *common, '--audio')
    assert proc.returncode == 2 and 'no audio track' in proc.stderr
    proc = fomm('animate', *common, '--best_frame', '99')
    assert proc.returncode == 2 and '--best_frame 99' in proc.stderr
    proc = fomm('reconstruct', '--config', TINY_CONFIG, '--checkpoint', ckpts['tiny'], '--data', tmp_path / 'none')
    assert proc.returncode == 2 and 'none' in proc.stderr
    proc = fomm('animate', *common[:-2], '--source_image', tmp_path / 'nope.png', '--result_video', tmp_path / 'x.mp4')
    assert proc.returncode == 2 and 'nope.png' in proc.stderr


def test_crop_without_detector_model(tmp_path, driving, monkeypatch):
    monkeypatch.setenv('FOMM_FACE_DETECTOR_MODEL', str(tmp_path / 'absent.tflite'))
    proc = fomm('crop', '--input', driving)
    assert proc.returncode == 2 and '--fetch' in proc.stderr and 'Traceback' not in proc.stderr


@pytest.mark.parametrize('mode', ['RGBA', 'L', 'P'])
def test_source_alpha_grey_palette(ckpts, driving, tmp_path, mode):
    """A source with alpha / in greyscale / with a palette animates exactly like its plain RGB equivalent."""
    rgb = np.asarray(Image.open(AVATAR).convert('RGB'))
    if mode == 'RGBA':
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        alpha[:, :100] = 0  # transparent left strip -> white
        odd = Image.fromarray(np.dstack([rgb, alpha]), 'RGBA')
        plain = rgb.copy()
        plain[:, :100] = 255
        plain = Image.fromarray(plain)
    elif mode == 'L':
        odd = Image.fromarray(rgb).convert('L')
        plain = odd.convert('RGB')
    else:
        odd = Image.fromarray(rgb).convert('P')
        plain = odd.convert('RGB')
    odd.save(tmp_path / 'odd.png')
    plain.save(tmp_path / 'plain.png')
    outs = []
    for name in ('odd', 'plain'):
        out = tmp_path / f'{name}.mp4'
        _animate('--config', TINY_CONFIG, '--checkpoint', ckpts['tiny'], '--source_image', tmp_path / f'{name}.png',
                 '--driving_video', driving, '--result_video', out, '--relative', '--cpu',
                 '--backend', 'torch', '--dtype', 'float32')  # one runtime for both runs: auto may choose differently
        outs.append(read_video(out)[0])
    assert outs[0].shape == (4, 128, 128, 3)
    assert np.array_equal(outs[0], outs[1])
