"""Mouth gain: the lips' own motion is scaled, head motion is not; the bundled model opens a closed avatar mouth
wider with it; the commands and the live app take it with clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import AVATAR, CLIPS, FACE_CLIP, clip_frames, fomm, load_bundled, make_checkpoint, make_clip

from fomm_model import Animator, Keypoints, RelativeMotion, load_checkpoint, load_config
from fomm_model.defaults import DEFAULT_CONFIG
from fomm_model.evaluation.landmarks import FaceLandmarker
from fomm_model.evaluation.transfer import closed_mouth_frame, measure_clip
from fomm_model.mouth_gain import MouthGain, check_mouth_gain, default_mouth_gain, mouth_keypoints

MOUTH = [11, 10, 12, 14]
RNG = np.random.default_rng(0)
ANCHOR = RNG.uniform(-0.6, 0.6, (15, 2)).astype(np.float32)


def affine(points: np.ndarray, matrix, shift) -> np.ndarray:
    return (points @ np.asarray(matrix, np.float32).T + np.asarray(shift, np.float32)).astype(np.float32)


def test_head_motion_passes_unchanged_at_any_gain():
    frame = affine(ANCHOR, [[1.08, 0.12], [-0.1, 0.95]], [0.07, -0.04])   # a turn, a tilt and a move
    for gain in (0.0, 0.5, 2.0, 5.0):
        np.testing.assert_allclose(MouthGain(ANCHOR, MOUTH, gain)(frame), frame, atol=1e-5)


def test_the_lips_own_motion_is_scaled_and_nothing_else_moves():
    head = affine(ANCHOR, [[1.05, 0.05], [-0.05, 1.02]], [0.03, 0.02])
    lips = np.zeros_like(ANCHOR)
    lips[10] = (0.0, 0.06)     # lower lip down
    lips[11] = (0.0, -0.02)    # upper lip up
    frame = head + lips
    for gain in (0.0, 2.5):
        out = MouthGain(ANCHOR, MOUTH, gain)(frame)
        np.testing.assert_allclose(out - head, gain * lips, atol=1e-5)
    assert MouthGain(ANCHOR, MOUTH, 1.0)(frame) is frame     # gain 1: the original motion, untouched


def test_batches_get_the_same_result_as_single_frames():
    frames = ANCHOR + RNG.normal(0, 0.03, (3, 15, 2)).astype(np.float32)
    gain = MouthGain(ANCHOR, MOUTH, 2.0)
    np.testing.assert_allclose(gain(frames), np.stack([gain(f) for f in frames]), atol=1e-6)


def test_relative_motion_applies_the_gain_before_moving_the_source():
    eye = np.broadcast_to(np.eye(2, dtype=np.float32), (15, 2, 2)).copy()
    source = Keypoints(affine(ANCHOR, [[0.9, 0], [0, 0.9]], [0.1, 0.0]), eye)
    anchor = Keypoints(ANCHOR, eye)
    frame = ANCHOR.copy()
    frame[10, 1] += 0.05
    plain = RelativeMotion(source, anchor, adapt_scale=False)(Keypoints(frame, eye))
    scaled = RelativeMotion(source, anchor, adapt_scale=False, mouth_keypoints=MOUTH,
                            mouth_gain=2.0)(Keypoints(frame, eye))
    np.testing.assert_allclose(scaled.value[10] - source.value[10], 2 * (plain.value[10] - source.value[10]),
                               atol=1e-6)
    np.testing.assert_allclose(np.delete(scaled.value, 10, 0), np.delete(plain.value, 10, 0), atol=1e-6)
    np.testing.assert_array_equal(scaled.jacobian, plain.jacobian)


def test_configs_name_the_lip_keypoints_and_the_calibrated_gain():
    face = load_config('face-128-v6')
    assert mouth_keypoints(face) == MOUTH     # upper lip, lower lip, corners of train_params.landmark_keypoints
    gain = face['animate_params']['normalization_params']['mouth_gain']
    assert default_mouth_gain(face) == gain and gain > 1
    vox = load_config('vox-256')
    assert mouth_keypoints(vox) is None and default_mouth_gain(vox) == 1.0
    for bad in (-0.5, 5.5):
        with pytest.raises(ValueError, match='mouth gain must be between 0 and 5'):
            check_mouth_gain(bad)


@pytest.fixture(scope='module')
def models():
    torch.set_num_threads(1)
    return load_bundled()


def test_the_bundled_model_opens_a_closed_avatar_mouth_wider_with_gain(models):
    """A held-out person's most closed mouth as the avatar, driven by another person talking, from that driver's
    most closed mouth (as the app's calibration asks): with gain the output's lips follow the driver further."""
    avatar_clip = next(c for c in CLIPS if c.name.startswith('iplap129'))
    driver = clip_frames(60, next(c for c in CLIPS if c.name.startswith('lp_d3')))
    with FaceLandmarker() as landmarker:
        avatar_frames = clip_frames(60, avatar_clip)
        avatar = avatar_frames[closed_mouth_frame(measure_clip(landmarker, avatar_frames))]
        real = measure_clip(landmarker, driver)
        anchor = closed_mouth_frame(real)
        animator = Animator(models, backend='torch', device='cpu', mouth_gain=1.0)
        animator.set_source(avatar)
        kps = [animator.keypoints(f) for f in driver]
        animator.set_anchor(kps[anchor])
        opening = {}
        for gain in (1.0, 2.5):
            animator.mouth_gain = gain
            out = measure_clip(landmarker, [animator.generate(animator.normalize(kp)) for kp in kps])
            assert np.isfinite(out.mouth).all()
            opening[gain] = out.mouth
    driver_std = np.nanstd(real.mouth)
    ratio = {g: np.std(m) / driver_std for g, m in opening.items()}
    assert ratio[2.5] > 1.5 * ratio[1.0], ratio
    assert np.corrcoef(opening[2.5], real.mouth)[0, 1] > 0.7


def test_the_animator_takes_the_models_gain_and_ignores_it_without_lip_keypoints(models, tmp_path):
    animator = Animator(models, backend='torch', device='cpu')
    assert animator.mouth_gain == default_mouth_gain(models.config)
    animator.mouth_gain = 3.0
    assert animator.mouth_gain == 3.0
    with pytest.raises(ValueError, match='mouth gain'):
        animator.mouth_gain = -1
    unnamed = load_checkpoint('face-128', make_checkpoint(tmp_path / 'plain.pth.tar'))   # no lip keypoints
    plain = Animator(unnamed, backend='torch', device='cpu', mouth_gain=3.0)
    assert plain.mouth_keypoints is None and plain.mouth_gain == 1.0


def test_commands_say_what_is_wrong_with_a_mouth_gain(tmp_path):
    proc = fomm('evaluate', '--mouth_gain', '9', '--cpu')
    assert proc.returncode == 2 and 'mouth gain must be between 0 and 5' in proc.stderr
    proc = fomm('animate', '--source_image', 'a.png', '--driving_video', 'b.mp4', '--mouth_gain', 'wide')
    assert proc.returncode == 2 and "--mouth_gain: not a number: 'wide'" in proc.stderr
    plain = make_checkpoint(tmp_path / 'plain.pth.tar')
    proc = fomm('animate', '--config', 'face-128', '--checkpoint', plain, '--source_image', AVATAR,
                '--driving_video', FACE_CLIP, '--result_video', tmp_path / 'out.mp4', '--relative', '--mouth_gain',
                '2', '--cpu')
    assert proc.returncode == 2 and '--mouth_gain needs a model trained with lip keypoints' in proc.stderr
    assert 'Traceback' not in proc.stderr and not (tmp_path / 'out.mp4').exists()
    proc = fomm('animate', '--source_image', AVATAR, '--driving_video', FACE_CLIP, '--result_video',
                tmp_path / 'out.mp4', '--mouth_gain', '2')
    assert proc.returncode == 2 and '--mouth_gain scales relative motion: add --relative' in proc.stderr


def test_fomm_animate_says_which_mouth_gain_it_used(tmp_path):
    short = make_clip(tmp_path / 'short.mp4', frames=4)
    calibrated = default_mouth_gain(load_config(DEFAULT_CONFIG))
    for extra, said in (([], f"mouth gain: {calibrated:g} (the model's calibrated gain)"),
                        (['--mouth_gain', '2'], 'mouth gain: 2 (--mouth_gain)')):
        proc = fomm('animate', '--source_image', AVATAR, '--driving_video', short, '--result_video',
                    tmp_path / 'out.mp4', '--relative', '--adapt_scale', '--backend', 'torch', '--cpu', *extra)
        assert proc.returncode == 0 and said in proc.stderr, proc.stderr[-1500:]


def test_the_calibration_counts_closed_mouthed_avatars_on_clips_and_picks_a_gain(models, capsys, tmp_path):
    """Real clips, real model, two gains: more gain moves the avatars' lips further, the winner is the gain with
    the most pairs passing, and the command writes what it measured."""
    from fomm_model.evaluation import mouth_gain_calibration as calibration
    chosen = calibration.choose_clips(CLIPS, people=3, seed=0)
    assert chosen == calibration.choose_clips(CLIPS, people=3, seed=0) and len({c.name.split('#')[0]
                                                                                for c in chosen}) == 3
    talking = [c for c in CLIPS if c.name.startswith(('lp_d3', 'iplap129', 'dpe_d'))]
    with FaceLandmarker() as landmarker:
        clips = {}
        for clip in talking:
            frames = clip_frames(40, clip)
            clips[clip.name] = (frames, measure_clip(landmarker, frames))
        result = calibration.calibrate(Animator(models, backend='torch', device='cpu'), clips, [1.0, 2.5],
                                       landmarker)
    for look in calibration.AVATAR_LOOKS:
        low, high = result['gains']['1'][look], result['gains']['2.5'][look]
        assert low['pairs'] == high['pairs'] and 0 < low['pairs'] <= 6 and high['passed'] <= high['pairs']
        assert high['ratio_median'] > 1.3 * low['ratio_median'], (look, low, high)
    assert result['passed'] == {g: sum(v['passed'] for v in looks.values()) for g, looks in result['gains'].items()}
    best = max(result['passed'].values())
    assert result['chosen'] == min(float(g) for g, n in result['passed'].items() if n == best)

    out = tmp_path / 'calibration.json'
    assert calibration.main(['--data', str(CLIPS[0].parent), '--people', '2', '--max_frames', '12', '--gains', '1,2',
                             '--json', str(out)]) == 0
    written = json.loads(out.read_text())
    assert set(written['gains']) == {'1', '2'} and len(written['clips']) == 2
    assert f"chosen: {written['chosen']:g}" in capsys.readouterr().out
    assert calibration.main(['--gains', '1,9']) == 2
    assert 'mouth gain must be between 0 and 5' in capsys.readouterr().err
