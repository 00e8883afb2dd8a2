"""The cached animator gives the same predictions as the original per-frame path, in every precision."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fomm_model import Animator, FrameGenerator, load_checkpoint, load_config, make_animation, normalize_kp
from fomm_model.demo import find_best_frame


@pytest.fixture(scope='module')
def models(reference_dir):
    torch.set_num_threads(2)
    return load_checkpoint(load_config(reference_dir / 'tiny-128.yaml'), reference_dir / 'tiny-128-checkpoint.pth.tar')


@pytest.fixture(scope='module')
def frames(reference_dir):
    inputs = np.load(reference_dir / 'inputs.npz')
    to_uint8 = lambda x: (x.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    return to_uint8(inputs['source'][0]), [to_uint8(f) for f in inputs['driving']]


@pytest.mark.parametrize('relative,adapt', [(True, True), (True, False), (False, False)])
def test_cached_path_matches_original_path(models, frames, relative, adapt):
    source, driving = frames
    animator = Animator(models, relative=relative, adapt_scale=adapt)
    animator.set_source(source)
    animator.set_anchor(driving[0])
    for frame in driving:
        fast = animator.animate_keypoints(animator.keypoints(frame))
        slow = animator.reference_animate(frame)['prediction']
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


def test_original_path_is_the_documented_algorithm(models, frames):
    """reference_animate is itself checked against a hand-written call of the original functions."""
    source, driving = frames
    animator = Animator(models)
    animator.set_source(source)
    x_s, x_0, x_t = (animator.to_tensor(f) for f in (source, driving[0], driving[3]))
    with torch.no_grad():
        kp_s, kp_0, kp_t = (models.kp_detector(x) for x in (x_s, x_0, x_t))
        expected = models.generator(x_s, kp_source=kp_s, kp_driving=normalize_kp(kp_s, kp_t, kp_0, True, True, True))
    animator.set_anchor(driving[0])
    torch.testing.assert_close(animator.reference_animate(driving[3])['prediction'], expected['prediction'])


def test_first_frame_becomes_anchor_and_output_is_uint8(models, frames):
    source, driving = frames
    animator = Animator(models)
    animator.set_source(source)
    out = animator.animate(driving[2])
    assert out.dtype == np.uint8 and out.shape == (128, 128, 3)
    torch.testing.assert_close(animator.kp_anchor['value'], animator.keypoints(driving[2])['value'])
    # anchored on the current frame: normalised keypoints are the source's own
    kp_norm = animator.normalize(animator.keypoints(driving[2]))
    torch.testing.assert_close(kp_norm['value'], animator.kp_source['value'], atol=1e-6, rtol=0)
    torch.testing.assert_close(kp_norm['jacobian'], animator.kp_source['jacobian'], atol=1e-5, rtol=0)


@pytest.mark.parametrize('dtype,atol', [(torch.bfloat16, 2e-2), (torch.float16, 1e-2)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_reduced_precision_and_channels_last(reference_dir, frames, dtype, atol, channels_last):
    source, driving = frames
    config = load_config(reference_dir / 'tiny-128.yaml')
    ckpt = reference_dir / 'tiny-128-checkpoint.pth.tar'
    ref = Animator(load_checkpoint(config, ckpt))
    low = Animator(load_checkpoint(config, ckpt), dtype=dtype, channels_last=channels_last)
    for a in (ref, low):
        a.set_source(source)
        a.set_anchor(driving[0])
    for frame in driving[1:]:
        expected = ref.animate_keypoints(ref.keypoints(frame)).float()
        got = low.animate_keypoints(low.keypoints(frame))
        assert got.dtype == dtype
        assert torch.isfinite(got).all()
        assert (got.float() - expected).abs().max().item() < atol


def test_frame_generator_graph_matches_generator(models, frames):
    source, driving = frames
    animator = Animator(models)
    animator.set_source(source)
    animator.set_anchor(driving[0])
    kp = animator.normalize(animator.keypoints(driving[4]))
    graph = FrameGenerator(models.generator).eval()
    with torch.no_grad():
        expected = animator.models.generator.forward_prepared(animator.prepared, kp)['prediction']
        got = graph(*FrameGenerator.source_inputs(animator.prepared), kp['value'], kp['jacobian'])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_make_animation_original_api(models, frames):
    source, driving = frames
    video = make_animation(source.astype(np.float32) / 255, [f.astype(np.float32) / 255 for f in driving],
                           models.generator, models.kp_detector, relative=True, adapt_movement_scale=True, cpu=True)
    assert len(video) == len(driving)
    assert video[0].shape == (128, 128, 3) and video[0].dtype == np.float32
    assert 0 <= video[0].min() and video[0].max() <= 1
    animator = Animator(models)
    animator.set_source(source)
    animator.set_anchor(driving[0])
    expected = animator.reference_animate(driving[3])['prediction'][0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(video[3], expected, atol=5e-3)  # uint8 rounding of inputs only


def test_find_best_frame_prefers_the_matching_pose(models, frames):
    source, driving = frames
    animator = Animator(models)
    candidates = [driving[1], driving[4], source, driving[2]]
    assert find_best_frame(source, candidates, animator) == 2
