"""Finding a checkpoint's config from its state-dict names and shapes (fomm_model.config_detection), and the one
place the commands get it from (fomm_model.defaults.resolve_model)."""
from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import AVATAR, make_checkpoint, make_clip

from fomm_model import available_configs, build_models, load_config
from fomm_model.checkpoint import UnsafeCheckpointError
from fomm_model.config_detection import (
    ConfigDetectionError,
    detect_checkpoint_config,
    detect_config,
    expected_state,
)
from fomm_model.defaults import DEFAULT_CONFIG, default_checkpoint_path, resolve_model

# configs that build the same keypoint detector, generator and discriminator: a checkpoint of one is
# detected as the first (module docstring rules 1 and 4), which animates identically
DISCRIMINATOR_TWINS = [('vox-256', 'bair-256', 'nemo-256', 'ted-256'), ('fashion-256', 'taichi-256'),
                       ('vox-adv-256', 'taichi-adv-256')]


def _shapes(state: dict) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.fixture(scope='module')
def meta_checkpoints() -> dict[str, dict]:
    """Every bundled config's state dicts, built on the meta device (shapes only: the 256-px generators
    would take seconds each to initialise on two cores)."""
    out = {}
    for name in available_configs():
        with torch.device('meta'):
            models = build_models(name, with_discriminator=True)
        out[name] = {k: m.state_dict() for k, m in models.modules().items()}
    return out


def test_meta_build_has_the_real_builds_names_and_shapes():
    real = build_models('face-128', with_discriminator=True)
    config = load_config('face-128')
    for network, module in real.modules().items():
        assert _shapes(expected_state(config, network)) == _shapes(module.state_dict())


def test_vox_shapes_match_the_original_implementations(reference_dir):
    """The reference fixture records the original code's key -> shape for vox-256 and vox-adv-256."""
    original = json.loads((reference_dir / 'vox256_state_keys.json').read_text())
    adv = json.loads((reference_dir / 'vox_adv256_discriminator_keys.json').read_text())
    for network, shapes in original.items():
        assert _shapes(expected_state(load_config('vox-256'), network)) == {k: tuple(v) for k, v in shapes.items()}
    assert _shapes(expected_state(load_config('vox-adv-256'), 'discriminator')) == \
        {k: tuple(v) for k, v in adv['discriminator'].items()}
    # and a checkpoint with exactly those shapes (the published vox-cpk.pth.tar layout) is detected
    ckpt = {n: {k: torch.empty(v, device='meta') for k, v in s.items()} for n, s in original.items()}
    assert detect_config(ckpt, Path('vox-cpk.pth.tar')).config == 'vox-256'
    ckpt['discriminator'] = {k: torch.empty(v, device='meta') for k, v in adv['discriminator'].items()}
    assert detect_config(ckpt, Path('vox-adv-cpk.pth.tar')).config == 'vox-adv-256'
    assert detect_config(ckpt).config == 'vox-adv-256'   # its discriminator, then the preference order


@pytest.mark.parametrize('name', available_configs())
def test_every_bundled_config_is_detected(name, meta_checkpoints):
    ckpt = meta_checkpoints[name]
    dataset = re.sub(r'-\d+$', '', name)   # vox-adv-256 -> vox-adv
    inference_only = {k: ckpt[k] for k in ('kp_detector', 'generator')}
    # a published file name (vox-adv-cpk.pth.tar) decides between configs with the same networks
    assert detect_config(inference_only, Path(f'/downloads/{dataset}-cpk.pth.tar')).config == name
    # without a telling name the discriminator decides, up to configs that build all three networks alike
    detected = detect_config(ckpt, Path('/downloads/model.pth.tar')).config
    twins = next((t for t in DISCRIMINATOR_TWINS if name in t), (name,))
    assert detected == twins[0]
    for network, state in ckpt.items():
        assert _shapes(meta_checkpoints[detected][network]) == _shapes(state)


def test_ties_without_discriminator_or_name_use_the_preference_and_say_why(meta_checkpoints, caplog):
    ckpt = {k: meta_checkpoints['taichi-256'][k] for k in ('kp_detector', 'generator')}
    with caplog.at_level(logging.INFO, logger='fomm_model.config_detection'):
        detection = detect_config(ckpt, Path('/x/model.pth.tar'))
    assert detection.config == 'vox-256' and len(detection.fits) == 8
    assert 'preference order' in detection.reason and 'vox-256' in caplog.text and '8 configs fit' in caplog.text


def test_original_layout_file_with_discriminator_optimisers_and_prefixes(tmp_path):
    """A raw torch.save of the original training layout (DataParallel prefixes, Adam states, epoch), in the
    pre-zip serialisation the published checkpoints have (torch 1.0)."""
    torch.manual_seed(0)
    models = build_models('face-128-v6', with_discriminator=True)
    params = list(models.generator.parameters())
    opt = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    path = tmp_path / 'run' / '00000003-checkpoint.pth.tar'
    path.parent.mkdir()
    torch.save({'generator': {f'module.{k}': v for k, v in models.generator.state_dict().items()},
                'kp_detector': models.kp_detector.state_dict(), 'discriminator': models.discriminator.state_dict(),
                'optimizer_generator': opt.state_dict(), 'epoch': 3}, path, _use_new_zipfile_serialization=False)
    detection = detect_checkpoint_config(path)
    assert detection.config == 'face-128-v6' and detection.fits == ('face-128-v6',)
    assert resolve_model(None, path) == ('face-128-v6', path)


def test_reference_checkpoint_is_detected_from_the_config_beside_it(reference_dir, tmp_path):
    path = reference_dir / 'tiny-128-checkpoint.pth.tar'
    assert Path(detect_checkpoint_config(path).config) == reference_dir / 'tiny-128.yaml'
    # alone, no config fits it (vox-256's layout with narrower layers): the error names the nearest (face-128 and
    # the vox-256 family differ from it in as many tensors; the preference order decides) and a parameter
    alone = tmp_path / 'tiny.pth.tar'
    shutil.copy(path, alone)
    with pytest.raises(ConfigDetectionError) as err:
        detect_checkpoint_config(alone)
    message = str(err.value)
    assert 'nearest is face-128' in message and str(alone) in message and '--config' in message
    assert 'kp_detector predictor.encoder.down_blocks.0.conv.weight: checkpoint (16, 3, 3, 3) != config ' \
           '(32, 3, 3, 3)' in message


def test_a_file_that_fits_no_config_names_the_nearest_and_the_first_difference(tmp_path):
    path = make_checkpoint(tmp_path / 'odd.pth.tar', 'face-128')
    ckpt = torch.load(path, weights_only=True)
    ckpt['generator']['final.weight'] = torch.zeros(3, 32, 7, 7)
    torch.save(ckpt, path)
    with pytest.raises(ConfigDetectionError, match=r'nearest is face-128, where 1 of its \d+ .* first generator '
                                                   r'final.weight: checkpoint \(3, 32, 7, 7\) != config'):
        resolve_model(None, path)
    assert resolve_model('face-128', path) == ('face-128', path)   # an explicit config is never second-guessed


def test_unsafe_pickles_are_refused_before_any_detection(tmp_path):
    path = tmp_path / 'evil.pth.tar'
    path.write_bytes(pickle.dumps({'generator': {}, 'kp_detector': {}, 'x': print}, protocol=2))
    with pytest.raises(UnsafeCheckpointError):
        resolve_model(None, path)


def test_the_bundled_model_keeps_its_config_and_a_missing_file_is_explained(tmp_path):
    if default_checkpoint_path().is_file():
        assert resolve_model(None, None) == (DEFAULT_CONFIG, default_checkpoint_path())
        assert resolve_model(None, default_checkpoint_path())[0] == DEFAULT_CONFIG
    with pytest.raises(FileNotFoundError, match='checkpoint not found: .*none.pth.tar is neither a file nor an '
                                                'installed model'):
        resolve_model(None, tmp_path / 'none.pth.tar')


def test_fomm_animate_without_config_on_a_non_default_checkpoint(tmp_path):
    from helpers import fomm

    from fomm_model.video_io import read_video
    ckpt = make_checkpoint(tmp_path / 'mine.pth.tar', 'face-128-v6')
    driving = make_clip(tmp_path / 'd.mp4', frames=3)
    proc = fomm('animate', '--checkpoint', ckpt, '--source_image', AVATAR, '--driving_video', driving,
                '--result_video', tmp_path / 'r.mp4', '--cpu', '--backend', 'torch')
    assert proc.returncode == 0, proc.stderr
    assert 'config face-128-v6 (the only config whose keypoint detector and generator fit)' in proc.stderr
    assert read_video(tmp_path / 'r.mp4')[0].shape == (3, 128, 128, 3)


@pytest.mark.slow   # about 12 s on two shared cores (a process start, face detection, the model)
def test_main_py_run_without_config_on_a_non_default_checkpoint(tmp_path):
    import os
    import subprocess
    import sys

    from helpers import CLIPS, REPO

    from fomm_model.video_io import read_video
    ckpt = make_checkpoint(tmp_path / 'mine.pth.tar', 'face-128-v6')
    out = tmp_path / 'out.mp4'
    proc = subprocess.run([sys.executable, 'main.py', 'run', '--input', str(CLIPS[0]), '--avatar', str(AVATAR),
                           '--backend', 'torch', '--device', 'cpu', '--checkpoint', str(ckpt), '--output', str(out),
                           '--max-frames', '2', '--verbose'], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr
    assert 'config face-128-v6 (the only config whose keypoint detector and generator fit)' in proc.stderr
    assert read_video(out)[0].shape[0] == 2
