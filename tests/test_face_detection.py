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
    x0, y0, side = fd.square_box(face, (512, 512, 3), scale=2.0, shift_down=0.1)
    assert side == 120
    assert (x0 + side / 2, y0 + side / 2) == (130, 136)


def test_square_box_stays_in_frame():
    # face near the top-left corner: the square is shifted, not shrunk
    x0, y0, side = fd.square_box(fd.FaceBox(0, 0, 50, 50, 0.9), (300, 400, 3))
    assert (x0, y0, side) == (0, 0, 100)
    # face near the bottom-right corner
    x0, y0, side = fd.square_box(fd.FaceBox(350, 260, 400, 300, 0.9), (300, 400, 3))
    assert x0 + side == 400 and y0 + side == 300 and side == 100
    # a crop larger than the frame is reduced to the shorter side
    x0, y0, side = fd.square_box(fd.FaceBox(100, 50, 300, 250, 0.9), (300, 400, 3), scale=2.0)
    assert side == 300 and y0 == 0 and 0 <= x0 <= 100


def test_square_box_on_real_face_contains_face(detector):
    frame = iio.imread(CLIPS[0], index=0)
    face = detector.detect(frame)[0]
    x0, y0, side = fd.square_box(face, frame.shape)
    assert 0 <= x0 and 0 <= y0 and x0 + side <= frame.shape[1] and y0 + side <= frame.shape[0]
    assert x0 <= face.x0 + 1 and face.x1 - 1 <= x0 + side
