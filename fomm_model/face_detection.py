"""Face detection for cropping (``fomm crop``, the live app's cropper) with mediapipe's Tasks ``FaceDetector``.

The model file (``face_detection_short_range.tflite``, Apache-2.0, BlazeFace) is not part of this repository and
recent mediapipe wheels ship no model files, so :func:`fetch_model` extracts it once from the mediapipe==0.10.21
wheel on PyPI into the user cache; afterwards everything works offline.

    python -m fomm_model.face_detection --fetch
"""
from __future__ import annotations

import argparse
import os
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODEL_NAME = 'face_detection_short_range.tflite'
MODEL_ENV = 'FOMM_FACE_DETECTOR_MODEL'
_WHEEL_SPEC = 'mediapipe==0.10.21'
_WHEEL_MEMBER = 'mediapipe/modules/face_detection/' + MODEL_NAME
FETCH_COMMAND = f'{Path(sys.executable).name} -m fomm_model.face_detection --fetch'
INSTALL_HINT = 'pip install "fomm-live[face]"'


class FaceDetectorUnavailable(RuntimeError):
    """mediapipe or the detector model is missing; the message says how to fix it."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixel coordinates of the analysed image (x1, y1 exclusive)."""
    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    # mediapipe's 6 keypoints (right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion), pixels
    keypoints: tuple[tuple[float, float], ...] = field(default=())

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def scaled(self, factor: float) -> FaceBox:
        """The same box in an image ``factor`` times larger (used after detecting on a downscaled frame)."""
        return FaceBox(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score,
                       tuple((x * factor, y * factor) for x, y in self.keypoints))


def model_path() -> Path:
    """Where the detector model is expected: ``$FOMM_FACE_DETECTOR_MODEL`` or the user cache."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache').expanduser()
    return cache / 'fomm-live' / MODEL_NAME


def fetch_model(force: bool = False, quiet: bool = False) -> Path:
    """Make sure the model file exists, extracting it from the mediapipe 0.10.21 wheel (PyPI) if needed.

    Needs network access once; the file is written atomically so an interrupted fetch leaves nothing broken.
    """
    target = model_path()
    if target.is_file() and target.stat().st_size > 0 and not force:
        return target
    if not quiet:
        print(f'Fetching the face detector model ({MODEL_NAME}) from the {_WHEEL_SPEC} wheel on PyPI ...',
              file=sys.stderr)
    from .wheel_files import WheelFetchError, extract_from_wheel
    try:
        extract_from_wheel(_WHEEL_SPEC, 'mediapipe-*.whl', _WHEEL_MEMBER, target)
    except WheelFetchError as exc:
        raise FaceDetectorUnavailable(f'{exc}\nAlternatively put {MODEL_NAME} somewhere and set '
                                      f'{MODEL_ENV}=/path/to/{MODEL_NAME}') from exc
    if not quiet:
        print(f'Saved {target} ({target.stat().st_size} bytes)', file=sys.stderr)
    return target


class FaceDetector:
    """BlazeFace short-range detector (faces within ~2 m, i.e. webcam and talking-head framing).

    Detection runs in mediapipe's IMAGE mode so frames need no timestamps and can come from any source.
    """

    def __init__(self, min_confidence: float = 0.5, model: str | os.PathLike | None = None):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f'min_confidence must be in [0, 1], got {min_confidence}')
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as exc:
            raise FaceDetectorUnavailable(f'face detection needs mediapipe ({exc}); install it with: '
                                          f'{INSTALL_HINT}') from exc
        path = Path(model) if model is not None else model_path()
        if not path.is_file():
            raise FaceDetectorUnavailable(f'face detector model not found at {path}; fetch it once with: '
                                          f'{FETCH_COMMAND} (or set {MODEL_ENV})')
        self._mp = mp
        options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                             running_mode=vision.RunningMode.IMAGE,
                                             min_detection_confidence=float(min_confidence))
        try:
            self._detector = vision.FaceDetector.create_from_options(options)
        except Exception as exc:  # mediapipe raises RuntimeError/ValueError for a bad model file
            raise FaceDetectorUnavailable(f'could not load face detector model {path}: {exc}; re-fetch it with: '
                                          f'{FETCH_COMMAND.replace("--fetch", "--fetch --force")}') from exc
        # closed at the latest at interpreter exit, while mediapipe's globals still exist: its own __del__ at
        # teardown prints "Exception ignored ... 'NoneType' object is not callable"
        self._finalizer = weakref.finalize(self, self._detector.close)

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """Faces in an HxWx3 uint8 RGB image, best score first."""
        if self._detector is None:
            raise RuntimeError('FaceDetector is closed')
        arr = np.asarray(rgb)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f'expected an HxWx3 RGB image, got shape {arr.shape}')
        if arr.dtype != np.uint8:
            raise ValueError(f'expected a uint8 image, got {arr.dtype}')
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(arr))
        result = self._detector.detect(image)
        h, w = arr.shape[:2]
        faces = []
        for det in result.detections:
            bb = det.bounding_box
            score = float(det.categories[0].score) if det.categories else 0.0
            kps = tuple((float(k.x) * w, float(k.y) * h) for k in (det.keypoints or ()))
            faces.append(FaceBox(float(bb.origin_x), float(bb.origin_y), float(bb.origin_x + bb.width),
                                 float(bb.origin_y + bb.height), score, kps))
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces

    def close(self) -> None:
        if getattr(self, '_detector', None) is not None:
            self._finalizer()  # runs the close once, however often it is called
            self._detector = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


@dataclass(frozen=True)
class Framing:
    """Where a square face crop sits around a detected face: its side is ``scale`` face widths and its centre lies
    ``shift_down`` face heights below the face box's centre (negative: above)."""
    scale: float
    shift_down: float

    def square(self, face: FaceBox) -> tuple[float, float, float]:
        """(centre x, centre y, side) of the crop, in the face's pixel coordinates."""
        return ((face.x0 + face.x1) / 2.0, (face.y0 + face.y1) / 2.0 + self.shift_down * face.height,
                max(face.width, 1.0) * self.scale)

    @classmethod
    def of_crop(cls, face: FaceBox, x0: float, y0: float, side: float) -> Framing:
        """The framing that gives the square ``(x0, y0, side)`` around ``face``."""
        return cls(side / max(face.width, 1.0),
                   (y0 + side / 2.0 - (face.y0 + face.y1) / 2.0) / max(face.height, 1.0))


# How the bundled model's training clips frame their faces, and so how the app must frame the avatar and the
# driver. ``python -m fomm_model.face_detection --measure-framing ../shared/data/faces/train``: median over the 61
# identities of each one's median, 1.85 face widths, centre 0.14 face heights above the face box's (10-90% of
# identities 1.65-2.38 and 0.30-0.02 above); the 7 held-out clips 1.90 and 0.19 above. The 2.0 / 0.1 below used
# until 2026-12-03 put faces about 0.25 face heights higher in the crop than the model had seen them, which cut
# how closely an avatar's mouth followed the driver in the app by 40% (model card, "Framing").
FACE_FRAMING = Framing(scale=1.9, shift_down=-0.15)

# Avatars are stills, often paintings, on which the detector is less sure of a face than on camera frames: the
# app's avatar loader and `fomm evaluate` accept one from this confidence (the driver's cropper keeps 0.5).
AVATAR_MIN_CONFIDENCE = 0.3

# Larger avatars are shrunk to this longer side before their face is looked for: the app keeps the whole image this
# large for paste-back (a 1080p output needs no more), and `fomm evaluate` must crop where the app crops.
AVATAR_MAX_SIDE = 1920


def limit_avatar_side(image: np.ndarray, max_side: int = AVATAR_MAX_SIDE) -> np.ndarray:
    """``image`` shrunk by area averaging until its longer side is at most ``max_side``; smaller ones unchanged."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    import cv2
    factor = max_side / max(h, w)
    return cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)


def square_box(face: FaceBox, frame_shape: tuple[int, ...],
               framing: Framing = FACE_FRAMING) -> tuple[int, int, int]:
    """Square crop ``(x0, y0, side)`` around a face, framed like the training clips (:data:`FACE_FRAMING`).

    The square is shifted (not shrunk) to stay inside the frame; only if it is larger than the frame is it
    reduced to the frame's shorter side.
    """
    h, w = int(frame_shape[0]), int(frame_shape[1])
    if framing.scale <= 0:
        raise ValueError(f'framing scale must be > 0, got {framing.scale}')
    cx, cy, side = framing.square(face)
    side = max(1, min(int(round(side)), h, w))
    x0 = int(round(cx - side / 2.0))
    y0 = int(round(cy - side / 2.0))
    x0 = min(max(x0, 0), w - side)
    y0 = min(max(y0, 0), h - side)
    return x0, y0, side


def face_square(detector: FaceDetector, rgb: np.ndarray, max_side: int = 640) -> tuple[int, int, int] | None:
    """:func:`square_box` around the best face of a still image (detected on a copy of at most ``max_side``
    pixels), or None when there is none: how the app crops an avatar."""
    import cv2
    h, w = rgb.shape[:2]
    factor = max(h, w) / max_side if max(h, w) > max_side else 1.0
    small = cv2.resize(rgb, (round(w / factor), round(h / factor)), interpolation=cv2.INTER_AREA) \
        if factor != 1.0 else rgb
    faces = detector.detect(small)
    return square_box(faces[0].scaled(factor), rgb.shape) if faces else None


def clip_framing(detector: FaceDetector, frame: np.ndarray) -> Framing | None:
    """The framing of a square face-cropped clip's frame (None if not square or no face): the whole frame as a
    square around its face. The frame is padded by half its size (edge pixels repeated) first, since a training
    crop often cuts the chin or the hair and the detector needs to see the face whole."""
    import cv2
    h, w = frame.shape[:2]
    if h != w:
        return None
    pad = w // 2
    faces = detector.detect(cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
    return Framing.of_crop(faces[0], pad, pad, w) if faces else None


def measure_framing(detector: FaceDetector, clips: list[Path], frames: tuple[int, ...] = (0, 20)) -> dict:
    """Median framing of face-cropped clips: per identity (the file-name part before ``#``) the median of its
    clips' frames, then the median and the 10th / 90th percentiles over identities, so that one much-filmed
    person does not decide it."""
    from .video_io import iter_video
    per_identity: dict[str, list[tuple[float, float]]] = {}
    for clip in clips:
        wanted = set(frames)
        for index, frame in enumerate(iter_video(clip, max_frames=max(frames) + 1)):
            if index in wanted and (f := clip_framing(detector, frame)) is not None:
                per_identity.setdefault(clip.name.split('#')[0], []).append((f.scale, f.shift_down))
    medians = np.array([np.median(v, axis=0) for v in per_identity.values()]).reshape(-1, 2)
    if not len(medians):
        return {'identities': 0}
    low, mid, high = np.percentile(medians, [10, 50, 90], axis=0)
    return {'identities': len(medians), 'scale': float(mid[0]), 'shift_down': float(mid[1]),
            'scale_10_90': (float(low[0]), float(high[0])), 'shift_down_10_90': (float(low[1]), float(high[1]))}


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m fomm_model.face_detection', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--fetch', action='store_true', help='download the detector model if missing')
    parser.add_argument('--force', action='store_true', help='with --fetch: download even if present')
    parser.add_argument('--path', action='store_true', help='print where the model is expected')
    parser.add_argument('--measure-framing', metavar='DIR',
                        help='measure how the face-cropped clips (*.mp4) in DIR frame their faces (FACE_FRAMING)')
    args = parser.parse_args(argv)
    if args.measure_framing:
        return _print_framing(Path(args.measure_framing))
    if args.path or not args.fetch:
        print(model_path())
        return 0
    try:
        path = fetch_model(force=args.force)
    except FaceDetectorUnavailable as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(path)
    return 0


def _print_framing(folder: Path) -> int:
    clips = sorted(folder.glob('*.mp4'))
    if not clips:
        print(f'error: no .mp4 clips in {folder}', file=sys.stderr)
        return 1
    try:
        with FaceDetector() as detector:
            found = measure_framing(detector, clips)
    except FaceDetectorUnavailable as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    if not found['identities']:
        print(f'error: no face found in the clips of {folder}', file=sys.stderr)
        return 1
    low, high = found['shift_down_10_90']
    print(f"{len(clips)} clips, {found['identities']} identities (median over identities): side "
          f"{found['scale']:.2f} face widths (10-90%: {found['scale_10_90'][0]:.2f}-{found['scale_10_90'][1]:.2f}), "
          f"centre {found['shift_down']:+.3f} face heights below the face box's centre (negative: above; 10-90%: "
          f"{low:+.3f} to {high:+.3f}); the app frames faces with {FACE_FRAMING}")
    return 0


if __name__ == '__main__':
    sys.exit(_main())
