"""``fomm evaluate`` and its parts on real clips, real avatars, the real landmark model and the bundled model."""
from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
from helpers import SHARED, fomm, load_bundled

from fomm_model import Animator
from fomm_model.defaults import default_checkpoint_path
from fomm_model.evaluation.landmarks import (
    NUM_LANDMARKS,
    FaceLandmarker,
    LandmarkerUnavailable,
    eye_opening,
    mouth_opening,
    shape_change,
)
from fomm_model.evaluation.metrics import (
    AKD,
    amplitude_ratio,
    average_keypoint_distance,
    pearson,
    score_shape,
    score_signal,
    similarity_residual,
)
from fomm_model.evaluation.transfer import (
    MIN_DRIVER_SHAPE,
    MIN_DRIVER_STD,
    ClipMeasures,
    animate_clip,
    clip_measures,
    driving_keypoints,
    closed_mouth_frame,
    measure_clip,
    score_pair,
    summarize,
)
from fomm_model.video_io import read_image, read_video, resize_image

SIZE = (128, 128)   # face-128, the size the evaluation measures at
# A talking man: mouth nearly closed at frame 17, wide open (eyes half shut) at 28, closed again at 33
# (checked by eye on the frames themselves).
TALKING = SHARED / 'data/faces/test/dpe_s#misc__dpe_s.mp4'
CLOSED_1, OPEN, CLOSED_2 = 17, 28, 33
AVATAR = SHARED / 'data/avatars/mona_lisa.png'


@pytest.fixture(scope='module')
def landmarker():
    with FaceLandmarker() as lm:
        yield lm


@pytest.fixture(scope='module')
def talking() -> list[np.ndarray]:
    frames, _ = read_video(TALKING, max_frames=36)
    return [resize_image(f, SIZE) for f in frames]


@pytest.fixture(scope='module')
def talking_measures(landmarker, talking):
    return measure_clip(landmarker, talking)


def test_landmarks_on_a_real_face_and_none_on_blank_images(landmarker, talking):
    points = landmarker.detect(talking[0])
    assert points.shape == (NUM_LANDMARKS, 2)
    assert (points > 0).all() and (points < SIZE[0]).all()
    # anatomy: the eyes' outer corners lie above the inner lips, right eye (subject's) on the image's left
    assert points[33, 0] < points[263, 0]
    assert max(points[33, 1], points[263, 1]) < points[13, 1] - 10
    assert landmarker.detect(np.zeros((*SIZE, 3), np.uint8)) is None
    assert landmarker.detect(np.full((*SIZE, 3), 180, np.uint8)) is None


def test_mouth_opening_rises_when_the_driver_opens_the_mouth(talking_measures):
    mouth, eyes = talking_measures.mouth, talking_measures.eyes
    assert mouth[OPEN] > mouth[CLOSED_1] + 0.1 and mouth[OPEN] > mouth[CLOSED_2] + 0.1
    assert mouth[CLOSED_1] < 0.06 and mouth[CLOSED_2] < 0.06
    assert eyes[OPEN] < 0.8 * eyes[CLOSED_1]   # he squints while opening wide


def test_a_static_output_has_no_amplitude_and_fails(landmarker, talking_measures):
    avatar = resize_image(read_image(AVATAR), SIZE)
    static = measure_clip(landmarker, [avatar] * len(talking_measures.landmarks))
    assert static.no_face_rate == 0
    pair = score_pair(talking_measures, static, 'still', 'talking')
    mouth = pair.signals['mouth']
    assert mouth.exercised and mouth.ratio < 0.01 and mouth.r is None
    assert mouth.passed is False and not pair.passed
    assert summarize([pair])['passed'] is False
    assert pair.shape.ratio < 1e-9 and pair.shape.exercised        # a still face does not change shape


def test_the_driver_against_itself_scores_r_one_and_ratio_one(talking_measures):
    pair = score_pair(talking_measures, talking_measures)
    for name in ('mouth', 'eyes'):
        assert pair.signals[name].r == pytest.approx(1.0)
        assert pair.signals[name].ratio == pytest.approx(1.0)
    assert pair.signals['mouth'].exercised and pair.passed
    summary = summarize([pair, pair])
    assert summary['passed'] and summary['pairs_passed'] == 2 and summary['mouth']['r_median'] == pytest.approx(1)
    assert summary['mouth']['r_interval'] == pytest.approx([1, 1])   # every resampled median is 1
    assert pair.shape.ratio == pytest.approx(1.0) and pair.shape.driver_mean > 0


def test_similarity_residual_ignores_pose_and_measures_the_rest():
    rng = np.random.default_rng(0)
    points = rng.uniform(20, 100, (28, 2))
    angle, scale, shift = 0.3, 1.4, np.array([7.0, -3.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    posed = scale * points @ rotation.T + shift
    assert similarity_residual(posed, points) == pytest.approx(0, abs=1e-9)
    bend = np.zeros_like(points)
    bend[:, 0] = 0.002 * (points[:, 1] - 60) ** 2        # a non-rigid bend: no similarity undoes it
    once, twice = similarity_residual(points + bend, points), similarity_residual(points + 2 * bend, points)
    assert once > 0.5 and twice == pytest.approx(2 * once, rel=0.05)
    assert similarity_residual(posed + scale * bend @ rotation.T, points) == pytest.approx(once, rel=0.05)
    mirrored = points * [-1, 1]
    assert similarity_residual(mirrored, points) > 5     # a reflection is not a pose
    with pytest.raises(ValueError, match='same'):
        similarity_residual(points, points[:5])


def test_a_stretching_face_changes_shape_and_a_moving_one_does_not(landmarker, talking):
    """A real face, held still: shifting and scaling the whole picture keeps its shape (only landmark jitter is
    left); stretching it sideways, a little more each frame, is a change of shape."""
    import cv2
    frames = [talking[0]] * 12
    def warped(frame, i, sx, sy):
        m = np.float32([[sx, 0, (1 - sx) * 64 + i], [0, sy, (1 - sy) * 64]])
        return cv2.warpAffine(frame, m, SIZE, borderMode=cv2.BORDER_REPLICATE)
    posed = clip_measures([landmarker.detect(warped(f, i, 1 + 0.01 * i, 1 + 0.01 * i)) for i, f in enumerate(frames)])
    stretched = clip_measures([landmarker.detect(warped(f, 0, 1 + 0.025 * i, 1)) for i, f in enumerate(frames)])
    assert np.isfinite(posed.shape).all() and np.isfinite(stretched.shape).all()
    assert max(posed.shape[0], stretched.shape[0]) < 1e-9                  # measured from the first frame
    assert posed.shape.max() < MIN_DRIVER_SHAPE / 2                       # jitter: well under a driver's change
    assert np.nanmean(stretched.shape) > 4 * np.nanmean(posed.shape)
    assert stretched.shape[-1] > 2 * MIN_DRIVER_SHAPE and stretched.shape[-1] > 2.5 * stretched.shape[3]
    assert shape_change(landmarker.detect(frames[5]) * 1.7 + 4, landmarker.detect(frames[5])) < 1e-9


def test_shape_scores_on_known_series():
    driver = np.array([0.0, 0.02, 0.04, np.nan, 0.02])
    score = score_shape(driver, 2 * np.nan_to_num(driver), MIN_DRIVER_SHAPE)
    assert score.frames == 4 and score.ratio == pytest.approx(2) and score.exercised
    assert score_shape(0.1 * np.nan_to_num(driver), np.ones(5), MIN_DRIVER_SHAPE).exercised is False
    assert score_shape(driver[:2], driver[:2], MIN_DRIVER_SHAPE).ratio is None      # too few frames


def _shifted(image: np.ndarray, dx: int) -> np.ndarray:
    """The image moved ``dx`` pixels right, the left edge repeated."""
    return np.concatenate([np.repeat(image[:, :1], dx, axis=1), image[:, :-dx]], axis=1)


def test_akd_is_zero_against_itself_and_grows_with_a_shift(landmarker, talking):
    frames = talking[:4]
    real = [landmarker.detect(f) for f in frames]
    assert average_keypoint_distance(real, real).akd == 0
    akd = {dx: average_keypoint_distance(real, [landmarker.detect(_shifted(f, dx)) for f in frames]).akd
           for dx in (3, 8)}
    assert 2.0 < akd[3] < 4.0 and 6.5 < akd[8] < 9.5


def test_akd_leaves_out_and_counts_frames_without_a_face():
    a = np.zeros((5, 2))
    result = average_keypoint_distance([a, a, None, a], [a + [3, 4], None, a, a])
    assert result == AKD(akd=2.5, frames=4, frames_scored=2, no_face_real=1, no_face_generated=1)
    with pytest.raises(ValueError, match='length'):
        average_keypoint_distance([a], [a, a])


def test_correlation_and_amplitude_on_known_series():
    t = np.linspace(0, 6, 50)
    assert pearson(np.sin(t), 0.3 * np.sin(t) + 1) == pytest.approx(1)
    assert pearson(np.sin(t), -np.sin(t)) == pytest.approx(-1)
    assert pearson(np.sin(t), np.full(50, 0.2)) is None            # undefined, not 0
    assert amplitude_ratio(np.sin(t), 0.3 * np.sin(t)) == pytest.approx(0.3)
    assert amplitude_ratio(np.full(50, 0.1), np.sin(t)) is None
    # frames without a face (NaN) are left out; a driver that barely moves does not count either way
    noisy = np.sin(t).copy()
    noisy[::7] = np.nan
    score = score_signal(noisy, np.sin(t), min_driver_std=0.1)
    assert score.frames == 50 - len(range(0, 50, 7)) and score.r == pytest.approx(1) and score.passed
    still = score_signal(0.001 * np.sin(t), np.sin(t), min_driver_std=0.1)
    assert not still.exercised and still.passed is None


@pytest.mark.slow
def test_the_bundled_model_moves_a_face_with_its_own_clip(landmarker, talking, talking_measures):
    """Same identity (source = first frame), relative mode: the rebuilt mouth follows the driver's."""
    models = load_bundled(with_discriminator=False)
    output = animate_clip(Animator(models, backend='torch', device='cpu'), talking[0], talking)
    assert len(output) == len(talking) and output[0].shape == (*SIZE, 3) and output[0].dtype == np.uint8
    pair = score_pair(talking_measures, measure_clip(landmarker, output))
    mouth = pair.signals['mouth']
    assert mouth.r > 0.6 and mouth.ratio > 0.4, mouth


def test_landmarker_without_its_model_says_how_to_fetch_it(tmp_path):
    with pytest.raises(LandmarkerUnavailable, match='--fetch'):
        FaceLandmarker(model=tmp_path / 'missing.tflite')
    broken = tmp_path / 'broken.tflite'
    broken.write_bytes(b'not a model')
    with pytest.raises(LandmarkerUnavailable, match='could not load'):
        FaceLandmarker(model=broken)


def test_openings_are_normalised_by_face_size(landmarker, talking):
    points = landmarker.detect(talking[OPEN])
    scaled = points * 2.5 + 7
    assert mouth_opening(scaled) == pytest.approx(mouth_opening(points))
    assert eye_opening(scaled) == pytest.approx(eye_opening(points))
    assert MIN_DRIVER_STD['mouth'] > MIN_DRIVER_STD['eyes'] > 0


@pytest.mark.slow
def test_cli_evaluate_writes_json(tmp_path):
    data, avatars = tmp_path / 'clips', tmp_path / 'avatars'
    data.mkdir()
    avatars.mkdir()
    (data / TALKING.name).symlink_to(TALKING)
    for name in ('mona_lisa.png', 'einstein.png'):
        (avatars / name).symlink_to(SHARED / 'data/avatars' / name)
    gradient = np.linspace(0, 255, 200 * 300 * 3).reshape(200, 300, 3).astype(np.uint8)
    iio.imwrite(avatars / 'no_face.png', gradient)
    out = tmp_path / 'scores.json'
    proc = fomm('evaluate', '--data', data, '--avatars', avatars, '--max_frames', 6, '--cpu', '--json', out,
                '--kp_smoothing', 0.25, timeout=300)
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(out.read_text())
    rec, transfer = scores['reconstruction'], scores['transfer']
    assert scores['frame_size'] == [128, 128] and rec['frames'] == 6 and rec['no_face_real'] == 0
    assert rec['frames_scored'] == 6 and 0 < rec['akd'] < 10 and 0 < rec['akd_static'] < 10
    assert 0 < rec['l1'] < 1 and rec['videos'][0]['video'] == TALKING.name
    for name in ('mouth', 'eyes'):  # the same person's signals, per clip and as medians
        assert set(rec['videos'][0][name]) >= {'r', 'ratio', 'exercised'} and rec[name]['clips_exercised'] <= 1
    assert 'reconstruction mouth (same person)' in proc.stdout
    assert transfer['pairs'] == 3 and {p['avatar'] for p in transfer['pair_scores']} == {
        'mona_lisa.png', 'einstein.png', 'no_face.png'}
    # the avatars are cropped around their faces as the live app crops them; one without a face is used whole
    crops = scores['avatar_crops']
    assert crops['no_face.png'] is None and 'no_face.png: no face found' in proc.stderr
    for name in ('mona_lisa.png', 'einstein.png'):
        x0, y0, side = crops[name]
        assert 0 <= x0 and 0 <= y0 and x0 + side <= 512 and y0 + side <= 512 and 300 < side < 512
    for pair in transfer['pair_scores']:
        if pair['avatar'] == 'no_face.png':
            assert pair['no_face_rate'] == 1 and pair['shape']['frames'] == 0
            continue
        assert pair['frames'] == 6 and 0 <= pair['no_face_rate'] <= 1
        assert set(pair['mouth']) >= {'r', 'ratio', 'driver_std', 'output_std', 'exercised', 'passed'}
        assert pair['shape']['frames'] == 6 and pair['shape']['output_mean'] >= 0
    assert set(transfer['shape']) == {'pairs_exercised', 'ratio_median'}
    for name in ('mouth', 'eyes'):   # each median with its interval over resampled avatars and clips (None: no pair)
        s = transfer[name]
        assert set(s) >= {'r_interval', 'ratio_interval'}
        if s['pairs_exercised']:
            assert s['r_interval'][0] <= s['r_median'] <= s['r_interval'][1]
        else:
            assert s['r_interval'] is None and s['ratio_interval'] is None
    assert '95% intervals of the medians' in proc.stdout
    assert scores['kp_smoothing'] == 0.25 and 'keypoints smoothed at 0.25' in proc.stdout
    assert 'AKD' in proc.stdout and 'pairs pass' in proc.stdout and 'transfer face shape' in proc.stdout


def test_cli_evaluate_bad_input_is_a_clear_error(tmp_path, capsys):
    """In-process (the same ``main`` the ``fomm`` command runs): each mistake exits 2 with a message. The
    output checks get an empty avatar folder too, so a regression fails fast instead of running everything."""
    from fomm_model.cli import main
    empty, one_clip = tmp_path / 'empty', tmp_path / 'one_clip'
    empty.mkdir()
    one_clip.mkdir()
    (one_clip / TALKING.name).symlink_to(TALKING)
    checkpoint = tmp_path / 'model.pth.tar'
    shutil.copyfile(default_checkpoint_path(), checkpoint)
    for args, message in [(['--max_frames', '2'], '--max_frames must be >= 3'),
                          (['--data', str(SHARED / 'data/faces/test'), '--avatars', str(empty)], 'no avatar images'),
                          (['--data', str(tmp_path / 'nowhere')], 'data folder not found'),
                          (['--checkpoint', str(tmp_path / 'none.pth.tar')], 'checkpoint not found'),
                          (['--json', str(tmp_path), '--avatars', str(empty)], 'is a folder'),
                          (['--checkpoint', str(checkpoint), '--json', str(checkpoint), '--avatars', str(empty)],
                           'same file as --checkpoint'),
                          (['--crop_jitter', '0.5'], '--crop_jitter must be a fraction'),
                          (['--crop_jitter', '0.01', '--whole_avatars'], 'pass one of them'),
                          (['--people_avatars', '--data', str(one_clip), '--avatars', str(empty)],
                           'needs at least two clips')]:
        assert main(['evaluate', *args]) == 2, args
        assert message in capsys.readouterr().err
    for value, message in (('1.5', 'keypoint smoothing must be between 0 (off) and 1'), ('some', "not a number: 'some'")):
        with pytest.raises(SystemExit) as stopped:   # argparse's own usage error
            main(['evaluate', '--kp_smoothing', value])
        assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_crop_jitter_adds_each_avatar_at_moved_crops(tmp_path):
    """--crop_jitter: every cropped avatar also at its crop moved by +-FRACTION of its side along both axes, inside
    the image; a move the image's edges cancel (a crop that is the whole image) adds nothing."""
    from fomm_model.cli.evaluate import _avatars
    avatars = tmp_path / 'avatars'
    avatars.mkdir()
    for name in ('mona_lisa.png', 'girl_with_a_pearl_earring.png'):
        (avatars / name).symlink_to(SHARED / 'data/avatars' / name)
    images, crops = _avatars(avatars, (128, 128), whole=False)
    jittered_images, jittered = _avatars(avatars, (128, 128), whole=False, jitter=0.02)
    assert {k: v for k, v in jittered.items() if '@' not in k} == crops   # the detected crops are unchanged
    x0, y0, side = crops['mona_lisa.png']
    step = round(0.02 * side)
    height, width = read_image(avatars / 'mona_lisa.png').shape[:2]
    assert jittered['mona_lisa.png@+0.02'] == [min(x0 + step, width - side), min(y0 + step, height - side), side]
    assert jittered['mona_lisa.png@-0.02'] == [max(x0 - step, 0), max(y0 - step, 0), side]
    moved = jittered_images['mona_lisa.png@+0.02'].astype(int)
    assert moved.shape == (128, 128, 3) and np.abs(moved - images['mona_lisa.png']).mean() > 1
    assert crops['girl_with_a_pearl_earring.png'] == [0, 0, 512]   # the whole image: nowhere to move
    assert not any(k.startswith('girl_with_a_pearl_earring.png@') for k in jittered)


def test_closed_mouth_frame_is_the_least_open_mouth_with_a_face(talking_measures):
    nan = float('nan')
    series = ClipMeasures([None] * 5, np.array([0.05, nan, 0.01, 0.03, 0.01]), np.zeros(5), np.zeros(5))
    assert closed_mouth_frame(series) == 2   # frame 1 has no face; the first of equal minima
    assert closed_mouth_frame(ClipMeasures([None] * 2, np.full(2, nan), np.zeros(2), np.zeros(2))) is None
    closed = closed_mouth_frame(talking_measures)   # the talking man: closed at CLOSED_1 / CLOSED_2, open at OPEN
    assert talking_measures.mouth[closed] <= min(talking_measures.mouth[[CLOSED_1, CLOSED_2]])
    assert talking_measures.mouth[closed] < 0.5 * talking_measures.mouth[OPEN]


def test_people_avatars_drive_each_held_out_person_by_the_other_clips(tmp_path, landmarker):
    """--people_avatars: each clip's person, at its first frame and at its most closed mouth, animated by every
    other clip (never by its own), scored apart from the portraits, whose scores it leaves as they were."""
    other = SHARED / 'data/faces/test/lp_d3#lp__driving_d3.mp4'
    data, avatars = tmp_path / 'clips', tmp_path / 'avatars'
    data.mkdir()
    avatars.mkdir()
    for clip in (TALKING, other):
        (data / clip.name).symlink_to(clip)
    (avatars / 'einstein.png').symlink_to(SHARED / 'data/avatars/einstein.png')
    out = tmp_path / 'scores.json'
    proc = fomm('evaluate', '--data', data, '--avatars', avatars, '--max_frames', 30, '--people_avatars', '--cpu',
                '--anchor', 'closed_mouth', '--json', out, timeout=300)
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(out.read_text())
    assert scores['transfer']['pairs'] == 2 and {p['avatar'] for p in scores['transfer']['pair_scores']} == {
        'einstein.png'}
    people = scores['transfer_people']
    for clip in (TALKING, other):   # the closed mouth is found on the clip's own (scored) frames
        frames, _ = read_video(clip, max_frames=30)
        measures = measure_clip(landmarker, [resize_image(f, SIZE) for f in frames])
        closed = closed_mouth_frame(measures)
        assert people['avatar_frames'][clip.name] == {'first_frame': 0, 'mouth_closed': closed}
        assert scores['anchor_frames'][clip.name] == closed   # --anchor closed_mouth: the drivers start there too
        opening = people['avatar_mouth_opening'][clip.name]
        assert opening['mouth_closed'] == pytest.approx(measures.mouth[closed])
        assert opening['mouth_closed'] <= opening['first_frame']
    for kind in ('first_frame', 'mouth_closed'):
        pairs = people[kind]['pair_scores']
        assert people[kind]['pairs'] == 2 and len(pairs) == 2
        for pair in pairs:
            person, frame = pair['avatar'].rsplit('@', 1)
            assert person != pair['video'] and int(frame) == people['avatar_frames'][person][kind]
            assert pair['frames'] == 30 and pair['no_face_rate'] < 0.5
            assert set(pair['mouth']) >= {'r', 'ratio', 'exercised'}
    assert 'held-out people as avatars (first frame)' in proc.stdout
    assert 'held-out people as avatars (mouth most closed)' in proc.stdout
    assert scores['anchor'] == 'closed_mouth' and 'frame with the mouth most closed' in proc.stdout


def test_the_anchor_frame_is_where_the_motion_starts(talking):
    """animate_clip's anchor: at the anchor frame the driver has not moved, so the avatar (here the driver's own
    closed-mouth frame) comes out as it went in; at the open mouth it does not."""
    models = load_bundled(with_discriminator=False)
    animator = Animator(models, backend='torch', device='cpu')
    output = animate_clip(animator, talking[CLOSED_1], talking, anchor=CLOSED_1)

    def diff(frame):
        return np.abs(frame.astype(float) - talking[CLOSED_1]).mean()
    assert diff(output[CLOSED_1]) < 0.7 * diff(output[OPEN])   # 4.6 against 8.5 grey levels (face-128-v5)
    assert diff(output[CLOSED_1]) < diff(animate_clip(animator, talking[CLOSED_1], talking)[CLOSED_1])


def test_driving_keypoints_once_per_clip_animate_as_frames_do_and_smooth_as_the_app(talking):
    """animate_clip from keypoints detected once per clip gives the frames animate_clip gives from the frames; with
    the app's keypoint smoothing the driver's keypoints jitter less from frame to frame and the avatar still moves."""
    models = load_bundled(with_discriminator=False)
    animator = Animator(models, backend='torch', device='cpu')
    frames = talking[:40]
    plain = driving_keypoints(animator, frames, 25.0)
    assert all(np.array_equal(a, b) for a, b in zip(animate_clip(animator, talking[0], frames, 3, plain),
                                                     animate_clip(animator, talking[0], frames, 3)))
    smooth = driving_keypoints(animator, frames, 25.0, smoothing=0.5)

    def jitter(kps):
        values = np.stack([k.value for k in kps])
        return float(np.abs(np.diff(values, 2, axis=0)).mean())   # second differences: jitter, not motion
    assert jitter(smooth) < 0.6 * jitter(plain)
    moved = animate_clip(animator, talking[0], frames, 0, smooth)
    assert np.abs(moved[-1].astype(float) - moved[0]).mean() > 1.0
