"""Per-frame cost: the original demo.py step vs the cached Animator fast path, on this machine's CPU.

The original step (make_animation's loop body) runs, for every frame: kp detector on the driving frame,
normalize_kp with two convex-hull areas, and the full generator(source, ...) including the source encoder,
the source Gaussians and the full-resolution ``deformed`` visualisation. The fast path prepares the source
once. All variants are interleaved round by round in one process (the host is shared and noisy) and
the medians are reported, with the largest prediction difference against the float32 original.

    python -m benchmarks.bench_animator [--configs vox-256 face-128] [--rounds 6] [--threads 2]

On a host whose cores are shared with other busy processes, two OpenMP threads can stall each other
(medians 10-50x the minimum); ``--threads 1`` then gives stable numbers.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fomm_model.animation import Animator, image_to_tensor
from fomm_model.config import frame_size, load_config
from fomm_model.keypoints import normalize_kp
from fomm_model.models import build_models
from fomm_model.video_io import read_image, read_video, resize_image

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'


def _inputs(size: tuple[int, int], n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A real portrait and real driving frames if ../shared is there, else smooth random images."""
    avatars = sorted((SHARED / 'data/avatars').glob('*.png'))
    clips = sorted((SHARED / 'data/faces/test').glob('*.mp4'))
    if avatars and clips:
        source = resize_image(read_image(avatars[0]), size)
        frames, _ = read_video(clips[0], max_frames=n)
        return source, [resize_image(f, size) for f in frames]
    rng = np.random.default_rng(0)
    imgs = [resize_image(rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8), size)
            for _ in range(n + 1)]
    return imgs[0], imgs[1:]


class Original:
    """make_animation's per-frame body, float32, nothing cached except kp_source and kp_driving_initial."""

    def __init__(self, models, source: np.ndarray, anchor: np.ndarray):
        self.kp_detector, self.generator = models.kp_detector.eval(), models.generator.eval()
        self.size = frame_size(models.config)
        with torch.no_grad():
            self.source = image_to_tensor(source, self.size, 'cpu')
            self.kp_source = self.kp_detector(self.source)
            self.kp_initial = self.kp_detector(image_to_tensor(anchor, self.size, 'cpu'))

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        kp_driving = self.kp_detector(image_to_tensor(frame, self.size, 'cpu'))
        kp_norm = normalize_kp(kp_source=self.kp_source, kp_driving=kp_driving, kp_driving_initial=self.kp_initial,
                               use_relative_movement=True, use_relative_jacobian=True, adapt_movement_scale=True)
        return self.generator(self.source, kp_source=self.kp_source, kp_driving=kp_norm)['prediction']


class Fast:
    def __init__(self, models, source: np.ndarray, anchor: np.ndarray, dtype: torch.dtype, channels_last: bool):
        self.animator = Animator(models, relative=True, adapt_scale=True, device='cpu', dtype=dtype,
                                 channels_last=channels_last)
        self.animator.set_source(source)
        self.animator.set_anchor(anchor)

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        a = self.animator
        return a.animate_keypoints(a.keypoints(a.to_tensor(frame)))


def bench_config(name: str, rounds: int, frames_per_round: int) -> list[dict]:
    config = load_config(name)
    size = frame_size(config)
    torch.manual_seed(0)
    base = build_models(config, with_discriminator=False).eval()
    source, driving = _inputs(size, frames_per_round + 1)
    anchor, driving = driving[0], driving[1:]
    variants = {
        'original fp32 (per frame, uncached)': Original(copy.deepcopy(base), source, anchor),
        'Animator fp32': Fast(copy.deepcopy(base), source, anchor, torch.float32, False),
        'Animator fp32 + channels_last': Fast(copy.deepcopy(base), source, anchor, torch.float32, True),
        'Animator bf16 + channels_last': Fast(copy.deepcopy(base), source, anchor, torch.bfloat16, True),
    }
    times = {k: [] for k in variants}
    diffs = {k: 0.0 for k in variants}
    reference = [variants['original fp32 (per frame, uncached)'](f).float() for f in driving]  # also warm-up
    for k, fn in variants.items():
        for f, ref in zip(driving, reference):
            diffs[k] = max(diffs[k], float((fn(f).float() - ref).abs().max()))
    names = list(variants)
    paired = {k: [] for k in variants}  # original time / variant time, measured back to back on one frame
    for r in range(rounds):
        for i, f in enumerate(driving):
            order = names if (r + i) % 2 == 0 else names[::-1]  # alternate so host drift hits all alike
            took = {}
            for k in order:
                t = time.perf_counter()
                variants[k](f)
                took[k] = time.perf_counter() - t
                times[k].append(took[k])
            for k in names:
                paired[k].append(took[names[0]] / took[k])
    base_ms = statistics.median(times[names[0]]) * 1000
    rows = []
    for k in variants:
        ms = statistics.median(times[k]) * 1000
        rows.append({'config': name, 'variant': k, 'ms': ms, 'min_ms': min(times[k]) * 1000,
                     'speedup': base_ms / ms, 'paired_speedup': statistics.median(paired[k]),
                     'max_abs_diff': diffs[k], 'samples': len(times[k])})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--configs', nargs='+', default=['vox-256', 'face-128'])
    parser.add_argument('--rounds', type=int, default=6)
    parser.add_argument('--frames', type=int, default=3, help='driving frames per variant per round')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, random weights, '
          f'{args.rounds} rounds x {args.frames} frames, medians')
    print('speedup = median(original) / median(variant); paired = median over frames of the back-to-back ratio')
    print(f"{'config':<9} {'variant':<37} {'ms/frame':>9} {'min ms':>8} {'speedup':>8} {'paired':>7} "
          f"{'max|diff| vs fp32 orig':>23}")
    for name in args.configs:
        for row in bench_config(name, args.rounds, args.frames):
            print(f"{row['config']:<9} {row['variant']:<37} {row['ms']:9.1f} {row['min_ms']:8.1f} "
                  f"{row['speedup']:7.2f}x {row['paired_speedup']:6.2f}x {row['max_abs_diff']:23.2e}", flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
