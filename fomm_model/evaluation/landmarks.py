"""468-point face landmarks for evaluation, and the mouth / eye opening measured from them.

Model: MediaPipe's Face Mesh ``face_landmark.tflite`` (Apache-2.0). Recent mediapipe wheels ship no model
files and mediapipe 0.10.21, which does, needs numpy<2; so :func:`fetch_model` extracts the one file from the
0.10.21 wheel on PyPI into the user cache (like the face detector), and it runs through Google's LiteRT
interpreter (``ai-edge-litert``, Apache-2.0, the maintained successor of ``tflite-runtime``). The face box
comes from the project's own BlazeFace :class:`~fomm_model.face_detection.FaceDetector`.

The mesh model expects what MediaPipe's face-mesh graph feeds it: a square region 1.5x the face box, rotated
so the eyes are level, as 192x192 RGB in [0, 1]. One refinement pass re-centres that region on the first
landmarks (as MediaPipe's tracking does between frames), which steadies the result when the detector box is
loose.

    python -m fomm_model.evaluation.landmarks --fetch
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..face_detection import FaceDetector, FaceDetectorUnavailable
from .metrics import similarity_residual

MODEL_NAME = 'face_landmark.tflite'
MODEL_ENV = 'FOMM_FACE_LANDMARK_MODEL'
_WHEEL_SPEC = 'mediapipe==0.10.21'
_WHEEL_MEMBER = 'mediapipe/modules/face_landmark/' + MODEL_NAME
FETCH_COMMAND = f'{Path(sys.executable).name} -m fomm_model.evaluation.landmarks --fetch'
INSTALL_HINT = 'pip install "fomm-live[eval]"'

NUM_LANDMARKS = 468
INPUT_SIZE = 192
ROI_SCALE = 1.5  # region side / face size, as MediaPipe's face-mesh graph

# Face Mesh indices (the canonical 468-point topology); "right" is the subject's right (image left).
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
INNER_LIP_PAIRS = ((81, 178), (82, 87), (13, 14), (312, 317), (311, 402))   # (upper, lower), centre 3 +-1
RIGHT_EYE_LID_PAIRS = ((160, 144), (159, 145), (158, 153))                  # (upper lid, lower lid)
LEFT_EYE_LID_PAIRS = ((387, 373), (386, 374), (385, 380))
# Points that expressions hardly move: the face outline from the cheekbones up, the nose's ridge and tip, the eyes'
# corners (not the lids, not the mouth, not the jaw, which drops as the mouth opens). How far they leave their
# first-frame layout, beyond a similarity, is the face's change of shape: a head turning out of the image plane, or
# a generated face folding.
UPPER_FACE_OUTLINE = (234, 127, 162, 21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 389, 356, 454)
NOSE_RIDGE = (168, 6, 197, 195, 5, 4, 1)
EYE_CORNERS = (33, 133, 362, 263)
SHAPE_POINTS = UPPER_FACE_OUTLINE + NOSE_RIDGE + EYE_CORNERS


class LandmarkerUnavailable(RuntimeError):
    """The LiteRT interpreter, mediapipe or a model file is missing; the message says how to fix it."""


def model_path() -> Path:
    """Where the landmark model is expected: ``$FOMM_FACE_LANDMARK_MODEL`` or the user cache."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache').expanduser()
    return cache / 'fomm-live' / MODEL_NAME


def fetch_model(force: bool = False, quiet: bool = False) -> Path:
    """Make sure the landmark model exists, extracting it from the mediapipe 0.10.21 wheel (PyPI) if needed."""
    target = model_path()
    if target.is_file() and target.stat().st_size > 0 and not force:
        return target
    if not quiet:
        print(f'Fetching the face landmark model ({MODEL_NAME}) from the {_WHEEL_SPEC} wheel on PyPI ...',
              file=sys.stderr)
    from ..wheel_files import WheelFetchError, extract_from_wheel
    try:
        extract_from_wheel(_WHEEL_SPEC, 'mediapipe-*.whl', _WHEEL_MEMBER, target)
    except WheelFetchError as exc:
        raise LandmarkerUnavailable(f'{exc}\nAlternatively put {MODEL_NAME} somewhere and set '
                                    f'{MODEL_ENV}=/path/to/{MODEL_NAME}') from exc
    if not quiet:
        print(f'Saved {target} ({target.stat().st_size} bytes)', file=sys.stderr)
    return target


def _load_interpreter(path: Path, num_threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise LandmarkerUnavailable(f'face landmarks need the LiteRT interpreter ({exc}); install it with: '
                                    f'{INSTALL_HINT}') from exc
    if not path.is_file():
        raise LandmarkerUnavailable(f'face landmark model not found at {path}; fetch it once with: '
                                    f'{FETCH_COMMAND} (or set {MODEL_ENV})')
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise LandmarkerUnavailable(f'could not load face landmark model {path}: {exc}; re-fetch it with: '
                                    f'{FETCH_COMMAND} --force') from exc
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    shapes = sorted(int(np.prod(o['shape'])) for o in outputs)
    if len(inputs) != 1 or tuple(inputs[0]['shape']) != (1, INPUT_SIZE, INPUT_SIZE, 3) or shapes != [
            1, NUM_LANDMARKS * 3]:
        raise LandmarkerUnavailable(f'{path} is not the Face Mesh model ({MODEL_NAME}: one 192x192 RGB input, '
                                    f'468x3 landmarks and a face score out); re-fetch it with: '
                                    f'{FETCH_COMMAND} --force')
    return interpreter


@dataclass(frozen=True)
class Region:
    """A rotated square in image pixels: centre, side, and the angle of its x axis (radians, image axes)."""
    cx: float
    cy: float
    side: float
    angle: float

    def to_image(self) -> np.ndarray:
        """2x3 affine from model-input pixels (0..191) to image pixels (pixel centres at integers)."""
        k = self.side / INPUT_SIZE
        c, s = math.cos(self.angle), math.sin(self.angle)
        rot = np.array([[c, -s], [s, c]])
        a = k * rot
        t = np.array([self.cx - 0.5, self.cy - 0.5]) + rot @ np.full(2, 0.5 * k - self.side / 2)
        return np.concatenate([a, t[:, None]], axis=1)


def _region(points: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray) -> Region:
    """The square around ``points``' bounding box (x ROI_SCALE), turned so the eye line is its x axis."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    dx, dy = left_eye - right_eye
    return Region((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * ROI_SCALE, math.atan2(dy, dx))


class FaceLandmarker:
    """Face Mesh landmarks of the most confident face in an image, or None when there is no face.

    ``refine``: passes that re-centre the region on the previous pass's landmarks (0 = detector box only).
    ``min_presence``: the mesh model's own face score (sigmoid) below which the face counts as not found.
    """

    def __init__(self, model: str | os.PathLike | None = None, detector: FaceDetector | None = None,
                 refine: int = 1, min_presence: float = 0.5, num_threads: int = 1):
        if refine < 0:
            raise ValueError(f'refine must be >= 0, got {refine}')
        if not 0.0 <= min_presence <= 1.0:
            raise ValueError(f'min_presence must be in [0, 1], got {min_presence}')
        try:
            import cv2  # comes with the face extra (opencv-contrib-python, which mediapipe needs too)
        except ImportError as exc:
            raise LandmarkerUnavailable(f'face landmarks need OpenCV ({exc}); install it with: {INSTALL_HINT}') from exc
        self._cv2 = cv2
        self._interpreter = _load_interpreter(Path(model) if model is not None else model_path(), num_threads)
        self._input = self._interpreter.get_input_details()[0]['index']
        outputs = self._interpreter.get_output_details()
        self._mesh = next(o['index'] for o in outputs if int(np.prod(o['shape'])) == NUM_LANDMARKS * 3)
        self._score = next(o['index'] for o in outputs if int(np.prod(o['shape'])) == 1)
        self._own_detector = detector is None
        try:
            self.detector = detector or FaceDetector()
        except FaceDetectorUnavailable as exc:
            raise LandmarkerUnavailable(str(exc)) from exc
        self.refine = refine
        self.min_presence = min_presence

    def _run(self, rgb: np.ndarray, region: Region) -> tuple[np.ndarray, float]:
        cv2 = self._cv2
        to_image = region.to_image()
        patch = cv2.warpAffine(rgb, to_image, (INPUT_SIZE, INPUT_SIZE),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        self._interpreter.set_tensor(self._input, (patch.astype(np.float32) / 255.0)[None])
        self._interpreter.invoke()
        mesh = self._interpreter.get_tensor(self._mesh).reshape(NUM_LANDMARKS, 3)[:, :2].astype(np.float64)
        logit = float(self._interpreter.get_tensor(self._score).reshape(()))
        # model outputs are continuous coordinates in the 192 px input; -0.5 turns them into pixel indices
        points = (mesh - 0.5) @ to_image[:, :2].T + to_image[:, 2]
        return points, 0.5 * (1.0 + math.tanh(logit / 2))  # the sigmoid, without overflow

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """(468, 2) landmark pixel coordinates (x, y) in an HxWx3 uint8 RGB image, or None without a face."""
        arr = np.asarray(rgb)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f'expected an HxWx3 uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}')
        faces = self.detector.detect(arr)
        if not faces or len(faces[0].keypoints) < 2:
            return None
        face = faces[0]
        box = np.array([[face.x0, face.y0], [face.x1, face.y1]])
        region = _region(box, np.array(face.keypoints[0]), np.array(face.keypoints[1]))
        points, presence = self._run(arr, region)
        for _ in range(self.refine):
            if presence < self.min_presence:
                break
            points, presence = self._run(arr, _region(points, points[RIGHT_EYE_OUTER], points[LEFT_EYE_OUTER]))
        return points if presence >= self.min_presence else None

    __call__ = detect

    def close(self) -> None:
        if self._own_detector and getattr(self, 'detector', None) is not None:
            self.detector.close()
        self.detector = None

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def inter_ocular(points: np.ndarray) -> float:
    """Distance between the outer eye corners: the face size that makes openings comparable across faces."""
    return float(np.linalg.norm(points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]))


def _mean_gap(points: np.ndarray, pairs: tuple[tuple[int, int], ...]) -> float:
    upper = points[[a for a, _ in pairs]]
    lower = points[[b for _, b in pairs]]
    return float(np.linalg.norm(upper - lower, axis=1).mean())


def mouth_opening(points: np.ndarray) -> float:
    """Mean gap between the inner lips over the central five pairs, in inter-ocular distances."""
    return _mean_gap(points, INNER_LIP_PAIRS) / inter_ocular(points)


def eye_opening(points: np.ndarray) -> float:
    """Mean lid gap of both eyes (three pairs each), in inter-ocular distances."""
    gap = (_mean_gap(points, RIGHT_EYE_LID_PAIRS) + _mean_gap(points, LEFT_EYE_LID_PAIRS)) / 2
    return gap / inter_ocular(points)


def shape_change(points: np.ndarray, reference: np.ndarray) -> float:
    """How far :data:`SHAPE_POINTS` moved from the reference frame's layout beyond a similarity (head turn in the
    image plane, scale, shift): RMS residual after the least-squares similarity, in the reference's inter-ocular
    distances."""
    return similarity_residual(points[list(SHAPE_POINTS)], reference[list(SHAPE_POINTS)]) / inter_ocular(reference)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m fomm_model.evaluation.landmarks', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--fetch', action='store_true', help='download the landmark model if missing')
    parser.add_argument('--force', action='store_true', help='with --fetch: download even if present')
    args = parser.parse_args(argv)
    if not args.fetch:
        print(model_path())
        return 0
    try:
        print(fetch_model(force=args.force))
    except LandmarkerUnavailable as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(_main())
