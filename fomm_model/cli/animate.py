"""Animate a source image with the motion of a driving video (the original demo.py).

Example: fomm animate --source_image me.png --driving_video talk.mp4 --result_video out.mp4 --relative --adapt_scale
Without --checkpoint the bundled model (``fomm_model.defaults``: assets/models/face-128-v6.pth.tar) is used.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import CliError
from .runtime_args import add_mouth_gain_argument, add_runtime_arguments, animator_for, check_mouth_gain_for
from ..checkpoint import load_checkpoint
from ..config import frame_size, load_config
from ..defaults import resolve_model
from ..keypoints import pose_distance
from ..output_paths import check_output_file
from ..video_io import (AUDIO_WRITE_EXTENSIONS, VIDEO_WRITE_EXTENSIONS, has_audio, iter_video, read_image,
                        resize_image, video_fps, write_video)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--config', default=None,
                        help='config name or YAML path (default: the one the checkpoint was made with, found from '
                             'its parameter shapes)')
    parser.add_argument('--checkpoint', default=None,
                        help='checkpoint .pth.tar or the name of an installed model (fomm models list; default: the '
                             'bundled model)')
    parser.add_argument('--source_image', required=True, help='image to animate (PNG/JPEG; alpha over white)')
    parser.add_argument('--driving_video', required=True, help='video (or GIF / folder of frames) to take motion from')
    parser.add_argument('--result_video', default='result.mp4',
                        help=f'output video, {"/".join(e[1:] for e in VIDEO_WRITE_EXTENSIONS)} (default: result.mp4)')
    parser.add_argument('--relative', action='store_true', help='relative keypoint motion (recommended)')
    parser.add_argument('--adapt_scale', action='store_true', help='adapt motion scale to the source face size')
    add_mouth_gain_argument(parser)
    best = parser.add_mutually_exclusive_group()
    best.add_argument('--find_best_frame', action='store_true',
                      help='anchor on the driving frame whose pose is closest to the source')
    best.add_argument('--best_frame', type=int, default=None, help='anchor on this driving frame index')
    parser.add_argument('--audio', action='store_true', help="copy the driving video's sound into the result")
    parser.add_argument('--side_by_side', action='store_true',
                        help='write source | driving | result side by side (for previews and model cards)')
    add_runtime_arguments(parser, backend='auto')


def _read_driving(path: str, size: tuple[int, int]) -> list[np.ndarray]:
    """Driving frames resized to the model size as they are decoded, so long videos fit in memory."""
    frames = [resize_image(f, size) for f in tqdm(iter_video(path), desc='reading', unit='frame', leave=False)]
    if not frames:
        raise CliError(f'{path} has no frames')
    return frames


def _check_result_path(args: argparse.Namespace, checkpoint: Path, config_path: str) -> None:
    """Before any work: a result path we can write, that is none of the inputs (an old result is replaced)."""
    check_output_file(args.result_video, what='--result_video', extensions=VIDEO_WRITE_EXTENSIONS,
                      inputs={'--source_image': args.source_image, '--driving_video': args.driving_video,
                              '--checkpoint': checkpoint, '--config': config_path})
    suffix = Path(args.result_video).suffix.lower()
    if args.audio and suffix not in AUDIO_WRITE_EXTENSIONS:
        raise CliError(f'--audio: a {suffix} video cannot carry sound; write one of '
                       f'{", ".join(AUDIO_WRITE_EXTENSIONS)} or leave out --audio')


def run(args: argparse.Namespace) -> int:
    if args.mouth_gain is not None and not args.relative:
        raise CliError('--mouth_gain scales relative motion: add --relative (absolute keypoints are used as they are)')
    config_name, checkpoint = resolve_model(args.config, args.checkpoint)
    config = load_config(config_name)
    _check_result_path(args, checkpoint, config.source)
    size = frame_size(config)
    source = resize_image(read_image(args.source_image), size)
    fps = video_fps(args.driving_video)
    if args.audio and not has_audio(args.driving_video):
        raise CliError(f'--audio: {args.driving_video} has no audio track; leave out --audio')
    driving = _read_driving(args.driving_video, size)
    if args.best_frame is not None and not 0 <= args.best_frame < len(driving):
        raise CliError(f'--best_frame {args.best_frame} is outside the driving video (0..{len(driving) - 1})')

    models = load_checkpoint(config, checkpoint, device='cpu', with_discriminator=False)
    check_mouth_gain_for(models, args.mouth_gain)
    animator = animator_for(models, args, relative=args.relative, adapt_scale=args.adapt_scale,
                            mouth_gain=args.mouth_gain)
    if args.relative and animator.mouth_keypoints is not None:
        print(f'mouth gain: {animator.mouth_gain:g} ('
              + ('--mouth_gain' if args.mouth_gain is not None else "the model's calibrated gain") + ')',
              file=sys.stderr)
    kp_source = animator.set_source(source)

    # keypoints of every driving frame first (cheap), so the anchor can be any frame
    kps = [animator.keypoints(f) for f in tqdm(driving, desc='keypoints', unit='frame', leave=False)]
    anchor = 0
    if args.find_best_frame:
        anchor = int(np.argmin([pose_distance(kp_source, kp) for kp in kps]))
        print(f'best frame: {anchor}', file=sys.stderr)
    elif args.best_frame is not None:
        anchor = args.best_frame
    # The original animates forward from the anchor and backward to frame 0, both halves anchored on the same
    # frame, then restores the original order; each frame's result depends only on (source, anchor, frame),
    # so animating in order once with that anchor gives the same video.
    animator.set_anchor(kps[anchor])

    start = time.perf_counter()
    frames = (animator.generate(animator.normalize(kp)) for kp in tqdm(kps, desc='animating', unit='frame'))
    if args.side_by_side:
        frames = (np.hstack([source, drv, out]) for drv, out in zip(driving, frames))
    n = write_video(args.result_video, frames, fps, audio_from=args.driving_video if args.audio else None)
    elapsed = time.perf_counter() - start
    print(f'wrote {args.result_video}: {n} frames at {fps:g} fps, {size[1]}x{size[0]} '
          f'({1000 * elapsed / n:.1f} ms/frame, {animator.describe()})', file=sys.stderr)
    return 0
