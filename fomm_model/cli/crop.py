"""Find face tubes in a video and print ffmpeg commands that crop them (the original crop-video.py).

Faces are detected in every frame (mediapipe BlazeFace instead of the original S3FD; boxes are somewhat
tighter, raise --increase for looser framing). A tube starts at a face and keeps every later box whose IoU
with the tube's FIRST box exceeds --iou_with_initial; its crop is the union of its boxes, enlarged by
--increase and made square. With --output the crops are also written as videos (no ffmpeg needed).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import CliError
from ..face_detection import FACE_FRAMING, FaceBox, FaceDetector, FaceDetectorUnavailable, square_box
from ..output_paths import check_not_input, check_output_dir
from ..video_io import iter_video, resize_image, video_fps, write_video

MAX_DETECT_SIDE = 640  # faces are found on frames downscaled to this, as the original does


@dataclass
class Tube:
    first: tuple[float, float, float, float]  # (left, top, right, bottom) of the first box
    union: tuple[float, float, float, float]
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--input', required=True, help='video to search for faces')
    parser.add_argument('--output', default=None, help='also write the cropped clips into this folder')
    parser.add_argument('--min_frames', type=int, default=150, help='keep tubes longer than this many frames')
    parser.add_argument('--image_shape', type=_shape, default=(256, 256), help='output size: 256 or 256,256')
    parser.add_argument('--increase', type=float, default=0.1, help='enlarge the box by this fraction per side')
    parser.add_argument('--iou_with_initial', type=float, default=0.25,
                        help="minimum IoU of a box with its tube's first box")
    parser.add_argument('--min_confidence', type=float, default=0.5, help='face detector score threshold')
    parser.add_argument('--training_framing', action='store_true',
                        help='instead of --increase, frame like the bundled model\'s training clips and the live app: '
                             f'a square of {FACE_FRAMING.scale} face widths, centre {-FACE_FRAMING.shift_down} face '
                             'heights above the face box\'s (face_detection.FACE_FRAMING)')


def _shape(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.replace('x', ',').split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a size like 256 or 256,256, got {text!r}') from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f'expected a size like 256 or 256,256, got {text!r}')
    return parts[0], parts[1]


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def crop_box(tube_box: tuple[float, ...], frame_shape: tuple[int, ...], increase: float) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a tube's crop: each side grows by ``increase``, the shorter side more so the box is
    square, then it is clipped to the frame (so it can end up non-square at the border, as in the original)."""
    left, top, right, bottom = tube_box
    width, height = right - left, bottom - top
    grow_w = max(increase, ((1 + 2 * increase) * height - width) / (2 * width))
    grow_h = max(increase, ((1 + 2 * increase) * width - height) / (2 * height))
    left, right = int(left - grow_w * width), int(right + grow_w * width)
    top, bottom = int(top - grow_h * height), int(bottom + grow_h * height)
    left, top = max(0, left), max(0, top)
    right, bottom = min(right, frame_shape[1]), min(bottom, frame_shape[0])
    return left, top, right - left, bottom - top


def find_tubes(frames, detector: FaceDetector, iou_with_initial: float) -> tuple[list[Tube], tuple[int, ...]]:
    """Link per-frame face boxes into tubes; returns all tubes (finished and open) and the frame shape."""
    open_tubes: list[Tube] = []
    done: list[Tube] = []
    shape: tuple[int, ...] = ()
    for i, frame in enumerate(frames):
        shape = frame.shape
        factor = max(shape[0], shape[1]) / MAX_DETECT_SIDE
        small = resize_image(frame, (round(shape[0] / factor), round(shape[1] / factor))) if factor > 1 else frame
        boxes = [(f.x0, f.y0, f.x1, f.y1) for f in detector.detect(small)]
        if factor > 1:
            boxes = [tuple(v * factor for v in b) for b in boxes]
        # a tube ends when no box in this frame overlaps its first box enough
        still = []
        for tube in open_tubes:
            (still if any(iou(tube.first, b) > iou_with_initial for b in boxes) else done).append(tube)
        open_tubes = still
        for box in boxes:
            best, best_iou = None, 0.0
            for tube in open_tubes:
                v = iou(tube.first, box)
                if v > iou_with_initial and v > best_iou:
                    best, best_iou = tube, v
            if best is None:
                open_tubes.append(Tube(box, box, i, i))
            else:
                best.end = i
                u = best.union
                best.union = (min(u[0], box[0]), min(u[1], box[1]), max(u[2], box[2]), max(u[3], box[3]))
    return sorted(done + open_tubes, key=lambda t: t.start), shape


def ffmpeg_command(video: str, tube: Tube, fps: float, box: tuple[int, int, int, int],
                   image_shape: tuple[int, int], output: str = 'crop.mp4') -> str:
    x, y, w, h = box
    start, duration = tube.start / fps, tube.length / fps
    return (f'ffmpeg -i {shlex.quote(str(video))} -ss {start:g} -t {duration:g} '
            f'-filter:v "crop={w}:{h}:{x}:{y}, scale={image_shape[0]}:{image_shape[1]}" {shlex.quote(output)}')


def run(args: argparse.Namespace) -> int:
    if args.increase < 0:
        raise CliError('--increase must be >= 0')
    if not 0 <= args.iou_with_initial < 1:
        raise CliError('--iou_with_initial must be in [0, 1)')
    video = Path(args.input)
    fps = video_fps(video)
    out_dir = check_output_dir(args.output, what='--output') if args.output else None  # before the slow part
    try:
        detector = FaceDetector(min_confidence=args.min_confidence)
    except FaceDetectorUnavailable as exc:
        raise CliError(str(exc)) from exc
    with detector:
        tubes, shape = find_tubes(tqdm(iter_video(video), desc='detecting faces', unit='frame', file=sys.stderr),
                                  detector, args.iou_with_initial)
    kept = [t for t in tubes if t.length > args.min_frames]
    if not kept:
        longest = max((t.length for t in tubes), default=0)
        print(f'no face tube longer than {args.min_frames} frames in {video} (longest: {longest}); '
              f'lower --min_frames', file=sys.stderr)
        return 0
    for k, tube in enumerate(kept):
        if args.training_framing:
            x, y, side = square_box(FaceBox(*tube.union, score=1.0), shape)
            box = (x, y, side, side)
        else:
            box = crop_box(tube.union, shape, args.increase)
        name = f'{video.stem}_crop{k}.mp4' if out_dir else 'crop.mp4'
        print(ffmpeg_command(str(video), tube, fps, box, args.image_shape, name))
        if out_dir is not None:
            check_not_input(out_dir / name, {'--input': video}, '--output')
            x, y, w, h = box
            # image_shape is given as ffmpeg's scale=W:H
            size = (args.image_shape[1], args.image_shape[0])
            clip = (resize_image(f[y:y + h, x:x + w], size)
                    for i, f in enumerate(iter_video(video, tube.end)) if i >= tube.start)
            n = write_video(out_dir / name, clip, fps)
            print(f'wrote {out_dir / name}: {n} frames, {size[1]}x{size[0]}', file=sys.stderr)
    return 0
