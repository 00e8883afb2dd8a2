"""Per-frame pipeline on the bundled model and real faces: calibration that waits for a face, relative motion
(the model package's), easing to the resting pose while the face is lost, auto-calibration, passthrough,
mirroring, smoothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import AVATAR, clip_frames, load_bundled

from fomm_model import Animator, normalize_kp
from fomm_model.face_detection import FaceDetector
from live.avatar import load_avatar
from live.cropper import FaceCropper
from fomm_model.smoothing import OneEuroFilter
from live.options import Settings
from live.pipeline import EASE_IN_FRAMES, Pipeline

SIZE = (128, 128)
PLAIN = Settings(mirror_preview=False, paste_back=False, mouth_gain=1.0)   # the original's relative motion


@pytest.fixture(scope='module')
def models():
    torch.set_num_threads(1)
    return load_bundled()


@pytest.fixture(scope='module')
def detector():
    with FaceDetector(min_confidence=0.5) as d:
        yield d


@pytest.fixture()
def pipeline(models, detector):
    p = Pipeline(Animator(models, backend='torch', device='cpu'), FaceCropper(SIZE, detector))
    p.set_avatar(load_avatar(AVATAR, SIZE, detector))
    return p


@pytest.fixture(scope='module')
def frames():
    return clip_frames(30)


BLACK = np.zeros((256, 256, 3), np.uint8)


def kp_dict(kp):
    value, jacobian = kp.to_torch()
    return {'value': value, 'jacobian': jacobian}


def test_before_calibration_the_avatar_is_shown_unmoved(pipeline, frames):
    r = pipeline.process(frames[0], 0, 0.0, PLAIN)
    assert not r.calibrated and r.face_found
    assert np.array_equal(r.output, pipeline.avatar.image)


def test_paste_back_puts_the_animated_face_into_the_whole_avatar(pipeline, frames):
    whole = Settings(mirror_preview=False)
    r = pipeline.process(frames[0], 0, 0.0, whole)
    full = pipeline.avatar.full_image
    assert full.shape == (512, 512, 3) and np.array_equal(r.output, full)   # unmoved: the picture itself
    pipeline.request_calibration()
    pipeline.process(frames[0], 1, 0.04, whole)
    r = pipeline.process(frames[20], 2, 0.08, whole)
    x0, y0, x1, y1 = pipeline.avatar.crop_box
    outside = np.ones(full.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(r.output[outside], full[outside])                    # untouched around the face
    assert np.abs(r.output[y0:y1, x0:x1].astype(int) - full[y0:y1, x0:x1]).mean() > 0.5   # the face moved
    np.testing.assert_array_equal(r.output, pipeline.compositor(pipeline.animator.generate(pipeline.shown)))


def test_calibration_maps_the_anchor_onto_the_avatar_and_moves_relative_to_it(pipeline, frames):
    pipeline.request_calibration()
    r = pipeline.process(frames[5], 0, 0.0, PLAIN)
    assert r.calibrated
    animator = pipeline.animator
    # the anchor frame itself shows the avatar in its own pose: its keypoints, reconstructed by the model
    np.testing.assert_allclose(pipeline.shown.value, animator.kp_source.value, atol=1e-6)
    # keypoints equal within 1e-6 (float rounding of the relative motion): the frames within one uint8 step
    diff = np.abs(r.output.astype(np.int16) - animator.generate(animator.kp_source).astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    # a later frame moves the avatar as the original normalize_kp says (value and jacobian, adapt-scale)
    r = pipeline.process(frames[20], 1, 0.04, PLAIN)
    driving = animator.keypoints(pipeline.cropper.process(frames[20], 0.04).crop)
    expected = normalize_kp(kp_dict(animator.kp_source), kp_dict(driving), kp_dict(animator.kp_anchor),
                            adapt_movement_scale=True, use_relative_movement=True, use_relative_jacobian=True)
    np.testing.assert_allclose(pipeline.shown.value, expected['value'][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(pipeline.shown.jacobian, expected['jacobian'][0].numpy(), atol=1e-5)
    assert not np.array_equal(r.output, pipeline.avatar.image)


def test_the_mouth_gain_setting_reaches_the_relative_motion(pipeline, frames):
    """None takes the model's calibrated gain; a value scales the lips' own motion (fomm_model.mouth_gain)."""
    import dataclasses
    pipeline.request_calibration()
    pipeline.process(frames[5], 0, 0.0, PLAIN)
    animator = pipeline.animator
    pipeline.process(frames[20], 1, 0.04, PLAIN)
    plain = pipeline.shown.value
    pipeline.process(frames[20], 2, 0.08, dataclasses.replace(PLAIN, mouth_gain=None))
    assert animator.mouth_gain == animator.default_mouth_gain > 1
    pipeline.process(frames[20], 3, 0.12, dataclasses.replace(PLAIN, mouth_gain=3.0))
    assert animator.mouth_gain == 3.0
    lips = animator.mouth_keypoints
    moved = np.abs(pipeline.shown.value - plain).sum(axis=1)
    assert moved[lips].min() > 0 and np.delete(moved, lips).max() < 1e-6


def test_calibration_waits_for_a_face(pipeline, frames):
    """Asked on a frame without a face, calibration happens on the next frame with one, and says so."""
    pipeline.request_calibration()
    for i in range(3):
        r = pipeline.process(BLACK, i, i / 30, PLAIN)
        assert not r.calibrated and not r.face_found
        assert 'calibration waits for a face' in r.status
        assert np.array_equal(r.output, pipeline.avatar.image)
    r = pipeline.process(frames[3], 3, 0.1, PLAIN)
    assert r.calibrated and r.status == ''
    np.testing.assert_allclose(pipeline.shown.value, pipeline.animator.kp_source.value, atol=1e-6)


def test_lost_face_eases_back_to_rest_and_returns_smoothly(pipeline, frames):
    pipeline.request_calibration()
    pipeline.process(frames[0], 0, 0.0, PLAIN)
    for i in range(1, 21):  # the face moves and holds still: the crop settles on it (One-Euro filtered)
        tracked = pipeline.process(frames[25], i, i / 30, PLAIN)
    moved = pipeline.shown
    rest = pipeline.animator.kp_source
    distances = []
    pipeline.process(BLACK, 21, 21 / 30, PLAIN)  # the keypoints jump: detection runs again on the next frame
    for i in range(22, 79):   # two seconds without a face
        r = pipeline.process(BLACK, i, i / 30, PLAIN)
        assert r.status == 'no face' and r.calibrated
        distances.append(np.abs(pipeline.shown.value - rest.value).max())
    assert distances[0] < np.abs(moved.value - rest.value).max()      # it starts moving at once...
    assert all(b <= a + 1e-7 for a, b in zip(distances, distances[1:]))  # ...monotonically...
    assert distances[-1] < 0.05 * np.abs(moved.value - rest.value).max()  # ...to the resting pose
    np.testing.assert_array_equal(r.output, pipeline.animator.generate(pipeline.shown))
    # the face comes back: the first frames ease in, then the tracked pose is shown exactly
    held = pipeline.shown
    pipeline.process(frames[25], 79, 79 / 30, PLAIN)
    np.testing.assert_array_equal(pipeline.shown.value, held.value)  # the jump back is held for a frame
    r = pipeline.process(frames[25], 80, 80 / 30, PLAIN)
    animator = pipeline.animator
    target = animator.normalize(animator.keypoints(r.driving))
    first = np.abs(pipeline.shown.value - target.value).max()
    assert 0 < first < np.abs(held.value - target.value).max()
    for i in range(EASE_IN_FRAMES):
        r = pipeline.process(frames[25], 81 + i, (81 + i) / 30, PLAIN)
    target = animator.normalize(animator.keypoints(r.driving))
    np.testing.assert_allclose(pipeline.shown.value, target.value, atol=1e-6)
    np.testing.assert_array_equal(r.output, animator.generate(target))
    assert np.abs(r.output.astype(int) - tracked.output).mean() < 3   # the pose it had before the loss


def test_auto_calibration_anchors_on_a_face_and_re_anchors_on_a_better_match(pipeline, frames):
    s = Settings(mirror_preview=False, auto_calibrate=True)
    assert not pipeline.process(BLACK, 0, 0.0, s).calibrated       # no face: nothing to anchor on
    assert pipeline.process(frames[0], 1, 0.03, s).calibrated
    first = pipeline.animator.kp_anchor
    assert pipeline.anchor_distance > 0
    avatar_frame = pipeline.avatar.full_image                      # the avatar's own face matches it best
    pipeline.process(avatar_frame, 2, 0.06, s)
    assert pipeline.auto_calibrations == 1 and pipeline.animator.kp_anchor is not first
    assert pipeline.anchor_distance < 0.1 * pose_distance_of(pipeline, first)


def pose_distance_of(pipeline, kp):
    from fomm_model.keypoints import pose_distance
    return pose_distance(pipeline.animator.kp_source, kp)


def test_passthrough_absolute_and_mirroring(pipeline, frames):
    r = pipeline.process(frames[3], 0, 0.0, Settings(passthrough=True, mirror_preview=False))
    assert np.array_equal(r.output, r.driving) and r.keypoints is None
    s = Settings(relative=False, mirror_preview=True, mirror_output=True, paste_back=False)
    r = pipeline.process(frames[3], 1, 0.03, s)
    assert np.array_equal(r.output, r.output_unmirrored[:, ::-1])
    assert np.array_equal(r.camera, frames[3][:, ::-1])
    kp = pipeline.animator.keypoints(r.driving[:, ::-1])
    np.testing.assert_allclose(r.keypoints[:, 0], -kp.value[:, 0], atol=1e-6)
    np.testing.assert_array_equal(r.output_unmirrored, pipeline.animator.generate(kp))
    blended = pipeline.process(frames[3], 2, 0.06, Settings(passthrough=True, mirror_preview=False,
                                                             overlay_alpha=1.0))
    assert np.abs(blended.driving.astype(int) - pipeline.avatar.image).max() <= 1


def test_one_euro_removes_jitter_and_follows_steps():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    noisy = 0.02 * rng.standard_normal((60, 10, 2))
    out = np.array([f(x, i / 30) for i, x in enumerate(noisy)])
    assert out[20:].std() < 0.35 * noisy[20:].std()
    # a large fast move is followed within a few frames (speed raises the cut-off)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    for i in range(10):
        f(np.zeros(2), i / 30)
    for i in range(10, 16):
        y = f(np.full(2, 0.5), i / 30)
    assert y.min() > 0.4


def test_keypoint_smoother_passes_at_zero_starts_afresh_on_a_new_strength_and_refuses_bad_ones():
    from fomm_model import Keypoints
    from fomm_model.smoothing import KeypointSmoother
    rng = np.random.default_rng(0)
    eye = np.broadcast_to(np.eye(2, dtype=np.float32), (10, 2, 2)).copy()
    noisy = [Keypoints((0.3 + rng.normal(0, 0.02, (10, 2))).astype(np.float32), eye) for _ in range(60)]
    off = KeypointSmoother(0.0)
    assert all(off(kp, i / 30) is kp for i, kp in enumerate(noisy))
    on = KeypointSmoother(0.6)
    out = [on(kp, i / 30) for i, kp in enumerate(noisy)]
    assert np.std([k.value for k in out[10:]], axis=0).mean() < 0.5 * np.std([k.value for k in noisy], axis=0).mean()
    np.testing.assert_allclose(out[5].jacobian, eye, atol=1e-6)   # identity jacobians stay identity
    on.strength = 0.3   # a new strength starts the filter afresh: its first output is the input
    np.testing.assert_array_equal(on(noisy[0], 3.0).value, noisy[0].value)
    with pytest.raises(ValueError, match='between 0 \\(off\\) and 1'):
        KeypointSmoother(1.5)
