"""Reconstruction benchmark: rebuild every test video from its first frame and report the L1 error.

As the original reconstruction.py: source = frame 0, driving = each frame, absolute keypoints
(generator(source, kp_source, kp_driving), no normalisation), L1 = mean |prediction - frame| in [0, 1].
Also reports the static baseline (every frame predicted as frame 0) and the relative improvement over it,
which tells whether a model learned motion at all.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import CliError
from .runtime_args import add_runtime_arguments, animator_for
from ..animation import Animator
from ..inference.convert import tensor_to_image
from ..checkpoint import load_checkpoint
from ..config import frame_size, load_config
from ..defaults import resolve_model
from ..output_paths import atomic_write_text, check_not_input, check_output_dir, check_output_file
from ..video_io import is_video_path, iter_video, resize_image, video_fps, write_video


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--config', default=None,
                        help='config name or YAML path (default: the one the checkpoint was made with, found from '
                             'its parameter shapes)')
    parser.add_argument('--checkpoint', default=None,
                        help='checkpoint .pth.tar or the name of an installed model (fomm models list; default: the '
                             'bundled model)')
    parser.add_argument('--data', required=True, help='folder of videos (its test/ subfolder is used if present)')
    parser.add_argument('--out', default=None, help='write side-by-side videos (driving | prediction) here')
    parser.add_argument('--json', default=None, help='write the scores here (default: OUT/reconstruction.json '
                                                     'with --out, else only printed)')
    parser.add_argument('--max_videos', type=int, default=None, help='evaluate at most N videos (sorted by name)')
    parser.add_argument('--max_frames', type=int, default=None, help='use at most N frames per video')
    add_runtime_arguments(parser, backend='torch')


def find_videos(data: str | Path) -> list[Path]:
    """Videos (files or frame folders) in ``data/test`` if it exists, else in ``data``; sorted by name."""
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f'data folder not found: {root}')
    if (root / 'test').is_dir():
        root = root / 'test'
    videos = sorted(p for p in root.iterdir() if not p.name.startswith('.') and is_video_path(p))
    if not videos:
        raise CliError(f'no videos in {root} (expected .mp4/.mov/.avi/.gif files or folders of frames)')
    return videos


def reconstruct_video(animator: Animator, frames: list[np.ndarray]) -> tuple[list[float], list[float], list]:
    """Per-frame L1 of the reconstruction and of the static baseline, and the predicted frames (uint8)."""
    animator.set_source(frames[0])
    source = animator.to_tensor(frames[0]).float()
    l1, static, predictions = [], [], []
    for frame in frames:
        with torch.inference_mode():
            driving = animator.to_tensor(frame)
            prediction = animator.predict(animator.keypoints(driving)).float()
            target = driving.float()
            l1.append(float((prediction - target).abs().mean()))
            static.append(float((source - target).abs().mean()))
        predictions.append(tensor_to_image(prediction))
    return l1, static, predictions


def plan_outputs(videos: list[Path], out_dir: Path | None, json_arg: str | None,
                 inputs: dict[str, Path | str]) -> tuple[list[Path | None], Path | None]:
    """The side-by-side video of each input and the JSON path, checked before any work.

    Refused: an output that is an input (e.g. ``--out`` pointing at the data folder), two videos that would be
    written to one file (``a.mp4`` and ``a.mov``), and outputs that cannot be written.
    """
    inputs = {**inputs, **{f'input video {v}': v for v in videos}}
    planned: list[Path | None] = [None] * len(videos)
    if out_dir is not None:
        check_output_dir(out_dir, what='--out')
        seen: dict[Path, Path] = {}
        for i, video in enumerate(videos):
            path = out_dir / (Path(video.name).stem + '.mp4')
            if path in seen:
                raise CliError(f'--out: {seen[path].name} and {video.name} would both be written to {path}; '
                               f'rename one of them')
            if path.is_dir():
                raise CliError(f'--out: {path} is a folder, so the result for {video.name} cannot be written there')
            check_not_input(path, inputs, '--out')
            seen[path] = video
            planned[i] = path
    json_path = Path(json_arg) if json_arg else (out_dir / 'reconstruction.json' if out_dir else None)
    if json_path is not None:
        outputs = {f'the result video for {v.name}': p for v, p in zip(videos, planned)}
        check_output_file(json_path, what='--json', inputs={**inputs, **outputs})
    return planned, json_path


def _improvement(l1: float, static: float) -> float | None:
    return None if static == 0 else 1.0 - l1 / static


def run(args: argparse.Namespace) -> int:
    if args.max_videos is not None and args.max_videos < 1:
        raise CliError('--max_videos must be >= 1')
    config_name, checkpoint = resolve_model(args.config, args.checkpoint)
    config = load_config(config_name)
    size = frame_size(config)
    videos = find_videos(args.data)[:args.max_videos]
    out_dir = Path(args.out) if args.out else None
    planned, json_path = plan_outputs(videos, out_dir, args.json,
                                      {'--checkpoint': checkpoint, '--config': config.source})
    models = load_checkpoint(config, checkpoint, device='cpu', with_discriminator=False)
    animator = animator_for(models, args, relative=False, adapt_scale=False)
    results, all_l1, all_static = [], [], []
    for video, out_path in zip(tqdm(videos, desc='videos', unit='video'), planned):
        frames = [resize_image(f, size) for f in iter_video(video, args.max_frames)]
        l1, static, predictions = reconstruct_video(animator, frames)
        all_l1 += l1
        all_static += static
        entry = {'video': video.name, 'frames': len(frames), 'l1': float(np.mean(l1)),
                 'l1_static': float(np.mean(static))}
        entry['improvement'] = _improvement(entry['l1'], entry['l1_static'])
        results.append(entry)
        if out_path is not None:
            side_by_side = (np.concatenate([d, p], axis=1) for d, p in zip(frames, predictions))
            write_video(out_path, side_by_side, video_fps(video))
    summary = {
        'config': str(getattr(config, 'source', config_name)), 'checkpoint': str(checkpoint),
        'data': str(args.data), 'frame_size': list(size), 'num_videos': len(results), 'num_frames': len(all_l1),
        # over all frames, as the original reconstruction.py prints it
        'l1': float(np.mean(all_l1)), 'l1_static': float(np.mean(all_static)),
        'l1_video_mean': float(np.mean([r['l1'] for r in results])),
        'l1_static_video_mean': float(np.mean([r['l1_static'] for r in results])),
    }
    summary['improvement'] = _improvement(summary['l1'], summary['l1_static'])
    summary['videos'] = results
    if not all(math.isfinite(r['l1']) for r in results):
        print('warning: some L1 values are not finite (NaN/inf): the checkpoint may be broken', file=sys.stderr)
    if json_path is not None:
        atomic_write_text(json.dumps(summary, indent=2) + '\n', json_path)
    width = max(len(r['video']) for r in results)
    for r in results:
        print(f"{r['video']:<{width}}  L1 {r['l1']:.4f}  static {r['l1_static']:.4f}")
    imp = summary['improvement']
    print(f"mean over {summary['num_frames']} frames of {summary['num_videos']} videos: L1 {summary['l1']:.4f}, "
          f"static baseline {summary['l1_static']:.4f}, improvement "
          f"{'n/a' if imp is None else f'{100 * imp:.1f}%'}" + (f' -> {json_path}' if json_path else ''))
    return 0
