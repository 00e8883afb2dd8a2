"""Per-frame pipeline: calibration / relative motion, auto-calibration, passthrough, mirroring, smoothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_live_support import AVATAR, clip_frames, make_checkpoint

from fomm_model.checkpoint import load_checkpoint
from live.avatar import load_avatar
from live.backends.torch_backend import TorchBackend
from live.cropper import FaceCropper
from live.one_euro import OneEuroFilter
from live.pipeline import EngineSettings, Pipeline

SIZE = (128, 128)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    torch.set_num_threads(1)
    ckpt = make_checkpoint(tmp_path_factory.mktemp('ckpt') / 'face-128.pth.tar', seed=3)
    return load_checkpoint('face-128', ckpt)


@pytest.fixture()
def pipeline(models):
    p = Pipeline(TorchBackend(models, SIZE), FaceCropper(SIZE, None), SIZE)
    p.set_avatar(load_avatar(AVATAR, SIZE, None))
    return p


@pytest.fixture(scope='module')
def frames():
    from live.cv2_compat import cv2
    return [cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for f in clip_frames(30)]


def test_before_calibration_the_avatar_is_shown_unmoved(pipeline, frames):
    s = EngineSettings(mirror_preview=False)
    r = pipeline.process(frames[0], 0, 0.0, s)
    assert not r.calibrated
    assert np.array_equal(r.output, pipeline.avatar.image)
    assert r.keypoints.shape == (10, 2) and np.abs(r.keypoints).max() <= 1


def test_calibration_anchor_equal_to_frame_gives_avatar_keypoints_and_reconstruction(pipeline, frames, models):
    s = EngineSettings(mirror_preview=False)
    pipeline.request_calibration()
    r = pipeline.process(frames[5], 5, 0.0, s)
    assert r.calibrated and pipeline.calibrated
    kp_frame = pipeline.backend.keypoints(frames[5])
    norm = pipeline.anchor.normalize(kp_frame, pipeline.kp_source)
    np.testing.assert_allclose(norm.value, pipeline.kp_source.value, atol=1e-6)
    np.testing.assert_allclose(norm.jacobian, pipeline.kp_source.jacobian, atol=1e-5)
    # the output for the anchor frame is the avatar reconstructed by the model (driving = source keypoints)
    with torch.no_grad():
        src = torch.from_numpy(pipeline.avatar.image).permute(2, 0, 1)[None].float() / 255
        kp_src = models.kp_detector(src)
        ref = models.generator(src, kp_driving=kp_src, kp_source=kp_src)['prediction']
    ref = (ref[0].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    assert np.abs(r.output.astype(int) - ref.astype(int)).max() <= 2
    # another frame moves the avatar relative to the anchor
    kp_other = pipeline.backend.keypoints(frames[20])
    moved = pipeline.anchor.normalize(kp_other, pipeline.kp_source)
    np.testing.assert_allclose(moved.value - pipeline.kp_source.value,
                               (kp_other.value - kp_frame.value) * pipeline.anchor.scale, atol=1e-6)


def test_auto_calibration_re_anchors_on_a_better_pose_match(pipeline, frames):
    s = EngineSettings(mirror_preview=False, auto_calibrate=True)
    pipeline.process(frames[0], 0, 0.0, s)          # no face detector here: face_found is False -> no anchor
    assert not pipeline.calibrated
    pipeline.request_calibration()
    pipeline.process(frames[0], 1, 0.03, s)
    first = pipeline.anchor
    assert first.distance > 0
    pipeline.cropper.detector = _AlwaysFace()         # a face everywhere, so auto-calibration looks at each frame
    pipeline.process(pipeline.avatar.image, 2, 0.06, s)  # the avatar's own pose: distance 0, better than anchor
    assert pipeline.auto_calibrations == 1 and pipeline.anchor is not first
    assert pipeline.anchor.distance < 1e-9


class _AlwaysFace:
    """A trivial detector reporting a face covering the middle of the frame (a real object, not a mock of the
    pipeline: only face presence matters for auto-calibration)."""

    def detect(self, rgb):
        from fomm_model.face_detection import FaceBox
        h, w = rgb.shape[:2]
        return [FaceBox(w * 0.25, h * 0.2, w * 0.75, h * 0.7, 0.9)]


def test_passthrough_absolute_and_mirroring(pipeline, frames):
    r = pipeline.process(frames[3], 0, 0.0, EngineSettings(passthrough=True, mirror_preview=False))
    assert np.array_equal(r.output, frames[3]) and r.keypoints is None
    s = EngineSettings(relative=False, mirror_preview=True, mirror_output=True)
    r = pipeline.process(frames[3], 1, 0.03, s)
    assert np.array_equal(r.output, r.output_unmirrored[:, ::-1])
    assert np.array_equal(r.camera, frames[3][:, ::-1]) and np.array_equal(r.driving, frames[3][:, ::-1])
    kp = pipeline.backend.keypoints(frames[3])
    np.testing.assert_allclose(r.keypoints[:, 0], -kp.value[:, 0], atol=1e-6)
    np.testing.assert_array_equal(r.output_unmirrored, pipeline.backend.generate(kp))
    blended = pipeline.process(frames[3], 2, 0.06, EngineSettings(passthrough=True, mirror_preview=False,
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
