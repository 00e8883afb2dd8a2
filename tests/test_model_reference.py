"""The re-implementation reproduces the original code's recorded outputs (../shared/fixtures/reference)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fomm_model import (
    Keypoints,
    RelativeMotion,
    build_models,
    load_checkpoint,
    load_config,
    normalize_kp,
)
from fomm_model.keypoints import movement_scale

MODES = {'relative_adapt': (True, True, True), 'relative': (False, True, True), 'absolute': (False, False, False)}
GEN_TOL = {'prediction': 1e-5, 'mask': 1e-5, 'occlusion_map': 1e-5, 'deformation': 1e-5,
           'sparse_deformed': 1e-4, 'deformed': 1e-4}


@pytest.fixture(scope='module', params=[False, True], ids=['align_corners_false', 'align_corners_true'])
def run(request, reference_dir):
    torch.set_num_threads(2)
    config = load_config(reference_dir / 'tiny-128.yaml')
    config['model_params']['common_params']['align_corners'] = request.param
    models = load_checkpoint(config, reference_dir / 'tiny-128-checkpoint.pth.tar')
    ref = np.load(reference_dir / f'outputs_align_corners_{str(request.param).lower()}.npz')
    inputs = np.load(reference_dir / 'inputs.npz')
    return models, ref, torch.from_numpy(inputs['source']), torch.from_numpy(inputs['driving'])


def close(actual: torch.Tensor, expected: np.ndarray, atol: float) -> None:
    np.testing.assert_allclose(actual.detach().numpy(), expected, atol=atol, rtol=0)


@torch.no_grad()
def test_keypoints_and_normalisation(run):
    models, ref, source, driving = run
    kp_s = models.kp_detector(source)
    close(kp_s['value'], ref['kp_source/value'], 1e-5)
    close(kp_s['jacobian'], ref['kp_source/jacobian'], 1e-5)
    kp_d = [models.kp_detector(driving[t:t + 1]) for t in range(len(driving))]
    for t, kp in enumerate(kp_d):
        close(kp['value'], ref[f'kp_driving/{t}/value'], 1e-5)
        close(kp['jacobian'], ref[f'kp_driving/{t}/jacobian'], 1e-5)
        for mode, (adapt, rel, rel_jac) in MODES.items():
            norm = normalize_kp(kp_s, kp, kp_d[0], adapt_movement_scale=adapt, use_relative_movement=rel,
                                use_relative_jacobian=rel_jac)
            close(norm['value'], ref[f'norm/{mode}/{t}/value'], 1e-5)
            close(norm['jacobian'], ref[f'norm/{mode}/{t}/jacobian'], 1e-5)
    assert movement_scale(kp_s, kp_d[0]) == pytest.approx(float(ref['norm/relative_adapt/movement_scale']), rel=1e-5)


def test_relative_motion_reproduces_recorded_normalize_kp(reference_dir):
    """The one relative-motion object (used by the animator and the live app) against the original's outputs,
    value and jacobian, adapt-scale on and off, from the recorded keypoints alone."""
    ref = np.load(reference_dir / 'outputs_align_corners_true.npz')
    kp = lambda name: Keypoints(ref[f'{name}/value'][0], ref[f'{name}/jacobian'][0])
    for mode, adapt in (('relative_adapt', True), ('relative', False)):
        motion = RelativeMotion(kp('kp_source'), kp('kp_driving/0'), adapt_scale=adapt)
        if adapt:
            assert motion.scale == pytest.approx(float(ref['norm/relative_adapt/movement_scale']), rel=1e-6)
        for t in range(5):
            moved = motion(kp(f'kp_driving/{t}'))
            np.testing.assert_allclose(moved.value, ref[f'norm/{mode}/{t}/value'][0], atol=1e-6, rtol=0)
            np.testing.assert_allclose(moved.jacobian, ref[f'norm/{mode}/{t}/jacobian'][0], atol=1e-6, rtol=0)


@torch.no_grad()
def test_generator_outputs(run):
    models, ref, source, driving = run
    kp_s = models.kp_detector(source)
    kp_0 = models.kp_detector(driving[:1])
    for t in range(len(driving)):
        kp_norm = normalize_kp(kp_s, models.kp_detector(driving[t:t + 1]), kp_0, True, True, True)
        out = models.generator(source, kp_source=kp_s, kp_driving=kp_norm)
        for key, atol in GEN_TOL.items():
            close(out[key], ref[f'gen/relative_adapt/{t}/{key}'], atol)


@torch.no_grad()
def test_discriminator_outputs(run):
    models, ref, _, driving = run
    out = models.discriminator({'prediction_1': driving[:1]}, kp=None)
    for j, fmap in enumerate(out['feature_maps_1']):
        close(fmap, ref[f'disc/feature_maps_1/{j}'], 1e-4)
    close(out['prediction_map_1'], ref['disc/prediction_map_1'], 1e-4)


def test_align_corners_changes_only_the_generator(reference_dir):
    """Guards against the option silently not reaching grid_sample."""
    a = np.load(reference_dir / 'outputs_align_corners_false.npz')
    b = np.load(reference_dir / 'outputs_align_corners_true.npz')
    assert np.abs(a['gen/relative_adapt/1/prediction'] - b['gen/relative_adapt/1/prediction']).max() > 1e-3


def shapes(module: torch.nn.Module) -> dict:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize('name', ['kp_detector', 'generator', 'discriminator'])
def test_vox256_state_dict_layout(reference_dir, name):
    expected = json.loads((reference_dir / 'vox256_state_keys.json').read_text())[name]
    with torch.device('meta'):
        models = build_models('vox-256')
    assert shapes(getattr(models, name)) == expected


def test_vox_adv256_discriminator_layout(reference_dir):
    expected = json.loads((reference_dir / 'vox_adv256_discriminator_keys.json').read_text())['discriminator']
    with torch.device('meta'):
        models = build_models('vox-adv-256')
    assert shapes(models.discriminator) == expected
