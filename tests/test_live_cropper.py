"""Face cropper (real mediapipe detector on real face frames pasted on a canvas) and avatar loading."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import AVATAR, clip_frames, paste

from fomm_model.face_detection import FaceDetector
from live.avatar import AvatarError, load_avatar, to_rgb
from live.cropper import FaceCropper

FPS = 30.0


@pytest.fixture(scope='module')
def detector():
    with FaceDetector(min_confidence=0.5) as d:
        yield d


@pytest.fixture(scope='module')
def faces():
    return clip_frames(40)


def centre(box):
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def test_crop_follows_a_moving_face(detector, faces):
    cropper = FaceCropper((128, 128), detector)
    x0, y0, step = 40, 100, 8
    results = [cropper.process(paste(faces[i % len(faces)], x0 + step * i, y0), i / FPS) for i in range(40)]
    assert all(r.face_found for r in results)
    assert results[0].crop.shape == (128, 128, 3)
    start, end = centre(results[0].box), centre(results[-1].box)
    moved = end[0] - start[0]
    assert moved > 0.8 * step * 39, moved              # followed the 312 px motion
    assert abs(end[1] - start[1]) < 20
    # the face (pasted 256 px tile) stays inside the crop at the end: lag is small
    face_cx = x0 + step * 39 + 128
    assert abs(end[0] - face_cx) < 30


def test_crop_is_steady_on_a_still_face(detector, faces):
    from fomm_model.face_detection import square_box
    cropper = FaceCropper((128, 128), detector)
    rng = np.random.default_rng(0)
    boxes, raw = [], []
    for i in range(40):
        frame = paste(faces[i % 4], 200, 120)  # small natural head motion, fixed placement
        frame = np.clip(frame.astype(np.int16) + rng.integers(-6, 7, frame.shape), 0, 255).astype(np.uint8)
        r = cropper.process(frame, i / FPS)
        boxes.append(r.box)
        x, y, side = square_box(detector.detect(frame)[0], frame.shape)
        raw.append((x + side / 2, y + side / 2, side))
    boxes = np.array(boxes[10:], float)
    raw = np.array(raw[10:], float)
    jitter = np.abs(np.diff(boxes[:, :2], axis=0)).max()
    raw_jitter = np.abs(np.diff(raw[:, :2], axis=0)).max()
    assert jitter <= 2.0, jitter
    assert jitter <= raw_jitter
    sides = boxes[:, 2] - boxes[:, 0]
    assert sides.max() - sides.min() <= 3


def test_no_face_holds_the_last_crop(detector, faces):
    cropper = FaceCropper((128, 128), detector)
    for i in range(5):
        last = cropper.process(paste(faces[i], 300, 150), i / FPS)
    assert last.face_found
    empty = np.full((480, 640, 3), 90, np.uint8)
    for i in range(5, 10):
        r = cropper.process(empty, i / FPS)
        assert not r.face_found
        assert r.box == last.box
    back = cropper.process(paste(faces[0], 300, 150), 10 / FPS)
    assert back.face_found


def test_scale_lock_zoom_and_offset(detector, faces):
    cropper = FaceCropper((128, 128), detector)
    for i in range(5):
        r = cropper.process(paste(faces[i], 200, 120), i / FPS)
    cropper.lock_scale()
    side = r.box[2] - r.box[0]
    small = cv2_resize_face(faces[5], 0.6)
    for i in range(5, 25):  # the face shrinks (user steps back): the locked crop keeps its size
        locked = cropper.process(paste(small, 250, 150), i / FPS)
    assert abs((locked.box[2] - locked.box[0]) - side) <= 1
    zoomed = cropper.process(paste(small, 250, 150), 26 / FPS, zoom=2.0, offset=(0.1, 0.0))
    assert abs((zoomed.box[2] - zoomed.box[0]) - side / 2) <= 2
    assert centre(zoomed.box)[0] > centre(locked.box)[0]


def test_asynchronous_detection_follows_the_face_without_blocking(detector, faces):
    """Detection on its own thread: the crop follows one frame late, and process() never waits once a face is
    known (a detector that takes 50 ms must not slow the frame loop)."""
    import threading

    class SlowDetector:
        def __init__(self):
            self.release = threading.Event()

        def detect(self, rgb):
            self.release.wait(2.0)
            return detector.detect(rgb)

    slow = SlowDetector()
    cropper = FaceCropper((128, 128), slow, asynchronous=True)
    try:
        assert cropper.asynchronous
        slow.release.set()
        first = cropper.process(paste(faces[0], 40, 100), 0.0)  # nothing known yet: detects synchronously
        assert first.face_found
        slow.release.clear()
        frame1 = paste(faces[1], 240, 100)
        cropper.after_frame(frame1, 1 / FPS)           # runs on the worker, blocked by the slow detector
        held = cropper.process(paste(faces[2], 240, 100), 2 / FPS)
        assert not cropper._worker.wait_idle(0), 'process() waited for the detector'  # noqa: SLF001 - still busy
        assert held.box == first.box                           # no result yet: the last crop holds
        slow.release.set()
        cropper._worker.wait_idle(2.0)  # noqa: SLF001 - let the worker finish, as the idle time between frames does
        moved = None
        for i in range(3, 40):  # the worker now keeps up (each frame handed over after processing)
            moved = cropper.process(frame1, i / FPS)
            cropper.after_frame(frame1, i / FPS)
            cropper._worker.wait_idle(2.0)  # noqa: SLF001
        assert moved.face_found
        assert abs(centre(moved.box)[0] - (240 + 128)) < 30, moved.box
        assert cropper._worker.runs >= 30  # noqa: SLF001
    finally:
        slow.release.set()
        cropper.close()
    assert not cropper._worker._thread.is_alive()  # noqa: SLF001


def test_asynchronous_reset_discards_a_detection_of_the_old_view(detector, faces):
    cropper = FaceCropper((128, 128), detector, asynchronous=True)
    try:
        cropper.process(paste(faces[0], 40, 100), 0.0)
        cropper.after_frame(paste(faces[0], 360, 100), 1 / FPS)
        cropper._worker.wait_idle(2.0)  # noqa: SLF001 - finished, not yet picked up
        cropper.reset()            # e.g. the camera was switched
        r = cropper.process(paste(faces[0], 40, 100), 2 / FPS)
        assert abs(centre(r.box)[0] - (40 + 128)) < 30     # the stale right-hand result was dropped
    finally:
        cropper.close()


@pytest.mark.parametrize('asynchronous', [False, True])
def test_detection_rate_follows_keypoint_motion(detector, faces, asynchronous):
    """A face that keeps still in the crop is re-detected every detect_every_still frames, a moving one every
    detect_every frames, and one that is lost every frame."""
    cropper = FaceCropper((128, 128), detector, detect_every=2, detect_every_still=8, asynchronous=asynchronous)
    kp = np.random.default_rng(0).uniform(-0.5, 0.5, (10, 2))
    frame = paste(faces[0], 200, 120)

    def run(n, shift_per_frame, image=frame):
        before = cropper.detections
        for i in range(n):
            cropper.process(image, i / FPS)
            cropper.after_frame(image, i / FPS, kp + shift_per_frame * i)
            if cropper.asynchronous:
                cropper._worker.wait_idle(2.0)  # noqa: SLF001 - as the idle time between camera frames does
        if cropper.asynchronous:
            cropper.process(image, n / FPS)     # picks up the last finished detection
        return cropper.detections - before
    try:
        run(4, 0.0)
        threshold = cropper.motion_threshold
        still = run(32, threshold / 60)   # jitter-sized: under the threshold between detections
        moving = run(32, 1.5 * threshold)  # clearly above the threshold each frame
        lost = run(10, 0.0, np.full_like(frame, 90))
    finally:
        cropper.close()
    assert 3 <= still <= 5, still          # ~32 / 8
    assert 14 <= moving <= 18, moving      # ~32 / 2
    assert lost >= 9, lost


@pytest.mark.parametrize('asynchronous', [False, True])
def test_a_jumping_keypoint_brings_detection_forward(detector, faces, asynchronous):
    """One keypoint jumping (the face left: the keypoints of an empty crop) re-detects on the next frame, though
    the centroid barely moved and the face was due only every 8 frames."""
    from live.cropper import KEYPOINT_JUMP
    cropper = FaceCropper((128, 128), detector, detect_every=8, asynchronous=asynchronous)
    kp = np.random.default_rng(1).uniform(-0.5, 0.5, (15, 2))
    frame = paste(faces[0], 200, 120)

    def step(i, points):
        cropper.process(frame, i / FPS)
        cropper.after_frame(frame, i / FPS, points)
        if cropper.asynchronous:
            cropper._worker.wait_idle(2.0)  # noqa: SLF001 - as the idle time between camera frames does
    try:
        for i in range(3):
            step(i, kp)
        before = cropper.detections
        jumped = kp.copy()
        jumped[4] += 1.5 * KEYPOINT_JUMP                       # centroid: 0.01, far under the motion threshold
        step(3, jumped)
        step(4, jumped)
        if cropper.asynchronous:
            cropper.process(frame, 5 / FPS)                    # picks up the finished detection
        assert cropper.detections == before + 1
        step(5, jumped)
        step(6, jumped)                                         # no jump since: back to every 8 frames
        assert cropper.detections == before + 1
    finally:
        cropper.close()


def test_detection_worker_survives_a_failing_detection(faces):
    from live.detection_worker import DetectionWorker
    calls = []

    def detect(frame):
        calls.append(frame.shape)
        if len(calls) == 1:
            raise RuntimeError('detector hiccup')
        return frame.shape[0]
    worker = DetectionWorker(detect)
    try:
        assert worker.submit(faces[0], 1.0)
        assert worker.wait_idle(2.0)
        assert worker.poll() == (None, 1.0) and worker.errors == 1   # reported as "no face", not raised
        assert worker.poll() is None                                  # each result is handed out once
        assert worker.submit(faces[1], 2.0) and worker.wait_idle(2.0)
        assert worker.poll() == (256, 2.0)
    finally:
        worker.close()
    assert not worker.submit(faces[0], 3.0)                           # closed: refused, nothing runs
    assert len(calls) == 2


def test_fast_downscale_matches_area_resampling(faces):
    from live.cv2_compat import cv2
    from live.resize import downscale
    frame = paste(faces[0], 100, 60, canvas_size=(720, 1280))
    for side in (130, 200, 248, 380, 600):
        crop = frame[50:50 + side, 90:90 + side]
        fast = downscale(crop, 128, 128)
        area = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA)
        assert fast.shape == (128, 128, 3) and fast.flags['C_CONTIGUOUS']
        assert np.abs(fast.astype(np.int16) - area).mean() < 2.0, side
    assert downscale(crop[:64, :64], 128, 128).shape == (128, 128, 3)       # enlarging works too
    assert downscale(frame, 256, 144).shape == (144, 256, 3)                 # non-square


def cv2_resize_face(face, factor):
    from live.cv2_compat import cv2
    return cv2.resize(face, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


def test_without_detector_uses_centre_square():
    r = FaceCropper((128, 128), None).process(np.zeros((480, 640, 3), np.uint8), 0.0)
    assert r.box == (80, 0, 560, 480) and not r.face_found


def test_avatar_is_face_cropped_from_any_format(detector):
    info = load_avatar(AVATAR, (128, 128), detector)
    assert info.face_found and info.warning is None and info.image.shape == (128, 128, 3)
    x0, y0, x1, y1 = info.crop_box
    assert x1 - x0 == y1 - y0 and x1 - x0 < 512
    from fomm_model.video_io import read_image
    rgb = read_image(AVATAR)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert np.array_equal(load_avatar(rgba, (128, 128), detector).image, info.image)
    grey = load_avatar(rgb.mean(-1).astype(np.uint8), (128, 128), detector)
    assert grey.image.shape == (128, 128, 3)


def test_avatar_without_face_warns_and_full_image_option(detector):
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, :150] = 200
    info = load_avatar(wide, (128, 128), detector)
    assert not info.face_found and 'no face' in info.warning
    full = load_avatar(wide, (128, 128), detector, keep_full_image=True)
    assert full.warning is None and full.image.shape == (128, 128, 3)
    assert full.image[64, 5].mean() > 150 and full.image[64, 120].mean() < 50  # whole width kept, not cropped
    with pytest.raises(AvatarError, match='not found'):
        load_avatar('/nonexistent/avatar.png', (128, 128), detector)
    with pytest.raises(AvatarError):
        to_rgb(np.zeros((4, 4, 5), np.uint8))


def test_large_avatars_are_cropped_where_fomm_evaluate_crops_them(tmp_path):
    """An avatar beyond AVATAR_MAX_SIDE is shrunk the same way by the app's loader and by `fomm evaluate` before
    its face is looked for, so the metrics score the crop the app animates."""
    import cv2

    from fomm_model.cli.evaluate import _avatars
    from fomm_model.face_detection import AVATAR_MAX_SIDE, AVATAR_MIN_CONFIDENCE, limit_avatar_side
    from fomm_model.video_io import read_image
    rgb = read_image(AVATAR)
    assert limit_avatar_side(rgb) is rgb   # small enough: untouched
    h, w = rgb.shape[:2]
    big = cv2.resize(rgb, (round(w * 2600 / max(h, w)), round(h * 2600 / max(h, w))), interpolation=cv2.INTER_CUBIC)
    assert max(limit_avatar_side(big).shape[:2]) == AVATAR_MAX_SIDE
    cv2.imwrite(str(tmp_path / 'big.png'), big[:, :, ::-1])
    with FaceDetector(min_confidence=AVATAR_MIN_CONFIDENCE) as detector:   # as the app's engine loads avatars
        info = load_avatar(tmp_path / 'big.png', (128, 128), detector)
    assert info.face_found and max(info.full_image.shape[:2]) == AVATAR_MAX_SIDE
    images, squares = _avatars(tmp_path, (128, 128), whole=False)
    x0, y0, side = squares['big.png']
    assert info.crop_box == (x0, y0, x0 + side, y0 + side)
    assert np.abs(images['big.png'].astype(int) - info.image.astype(int)).mean() < 2
