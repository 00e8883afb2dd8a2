"""Face detection on real faces (shared test clips and avatars) and the square training-style crop."""
from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from fomm_model import face_detection as fd

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
CLIPS = sorted((SHARED / 'data/faces/test').glob('*.mp4'))
AVATARS = sorted((SHARED / 'data/avatars').glob('*.png'))


@pytest.fixture(scope='module')
def detector():
    if not fd.model_path().is_file():
        try:
            fd.fetch_model(quiet=True)
        except fd.FaceDetectorUnavailable as exc:
            pytest.skip(f'face detector model unavailable: {exc}')
    with fd.FaceDetector() as det:
        yield det


def _check_face(face: fd.FaceBox, shape: tuple[int, ...]) -> None:
    h, w = shape[:2]
    assert 0.5 <= face.score <= 1.0
    assert -0.05 * w <= face.x0 < face.x1 <= 1.05 * w and -0.05 * h <= face.y0 < face.y1 <= 1.05 * h
    assert face.width > 0.15 * w  # these are close-up portraits
    assert len(face.keypoints) == 6
    # eyes are above the mouth, inside the box horizontally
    (rex, rey), (lex, ley), _, (mx, my) = face.keypoints[:4]
    assert rey < my and ley < my
    assert face.x0 <= rex <= face.x1 and face.x0 <= lex <= face.x1


@pytest.mark.parametrize('clip', CLIPS, ids=[c.stem for c in CLIPS])
def test_detects_face_in_clip_frames(detector, clip):
    for index in (0, 10):
        frame = iio.imread(clip, index=index)
        faces = detector.detect(frame)
        assert faces, f'no face in frame {index} of {clip.name}'
        _check_face(faces[0], frame.shape)
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


@pytest.mark.parametrize('avatar', AVATARS, ids=[a.stem for a in AVATARS])
def test_detects_face_in_avatar(detector, avatar):
    image = iio.imread(avatar)[..., :3]
    faces = detector.detect(np.ascontiguousarray(image))
    assert faces, f'no face in {avatar.name}'
    _check_face(faces[0], image.shape)


def test_no_face_in_flat_grey(detector):
    assert detector.detect(np.full((256, 256, 3), 128, np.uint8)) == []


def test_rejects_bad_images(detector):
    with pytest.raises(ValueError, match='HxWx3'):
        detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match='uint8'):
        detector.detect(np.zeros((64, 64, 3), np.float32))


def test_missing_model_names_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv(fd.MODEL_ENV, str(tmp_path / 'nope.tflite'))
    assert fd.model_path() == tmp_path / 'nope.tflite'
    with pytest.raises(fd.FaceDetectorUnavailable, match='--fetch'):
        fd.FaceDetector()


def test_corrupt_model_is_reported(tmp_path, monkeypatch):
    bad = tmp_path / 'bad.tflite'
    bad.write_bytes(b'not a model')
    monkeypatch.setenv(fd.MODEL_ENV, str(bad))
    with pytest.raises(fd.FaceDetectorUnavailable, match='bad.tflite'):
        fd.FaceDetector()


def test_model_path_honours_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv(fd.MODEL_ENV, raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert fd.model_path() == tmp_path / 'fomm-live' / fd.MODEL_NAME


def test_square_box_centred_and_shifted():
    face = fd.FaceBox(100, 100, 160, 160, 0.9)
    x0, y0, side = fd.square_box(face, (512, 512, 3), fd.Framing(scale=2.0, shift_down=0.1))
    assert side == 120
    assert (x0 + side / 2, y0 + side / 2) == (130, 136)
    x0, y0, side = fd.square_box(face, (512, 512, 3))  # the training clips' framing: larger face, higher centre
    assert side == 114 and (x0 + side / 2, y0 + side / 2) == (130, 121)


def test_framing_of_a_crop_gives_the_crop_back():
    face = fd.FaceBox(200, 150, 280, 246, 0.9)
    framing = fd.Framing(scale=1.7, shift_down=-0.2)
    x0, y0, side = fd.square_box(face, (1000, 1000, 3), framing)
    found = fd.Framing.of_crop(face, x0, y0, side)
    assert found.scale == pytest.approx(1.7, abs=0.01) and found.shift_down == pytest.approx(-0.2, abs=0.01)


def test_square_box_stays_in_frame():
    # face near the top-left corner: the square is shifted, not shrunk
    x0, y0, side = fd.square_box(fd.FaceBox(0, 0, 50, 50, 0.9), (300, 400, 3))
    assert (x0, y0, side) == (0, 0, 95)
    # face near the bottom-right corner
    x0, y0, side = fd.square_box(fd.FaceBox(350, 260, 400, 300, 0.9), (300, 400, 3))
    assert x0 + side == 400 and y0 + side == 300 and side == 95
    # a crop larger than the frame is reduced to the shorter side
    x0, y0, side = fd.square_box(fd.FaceBox(100, 50, 300, 250, 0.9), (300, 400, 3))
    assert side == 300 and y0 == 0 and 0 <= x0 <= 100


def test_square_box_on_real_face_contains_face(detector):
    frame = iio.imread(CLIPS[0], index=0)
    face = detector.detect(frame)[0]
    x0, y0, side = fd.square_box(face, frame.shape)
    assert 0 <= x0 and 0 <= y0 and x0 + side <= frame.shape[1] and y0 + side <= frame.shape[0]
    assert x0 <= face.x0 + 1 and face.x1 - 1 <= x0 + side


def test_face_framing_is_how_the_training_clips_frame_faces(detector):
    """The app frames avatar and driver as the bundled model's training clips do: measured on those clips, the
    median framing over identities is FACE_FRAMING (the old 2.0 / +0.1 put the centre 0.25 face heights too low)."""
    clips = sorted((SHARED / 'data/faces/train').glob('*.mp4'))
    found = fd.measure_framing(detector, clips)
    assert found['identities'] >= 50
    assert found['scale'] == pytest.approx(fd.FACE_FRAMING.scale, abs=0.1)
    assert found['shift_down'] == pytest.approx(fd.FACE_FRAMING.shift_down, abs=0.05)
    assert found['scale_10_90'][0] < found['scale'] < found['scale_10_90'][1]


def test_live_crop_of_a_held_out_clip_matches_its_framing(detector):
    """A held-out clip's frame, with room around it, is cropped by square_box close to where the clip was cut."""
    import cv2
    offsets = []
    for clip in CLIPS:
        frame = iio.imread(clip, index=0)
        pad = frame.shape[0] // 2
        padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, side = fd.square_box(detector.detect(padded)[0], padded.shape)
        offsets.append((side / frame.shape[0], (y0 + side / 2 - pad - frame.shape[0] / 2) / side))
    scale, dy = np.median(offsets, axis=0)
    assert 0.8 <= scale <= 1.25
    assert abs(dy) < 0.06   # in crop sides; the old framing's centre was 0.15 lower


def test_face_square_frames_avatars_like_the_training_clips(detector):
    """The app's avatar crop: inside the image, and framed as FACE_FRAMING says wherever the image leaves room."""
    from fomm_model.video_io import read_image
    unclamped = 0
    for path in AVATARS:
        image = read_image(path)
        x0, y0, side = fd.face_square(detector, image)
        assert 0 <= x0 and 0 <= y0 and x0 + side <= image.shape[1] and y0 + side <= image.shape[0]
        if 0 < x0 and 0 < y0 and x0 + side < image.shape[1] and y0 + side < image.shape[0]:
            framing = fd.Framing.of_crop(detector.detect(image)[0], x0, y0, side)
            assert framing.scale == pytest.approx(fd.FACE_FRAMING.scale, abs=0.02)
            assert framing.shift_down == pytest.approx(fd.FACE_FRAMING.shift_down, abs=0.02)
            unclamped += 1
    assert unclamped >= 2


def test_measure_framing_command(detector, tmp_path, capsys):
    assert fd._main(['--measure-framing', str(SHARED / 'data/faces/test')]) == 0
    out = capsys.readouterr().out
    assert '7 clips, 7 identities' in out and 'face widths' in out
    assert fd._main(['--measure-framing', str(tmp_path)]) == 1
    assert 'no .mp4 clips' in capsys.readouterr().err
