"""Evaluate a model with face landmarks: reconstruction AKD and expression transfer across people, as JSON.

Reconstruction: every test clip rebuilt from its first frame (absolute keypoints, as ``fomm reconstruct``);
AKD = mean distance in pixels, at the model's frame size, between MediaPipe Face Mesh landmarks of the real and
the rebuilt frames (the paper's face metric), with L1 and both scores' static baselines (first frame repeated).
Reconstruction also scores the same person's mouth and eye opening (r and amplitude ratio, as transfer does):
what the generator renders at all. Transfer: every avatar, cropped around its face as the live app crops it,
animated by every clip (relative, adapt-scale, anchored on the first frame, or with --anchor closed_mouth on the
clip's frame with the mouth most closed, as the app's calibration asks; the lips' motion scaled by the model's
mouth gain, or --mouth_gain); per pair the Pearson correlation and
amplitude ratio of mouth and eye opening between driver and output, how often the output has no face, and medians
over pairs; and the ratio of the output's change of face shape to the driver's (distortion shows as > 1; reported,
not a criterion). With --people_avatars, each test clip's person is an avatar too (its first frame, and its frame
with the mouth most closed), driven by the other clips and scored apart. Defaults: the bundled model, ../shared's
test clips and avatars. Needs the landmark model once: python -m fomm_model.evaluation.landmarks --fetch
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from . import CliError
from .runtime_args import (add_mouth_gain_argument, add_runtime_arguments, animator_for, check_mouth_gain_for,
                           checked_number)
from .reconstruct import find_videos, reconstruct_video
from ..checkpoint import load_checkpoint
from ..config import frame_size, load_config
from ..defaults import repo_root, resolve_model
from ..output_paths import atomic_write_text, check_output_file
from ..smoothing import check_kp_smoothing
from ..video_io import IMAGE_EXTENSIONS, iter_video, read_image, resize_image

if TYPE_CHECKING:
    from ..evaluation.transfer import ClipMeasures

MIN_FRAMES = 3
ANCHORS = ('first', 'closed_mouth')


def _shared() -> Path:
    return Path(os.environ.get('FOMM_SHARED_DIR') or repo_root().parent / 'shared')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--config', default=None,
                        help='config name or YAML path (default: the one the checkpoint was made with, found from '
                             'its parameter shapes)')
    parser.add_argument('--checkpoint', default=None,
                        help='checkpoint .pth.tar or the name of an installed model (fomm models list; default: the '
                             'bundled model)')
    parser.add_argument('--data', default=None, help='folder of driving / test videos (its test/ subfolder if '
                                                     'present; default: ../shared/data/faces/test)')
    parser.add_argument('--avatars', default=None, help='folder of avatar images (default: ../shared/data/avatars)')
    parser.add_argument('--whole_avatars', action='store_true',
                        help='animate each avatar image whole, resized to the model size, instead of cropped around '
                             'its face as the live app does (how transfer was scored before 2026-12-03)')
    parser.add_argument('--crop_jitter', type=float, default=0.0, metavar='FRACTION',
                        help='also score each cropped avatar with its crop moved by +FRACTION and -FRACTION of its '
                             'side along both axes (e.g. 0.01: about one pixel at 128), as extra pairs: a shift that '
                             'small moves single portraits\' mouth r by up to 0.2, so model comparisons should not '
                             'rest on one crop (default 0: the detected crop only)')
    parser.add_argument('--people_avatars', action='store_true',
                        help='also animate each test clip\'s person, as an avatar, by every other clip: at the clip\'s '
                             'first frame and at its frame with the mouth most closed; scored apart from the portraits '
                             '("transfer_people" in the JSON). The people are as unseen in training as the drivers, '
                             'and the closed mouth is the case portraits pose')
    parser.add_argument('--anchor', choices=ANCHORS, default='first',
                        help='the driving frame relative motion starts from: "first" (each clip\'s first frame, as '
                             'the original demo) or "closed_mouth" (its frame with the mouth most closed, as the live '
                             'app\'s calibration asks for a neutral face with the mouth closed)')
    add_mouth_gain_argument(parser)
    parser.add_argument('--kp_smoothing', type=checked_number(check_kp_smoothing), default=0.0, metavar='S',
                        help='smooth the driving keypoints over time as the live app does (its --kp-smoothing, the '
                             'window\'s Smoothing slider): 0 (off, the app\'s default) to 1 (strongest); transfer only')
    parser.add_argument('--json', default=None, help='write the scores here (else only printed)')
    parser.add_argument('--max_frames', type=int, default=None,
                        help=f'use at most N frames per video (>= {MIN_FRAMES})')
    add_runtime_arguments(parser, backend='torch')


def _default_dir(given: str | None, relative: str, option: str) -> Path:
    if given is not None:
        return Path(given)
    path = _shared() / relative
    if not path.is_dir():
        raise CliError(f'no {option} given and the default {path} does not exist: pass {option} DIR')
    return path


def _jittered(square: tuple[int, int, int], shape: tuple[int, ...], jitter: float) -> list[tuple[str, list]]:
    """(name suffix, crop) of the detected ``square`` moved by +-``jitter`` of its side along both axes, kept
    inside the image; moves that the image's edges cancel (the crop would not change) are left out."""
    x0, y0, side = square
    h, w = shape[:2]
    step = round(jitter * side)
    out = []
    for sign in (1, -1):
        x, y = min(max(0, x0 + sign * step), w - side), min(max(0, y0 + sign * step), h - side)
        if step and (x, y) != (x0, y0):
            out.append((f'@{sign * jitter:+g}', [x, y, side]))
    return out


def _avatars(folder: Path, size: tuple[int, int], whole: bool,
             jitter: float = 0.0) -> tuple[dict[str, np.ndarray], dict[str, list | None]]:
    """The avatars at the model size, each cropped around its face as the live app crops it (unless ``whole``),
    and the crop ``[x0, y0, side]`` of each (None: the whole image), in the avatar shrunk as the app shrinks it
    (:data:`~fomm_model.face_detection.AVATAR_MAX_SIDE`). With ``jitter``, each cropped avatar also comes with its
    crop moved by :func:`_jittered`, named ``<file>@+0.01`` and ``<file>@-0.01``."""
    if not folder.is_dir():
        raise CliError(f'avatar folder not found: {folder}')
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise CliError(f'no avatar images in {folder} (expected {", ".join(IMAGE_EXTENSIONS)})')
    from ..face_detection import (AVATAR_MIN_CONFIDENCE, FaceDetector, FaceDetectorUnavailable, face_square,
                                  limit_avatar_side)
    images = {p.name: limit_avatar_side(read_image(p)) for p in files}   # as the app's avatar loader does
    squares: dict[str, list | None] = dict.fromkeys(images)
    if not whole:
        try:
            detector = FaceDetector(min_confidence=AVATAR_MIN_CONFIDENCE)
        except FaceDetectorUnavailable as exc:
            raise CliError(f'{exc} (or pass --whole_avatars to animate the avatars uncropped)') from None
        with detector:
            for name, image in list(images.items()):
                square = face_square(detector, image)
                if square is None:
                    print(f'{name}: no face found; animating the whole image', file=sys.stderr)
                else:
                    for variant, (x0, y0, side) in [('', list(square)), *_jittered(square, image.shape, jitter)]:
                        images[name + variant] = image[y0:y0 + side, x0:x0 + side]
                        squares[name + variant] = [x0, y0, side]
    return {name: resize_image(image, size) for name, image in images.items()}, squares


def _landmarker():
    from ..evaluation.landmarks import FaceLandmarker, LandmarkerUnavailable
    try:
        return FaceLandmarker()
    except LandmarkerUnavailable as exc:
        raise CliError(str(exc)) from None


def _reconstruction_entry(name: str, frames: list[np.ndarray], animator, landmarker, real) -> dict:
    from ..evaluation.metrics import average_keypoint_distance
    from ..evaluation.transfer import measure_clip, score_pair
    l1, static, predictions = reconstruct_video(animator, frames)
    rebuilt = measure_clip(landmarker, predictions)
    akd = average_keypoint_distance(real.landmarks, rebuilt.landmarks)
    static_akd = average_keypoint_distance(real.landmarks, [real.landmarks[0]] * len(frames))
    # the same person's mouth and eyes: what the generator can render at all, before any transfer across people
    signals = score_pair(real, rebuilt, video=name).signals
    return {'video': name, **akd.as_dict(), 'akd_static': static_akd.akd,
            'frames_scored_static': static_akd.frames_scored, 'l1': float(np.mean(l1)),
            'l1_static': float(np.mean(static)), **{k: v.as_dict() for k, v in signals.items()}}


def _pooled(entries: list[dict], key: str, weight: str) -> float | None:
    """Mean over all frames of all videos (as reconstruct's L1), from per-video means and frame counts."""
    used = [e for e in entries if e[key] is not None and e[weight] > 0]
    total = sum(e[weight] for e in used)
    return float(sum(e[key] * e[weight] for e in used) / total) if total else None


def _summarize_reconstruction(entries: list[dict]) -> dict:
    from ..evaluation.transfer import SIGNALS
    frames = sum(e['frames'] for e in entries)
    with_face = frames - sum(e['no_face_real'] for e in entries)
    no_face_generated = sum(e['no_face_generated'] for e in entries)
    return {
        'akd': _pooled(entries, 'akd', 'frames_scored'),
        'akd_static': _pooled(entries, 'akd_static', 'frames_scored_static'),
        'frames': frames, 'frames_scored': sum(e['frames_scored'] for e in entries),
        'no_face_real': frames - with_face, 'no_face_generated': no_face_generated,
        'missing_keypoint_rate': no_face_generated / with_face if with_face else None,
        'l1': _pooled(entries, 'l1', 'frames'), 'l1_static': _pooled(entries, 'l1_static', 'frames'),
        **{name: _signal_medians([e[name] for e in entries]) for name in SIGNALS},
        'videos': entries,
    }


def _signal_medians(scores: list[dict]) -> dict:
    """Median r and amplitude ratio over the clips that exercise a signal, by the transfer summary's rule."""
    from ..evaluation.metrics import SignalScore
    from ..evaluation.transfer import signal_medians
    used, r, ratio = signal_medians([SignalScore(**s) for s in scores])
    return {'clips_exercised': used, 'r_median': r, 'ratio_median': ratio}


def run(args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < MIN_FRAMES:
        raise CliError(f'--max_frames must be >= {MIN_FRAMES} (correlations need a few frames)')
    started = time.perf_counter()
    config_name, checkpoint = resolve_model(args.config, args.checkpoint)
    config = load_config(config_name)
    # checked before the long run, so a bad --json does not throw its results away at the end
    json_path = check_output_file(args.json, what='--json', inputs={'--checkpoint': checkpoint,
                                                                   '--config': config.source}) if args.json else None
    size = frame_size(config)
    videos = find_videos(_default_dir(args.data, 'data/faces/test', '--data'))
    avatar_dir = _default_dir(args.avatars, 'data/avatars', '--avatars')
    if not 0 <= args.crop_jitter < 0.5:
        raise CliError(f'--crop_jitter must be a fraction of the crop side in [0, 0.5), got {args.crop_jitter}')
    if args.crop_jitter and args.whole_avatars:
        raise CliError('--crop_jitter moves the avatars\' face crops, and --whole_avatars uses none: pass one of them')
    if args.people_avatars and len(videos) < 2:
        raise CliError('--people_avatars drives each clip\'s person by the other clips: it needs at least two clips')
    avatars, avatar_crops = _avatars(avatar_dir, size, args.whole_avatars, args.crop_jitter)
    landmarker = _landmarker()
    from ..evaluation.transfer import (animate_clip, closed_mouth_or_first, driving_keypoints, measure_clip,
                                       score_pair, summarize)
    from ..video_io import video_fps

    models = load_checkpoint(config, checkpoint, device='cpu', with_discriminator=False)
    absolute = animator_for(models, args, relative=False, adapt_scale=False)
    check_mouth_gain_for(models, args.mouth_gain)
    relative = animator_for(models, args, quiet=True, relative=True, adapt_scale=True, mouth_gain=args.mouth_gain)

    reconstruction, pairs, clips, anchors = [], [], {}, {}
    people_runs = 2 * len(videos) * (len(videos) - 1) if args.people_avatars else 0
    progress = tqdm(total=len(videos) * (1 + len(avatars)) + people_runs, desc='evaluating', unit='run')
    with landmarker, progress:
        for video in videos:
            frames = [resize_image(f, size) for f in iter_video(video, args.max_frames)]
            if len(frames) < MIN_FRAMES:
                raise CliError(f'{video} has {len(frames)} frames; evaluation needs at least {MIN_FRAMES}')
            real = measure_clip(landmarker, frames)
            anchors[video.name] = closed_mouth_or_first(real) if args.anchor == 'closed_mouth' else 0
            progress.set_postfix_str(f'{video.name[:30]} reconstruction')
            reconstruction.append(_reconstruction_entry(video.name, frames, absolute, landmarker, real))
            progress.update()
            driving = driving_keypoints(relative, frames, video_fps(video), args.kp_smoothing)
            for name, avatar in avatars.items():
                progress.set_postfix_str(f'{video.name[:30]} x {name}')
                output = measure_clip(landmarker, animate_clip(relative, avatar, frames, anchors[video.name], driving))
                pairs.append(score_pair(real, output, name, video.name))
                progress.update()
            if args.people_avatars:
                clips[video.name] = (frames, real, driving)
        people = _people_transfer(clips, anchors, relative, landmarker, progress) if args.people_avatars else None

    transfer = summarize(pairs)
    transfer['pair_scores'] = [p.as_dict() for p in pairs]
    summary = {
        'config': str(getattr(config, 'source', config_name)), 'checkpoint': str(checkpoint),
        'data': str(videos[0].parent), 'avatars': str(avatar_dir), 'avatar_crops': avatar_crops,
        'crop_jitter': args.crop_jitter, 'anchor': args.anchor, 'anchor_frames': anchors,
        'mouth_gain': relative.mouth_gain, 'kp_smoothing': args.kp_smoothing,
        'frame_size': list(size),
        'max_frames': args.max_frames,
        'landmarks': 'MediaPipe Face Mesh (face_landmark.tflite, 468 points) on LiteRT; AKD in pixels at frame_size',
        'reconstruction': _summarize_reconstruction(reconstruction), 'transfer': transfer,
        **({'transfer_people': people} if people is not None else {}),
        'seconds': round(time.perf_counter() - started, 1),
    }
    if json_path is not None:
        atomic_write_text(json.dumps(summary, indent=2) + '\n', json_path)
    _print(summary, json_path)
    return 0


PEOPLE_AVATARS = {'first_frame': 'first frame', 'mouth_closed': 'mouth most closed'}


def _people_transfer(clips: dict[str, tuple[list[np.ndarray], ClipMeasures, list]], anchors: dict[str, int], animator,
                     landmarker, progress) -> dict:
    """Each clip's person as an avatar (its first frame, its most closed mouth) driven by every other clip.

    Why: the portraits mix three things (another person, a painting, a closed mouth); held-out people taken from
    the test clips, already framed as the model was trained, separate the closed mouth from the rest.
    """
    from ..evaluation.transfer import animate_clip, closed_mouth_or_first, measure_clip, score_pair, summarize
    chosen = {name: {'first_frame': 0, 'mouth_closed': closed_mouth_or_first(real)}
              for name, (_, real, _) in clips.items()}
    out: dict = {'avatar_frames': chosen}
    for kind in PEOPLE_AVATARS:
        pairs = []
        for video, (frames, real, driving) in clips.items():
            for person, (person_frames, _, _) in clips.items():
                if person == video:
                    continue
                progress.set_postfix_str(f'{video[:30]} x {person[:20]} ({PEOPLE_AVATARS[kind]})')
                frame = chosen[person][kind]
                output = measure_clip(landmarker, animate_clip(animator, person_frames[frame], frames,
                                                               anchors[video], driving))
                pairs.append(score_pair(real, output, f'{person}@{frame}', video))
                progress.update()
        out[kind] = summarize(pairs)
        out[kind]['pair_scores'] = [p.as_dict() for p in pairs]
    out['avatar_mouth_opening'] = {
        name: {kind: _finite(real.mouth[chosen[name][kind]]) for kind in PEOPLE_AVATARS}
        for name, (_, real, _) in clips.items()}
    return out


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _fmt(value: float | None, spec: str = '.3f') -> str:
    return 'n/a' if value is None else format(value, spec)


def _with_interval(scores: dict, key: str) -> str:
    """'0.68 [0.53, 0.80]': a median with its interval (:func:`~fomm_model.evaluation.transfer.signal_intervals`)."""
    interval = scores.get(f'{key}_interval')
    text = _fmt(scores[f'{key}_median'], '.2f')
    return text + (f' [{interval[0]:.2f}, {interval[1]:.2f}]' if interval else '')


def _print(summary: dict, json_path: Path | None) -> None:
    from ..evaluation.transfer import SIGNALS
    rec, tr = summary['reconstruction'], summary['transfer']
    print(f"reconstruction over {rec['frames']} frames of {len(rec['videos'])} videos: "
          f"AKD {_fmt(rec['akd'], '.2f')} px (static {_fmt(rec['akd_static'], '.2f')}), "
          f"no face in {rec['no_face_generated']} rebuilt frames, "
          f"L1 {rec['l1']:.4f} (static {rec['l1_static']:.4f})")
    for name in SIGNALS:
        s = rec[name]
        print(f"reconstruction {name} (same person): median r {_fmt(s['r_median'], '.2f')}, median amplitude "
              f"ratio {_fmt(s['ratio_median'], '.2f')} over {s['clips_exercised']} clips that move it")
    print('transfer: relative motion from each clip\'s '
          + ('first frame' if summary['anchor'] == 'first' else 'frame with the mouth most closed')
          + f", mouth gain {summary['mouth_gain']:g}"
          + (f", keypoints smoothed at {summary['kp_smoothing']:g}" if summary.get('kp_smoothing') else ''))
    for name in SIGNALS:
        s = tr[name]
        print(f"transfer {name}: median r {_with_interval(s, 'r')}, median amplitude ratio "
              f"{_with_interval(s, 'ratio')} over {s['pairs_exercised']} pairs that move it")
    shape = tr['shape']
    print(f"transfer face shape: median ratio {_fmt(shape['ratio_median'], '.2f')} of the driver's change over "
          f"{shape['pairs_exercised']} pairs whose driver changes it (~1 follows, >1 distorts; reported only)")
    for kind, label in PEOPLE_AVATARS.items() if 'transfer_people' in summary else ():
        people = summary['transfer_people'][kind]
        print(f"transfer, held-out people as avatars ({label}): "
              + ', '.join(f"{name} median r {_with_interval(people[name], 'r')} / ratio "
                          f"{_with_interval(people[name], 'ratio')}" for name in SIGNALS)
              + f", face shape {_fmt(people['shape']['ratio_median'], '.2f')}; {people['pairs_passed']}/"
                f"{people['pairs']} pairs pass, overall {'PASS' if people['passed'] else 'FAIL'}")
    print('(in brackets: 95% intervals of the medians with other avatars and driving clips like these, both '
          'resampled)')
    print(f"transfer: {tr['pairs_passed']}/{tr['pairs']} pairs pass, median no-face rate "
          f"{100 * (tr['no_face_rate_median'] or 0):.1f}%, overall {'PASS' if tr['passed'] else 'FAIL'}"
          + (f' -> {json_path}' if json_path else '') + f" ({summary['seconds']} s)")
