"""Choose a model's mouth gain on training clips: the gain under which most closed-mouthed avatars follow.

Why: the default gain (``animate_params.normalization_params.mouth_gain``, :mod:`fomm_model.mouth_gain`) must not be
tuned on the held-out clips and portraits it is judged on. Here the avatars are training people at their most
closed mouth (a portrait's mouth is usually closed), as filmed and restyled by the training's painting look (most
portraits are paintings); each is driven by the other chosen clips from the driver's most closed mouth, as the app's
calibration asks, and scored as ``fomm evaluate`` scores a pair. The gain with the most pairs passing the per-pair
mouth check wins (the smaller gain on a tie). Model card, "Mouth gain".

    python -m fomm_model.evaluation.mouth_gain_calibration --data ../shared/data/faces/train \\
        --gains 1,1.5,2,2.5 --json runs/eval/mouth-gain-calibration.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..animation import Animator
from ..mouth_gain import check_mouth_gain
from .metrics import median
from .transfer import animate_clip, closed_mouth_or_first, measure_clip, score_pair

AVATAR_LOOKS = ('photo', 'painted')


def choose_clips(videos: Sequence[Path], people: int, seed: int = 0) -> list[Path]:
    """One clip (its first by name) of each of ``people`` identities drawn with ``random.Random(seed)``; the
    identity is the file name before '#', as in the shared face data."""
    by_person: dict[str, list[Path]] = {}
    for video in videos:
        by_person.setdefault(video.name.split('#')[0], []).append(video)
    if len(by_person) < 2:
        raise ValueError(f'calibration needs clips of at least two people; found {len(by_person)}')
    chosen = random.Random(seed).sample(sorted(by_person), min(people, len(by_person)))
    return [sorted(by_person[p])[0] for p in chosen]


def closed_mouth_avatars(clips: dict[str, tuple[list[np.ndarray], object]],
                         closed: dict[str, int]) -> dict[tuple[str, str], np.ndarray]:
    """(clip, look) -> the clip's frame ``closed[clip]``, as filmed and painted (a style drawn from
    ``default_rng(i)`` for the i-th clip by name, so runs agree)."""
    from ..training.painting_style import draw_style
    avatars = {}
    for i, (name, (frames, _)) in enumerate(sorted(clips.items())):
        frame = frames[closed[name]]
        avatars[name, 'photo'] = frame
        avatars[name, 'painted'] = draw_style(np.random.default_rng(i), frame.shape[:2])(frame)
    return avatars


def calibrate(animator: Animator, clips: dict[str, tuple[list[np.ndarray], object]], gains: Sequence[float],
              landmarker) -> dict:
    """Per gain and look: the pairs passing the mouth check, and the medians; ``chosen``: the winning gain."""
    # each clip's most closed mouth: where it starts as a driver (the anchor) and how it poses as an avatar
    anchors = {name: closed_mouth_or_first(real) for name, (_, real) in clips.items()}
    avatars = closed_mouth_avatars(clips, anchors)
    driving = {name: [animator.keypoints(frame) for frame in frames] for name, (frames, _) in clips.items()}  # once
    runs = len(gains) * len(AVATAR_LOOKS) * len(clips) * (len(clips) - 1)
    results: dict = {}
    with tqdm(total=runs, desc='calibrating', unit='pair') as progress:
        for gain in gains:
            animator.mouth_gain = gain
            for look in AVATAR_LOOKS:
                scores = []
                for video, (frames, real) in clips.items():
                    for person in clips:
                        if person == video:
                            continue
                        progress.set_postfix_str(f'gain {gain:g}, {look}')
                        output = measure_clip(landmarker, animate_clip(animator, avatars[person, look], frames,
                                                                       anchors[video], driving[video]))
                        scores.append(score_pair(real, output, person, video).signals['mouth'])
                        progress.update()
                moving = [s for s in scores if s.exercised]
                results.setdefault(f'{gain:g}', {})[look] = {
                    'pairs': len(moving), 'passed': sum(bool(s.passed) for s in moving),
                    'r_median': median(s.r for s in moving), 'ratio_median': median(s.ratio for s in moving)}
    passed = {g: sum(v['passed'] for v in looks.values()) for g, looks in results.items()}
    chosen = max(passed, key=lambda g: (passed[g], -float(g)))
    return {'gains': results, 'passed': passed, 'chosen': float(chosen), 'anchors': anchors}


def _fmt(value: float | None) -> str:
    return 'n/a' if value is None else f'{value:.2f}'


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m fomm_model.evaluation.mouth_gain_calibration',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=None, help='config name or YAML (default: the bundled model\'s)')
    parser.add_argument('--checkpoint', default=None, help='checkpoint (default: the bundled model)')
    parser.add_argument('--data', default='../shared/data/faces/train', help='training clips (name: PERSON#...)')
    parser.add_argument('--people', type=int, default=8, help='how many identities (one clip each; default 8)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the identities drawn (default 0)')
    parser.add_argument('--max_frames', type=int, default=100, help='frames per clip (default 100)')
    parser.add_argument('--gains', default='1,1.5,2,2.5,3', help='comma-separated gains to try')
    parser.add_argument('--json', default=None, help='write the results here')
    args = parser.parse_args(argv)
    from ..checkpoint import load_checkpoint
    from ..cli.evaluate import _landmarker
    from ..cli.reconstruct import find_videos
    from ..config import frame_size, load_config
    from ..defaults import resolve_model
    from ..video_io import iter_video, resize_image
    try:
        gains = [check_mouth_gain(float(g)) for g in args.gains.split(',')]
        videos = choose_clips(find_videos(args.data), args.people, args.seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    config_name, checkpoint = resolve_model(args.config, args.checkpoint)
    config = load_config(config_name)
    size = frame_size(config)
    models = load_checkpoint(config, checkpoint, device='cpu', with_discriminator=False)
    animator = Animator(models, backend='torch', device='cpu')
    if animator.mouth_keypoints is None:
        print(f'error: {config_name} names no lip keypoints (train_params.landmark_keypoints): it has no mouth gain',
              file=sys.stderr)
        return 2
    print('clips: ' + ', '.join(v.name for v in videos), file=sys.stderr)
    with _landmarker() as landmarker:
        clips = {}
        for video in videos:
            frames = [resize_image(f, size) for f in iter_video(video, args.max_frames)]
            clips[video.name] = (frames, measure_clip(landmarker, frames))
        result = calibrate(animator, clips, gains, landmarker)
    result.update(config=str(getattr(config, 'source', config_name)), checkpoint=str(checkpoint),
                  clips=[v.name for v in videos], max_frames=args.max_frames)
    for gain, looks in result['gains'].items():
        print(f'gain {gain}: ' + '; '.join(f"{look} r {_fmt(v['r_median'])} ratio {_fmt(v['ratio_median'])}, "
                                           f"{v['passed']} of {v['pairs']} pass" for look, v in looks.items()))
    print(f"chosen: {result['chosen']:g} (most pairs passing the mouth check)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
