"""The cached animator gives the same predictions as the original per-frame path, in every precision."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fomm_model import (
    Animator,
    FrameGenerator,
    Keypoints,
    load_checkpoint,
    load_config,
    make_animation,
    normalize_kp,
)
from fomm_model.demo import find_best_frame
from fomm_model.reference import OriginalAnimation


@pytest.fixture(scope='module')
def models(reference_dir):
    torch.set_num_threads(2)
    return load_checkpoint(load_config(reference_dir / 'tiny-128.yaml'), reference_dir / 'tiny-128-checkpoint.pth.tar')


@pytest.fixture(scope='module')
def frames(reference_dir):
    inputs = np.load(reference_dir / 'inputs.npz')
    to_uint8 = lambda x: (x.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    return to_uint8(inputs['source'][0]), [to_uint8(f) for f in inputs['driving']]


def eager(models, **kw) -> Animator:
    return Animator(models, backend='torch', device='cpu', **kw)


@pytest.mark.parametrize('relative,adapt', [(True, True), (True, False), (False, False)])
def test_cached_path_matches_original_path(models, frames, relative, adapt):
    source, driving = frames
    animator = eager(models, relative=relative, adapt_scale=adapt)
    animator.set_source(source)
    animator.set_anchor(driving[0])
    original = OriginalAnimation(models, source, driving[0], relative=relative, adapt_scale=adapt)
    for frame in driving:
        fast = animator.predict(animator.normalize(animator.keypoints(frame)))
        torch.testing.assert_close(fast, original(frame)['prediction'], atol=1e-5, rtol=0)


def test_original_path_is_the_documented_algorithm(models, frames):
    """OriginalAnimation is itself checked against a hand-written call of the original functions."""
    source, driving = frames
    original = OriginalAnimation(models, source, driving[0])
    x_s, x_0, x_t = (original.to_tensor(f) for f in (source, driving[0], driving[3]))
    with torch.no_grad():
        kp_s, kp_0, kp_t = (models.kp_detector.eval()(x) for x in (x_s, x_0, x_t))
        expected = models.generator.eval()(x_s, kp_source=kp_s,
                                           kp_driving=normalize_kp(kp_s, kp_t, kp_0, True, True, True))
    torch.testing.assert_close(original(driving[3])['prediction'], expected['prediction'])


def test_first_frame_becomes_anchor_and_output_is_uint8(models, frames):
    source, driving = frames
    animator = eager(models)
    animator.set_source(source)
    out = animator.animate(driving[2])
    assert out.dtype == np.uint8 and out.shape == (128, 128, 3)
    np.testing.assert_array_equal(animator.kp_anchor.value, animator.keypoints(driving[2]).value)
    # anchored on the current frame: the normalised keypoints are the avatar's own
    kp_norm = animator.normalize(animator.keypoints(driving[2]))
    np.testing.assert_allclose(kp_norm.value, animator.kp_source.value, atol=1e-6)
    np.testing.assert_allclose(kp_norm.jacobian, animator.kp_source.jacobian, atol=1e-5)


@pytest.mark.parametrize('dtype,atol', [(torch.bfloat16, 2e-2)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_reduced_precision_and_channels_last(models, frames, dtype, atol, channels_last):
    """float16 is CUDA-only now; bfloat16 (slow without AVX512-BF16, but correct) stands for reduced precision."""
    source, driving = frames
    ref = eager(models)
    low = eager(models, dtype=dtype, channels_last=channels_last)
    for a in (ref, low):
        a.set_source(source)
        a.set_anchor(driving[0])
    for frame in driving[1:]:
        expected = ref.predict(ref.normalize(ref.keypoints(frame)))
        got = low.predict(low.normalize(low.keypoints(frame)))
        assert got.dtype == dtype and torch.isfinite(got).all()
        assert (got.float() - expected).abs().max().item() < atol


def test_animators_never_change_the_models_they_are_given(models, frames):
    """A bfloat16 animator built from the same Models must leave a float32 one (and the Models) working."""
    source, driving = frames
    before = {k: v.clone() for k, v in models.generator.state_dict().items()}
    fp32 = eager(models)
    bf16 = eager(models, dtype=torch.bfloat16, channels_last=True)
    for a in (fp32, bf16):
        a.set_source(source)
        assert a.animate(driving[1]).shape == (128, 128, 3)
    after = models.generator.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert fp32.animate(driving[2]).dtype == np.uint8


def test_frame_generator_graph_matches_generator(models, frames):
    source, driving = frames
    animator = eager(models)
    animator.set_source(source)
    animator.set_anchor(driving[0])
    kp = animator.normalize(animator.keypoints(driving[4]))
    graph = FrameGenerator(models.generator.eval()).eval()
    value, jacobian = kp.to_torch()
    with torch.no_grad():
        x = animator.to_tensor(source)
        kp_s = models.kp_detector.eval()(x)
        expected = models.generator(x, kp_source=kp_s, kp_driving={'value': value, 'jacobian': jacobian})
        got = graph(*animator.prepared, value, jacobian)
    torch.testing.assert_close(got, expected['prediction'], atol=1e-6, rtol=0)


def test_make_animation_original_api(models, frames):
    source, driving = frames
    video = make_animation(source.astype(np.float32) / 255, [f.astype(np.float32) / 255 for f in driving],
                           models.generator, models.kp_detector, relative=True, adapt_movement_scale=True, cpu=True)
    assert len(video) == len(driving)
    assert video[0].shape == (128, 128, 3) and video[0].dtype == np.float32
    assert 0 <= video[0].min() and video[0].max() <= 1
    expected = OriginalAnimation(models, source, driving[0])(driving[3])['prediction'][0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(video[3], expected, atol=5e-3)  # uint8 rounding of inputs only


def test_find_best_frame_prefers_the_matching_pose(models, frames):
    source, driving = frames
    candidates = [driving[1], driving[4], source, driving[2]]
    assert find_best_frame(source, candidates, eager(models)) == 2


def test_keypoints_round_trip_between_numpy_and_torch(models, frames):
    animator = eager(models)
    kp = animator.keypoints(frames[0])
    assert isinstance(kp, Keypoints) and kp.value.shape == (10, 2) and kp.jacobian.shape == (10, 2, 2)
    value, jacobian = kp.to_torch()
    assert value.shape == (1, 10, 2) and jacobian.shape == (1, 10, 2, 2)
    np.testing.assert_array_equal(Keypoints.from_torch((value, jacobian)).value, kp.value)
