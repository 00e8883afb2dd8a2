"""A frozen lips-and-lids reader: an independent judge of how far a generated mouth opened.

Why: the cross-identity keypoint loss (:mod:`.cross_identity`) asks the model's own keypoint detector whether a
face driven by another person's motion opened its mouth, and the generator learnt to satisfy that detector more
than it opened the mouth (its lip keypoints parted 0.60 as far as sent, Face Mesh saw 0.36; model card). This
reader is a separate network, trained once, by supervision alone, to find the Face Mesh anchors of
:mod:`.landmark_targets` (the inner lips, the mouth corners, the lids) on training frames. It never sees the
generator's gradients or outputs while it learns, it reads painted frames as well (the painting looks of
:mod:`.painting_style`, targets from the unpainted frame), and blurred and shifted ones, so that a generated
painting's mouth is read as Face Mesh would read it.

    python -m fomm_model.training.mouth_reader --data ../shared/data/faces --out runs/mouth-reader/reader.pth
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import cpu_has_fast_bfloat16
from ..modules.keypoint_detector import KPDetector
from .dataset import FramesDataset, list_videos
from .landmark_targets import ANCHOR_NAMES, load_or_compute, mouth_gap

log = logging.getLogger(__name__)

# The reader's network: the keypoint detector's hourglass and soft-argmax, one heatmap per anchor, at half the
# 128-px frame (a quarter, the model's own detector's choice, leaves an open mouth one or two heatmap cells wide).
READER_PARAMS = dict(block_expansion=16, num_kp=len(ANCHOR_NAMES), num_channels=3, max_features=128, num_blocks=4,
                     temperature=0.1, estimate_jacobian=False, scale_factor=0.5)
FRAME_SHAPE = (128, 128, 3)


def build_reader() -> KPDetector:
    return KPDetector(**READER_PARAMS)


class MouthReader:
    """The trained reader, frozen: ``reader(images)`` gives (B, A, 2) anchors in keypoint coordinates, with
    gradients to the images only. Not an ``nn.Module`` on purpose: it must not join a model's parameters, state
    dict or optimiser."""

    def __init__(self, net: KPDetector):
        self.net = net.eval().requires_grad_(False)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = 'cpu') -> MouthReader:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'mouth reader checkpoint {path} not found; train one with: '
                                    f'python -m fomm_model.training.mouth_reader --data <dataset root> --out {path}')
        state = torch.load(path, map_location='cpu', weights_only=True)
        net = build_reader()
        net.load_state_dict(state['reader'])
        return cls(net.to(device))

    def to(self, device) -> MouthReader:
        self.net.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)['value'].float()


def _affine_jitter(images: torch.Tensor, anchors: torch.Tensor, generator: torch.Generator,
                   shift: float = 0.08, scale: float = 0.08, angle: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image moved by a small random similarity (anchors moved alike): generated faces do not sit exactly
    where the training crops put them."""
    b = len(images)
    s = 1 + (torch.rand(b, generator=generator) * 2 - 1) * scale
    a = (torch.rand(b, generator=generator) * 2 - 1) * angle
    t = (torch.rand(b, 2, generator=generator) * 2 - 1) * shift
    rot = torch.stack([torch.stack([a.cos(), -a.sin()], -1), torch.stack([a.sin(), a.cos()], -1)], -2)
    matrix = s[:, None, None] * rot  # output coordinates -> input coordinates: p_in = M p_out + t
    theta = torch.cat([matrix, t[:, :, None]], dim=2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=True)
    moved = F.grid_sample(images, grid, padding_mode='border', align_corners=True)
    inverse = torch.linalg.inv(matrix)
    return moved, torch.einsum('bij,baj->bai', inverse, anchors - t[:, None])


def _blur(images: torch.Tensor, generator: torch.Generator, max_sigma: float = 1.2) -> torch.Tensor:
    """Half the images blurred by a random Gaussian: generated faces are softer than camera frames."""
    out = images.clone()
    for i in range(len(images)):
        if torch.rand(1, generator=generator).item() < 0.5:
            continue
        sigma = 0.3 + torch.rand(1, generator=generator).item() * (max_sigma - 0.3)
        radius = max(1, math.ceil(2 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=images.dtype)
        k = torch.exp(-x ** 2 / (2 * sigma ** 2))
        k = k / k.sum()
        img = F.pad(images[i:i + 1], (radius, radius, radius, radius), mode='replicate')
        img = F.conv2d(img, k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
        out[i:i + 1] = F.conv2d(img, k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    return out


def training_dataset(root: str | Path, cache_dir: str | Path, seed: int = 0) -> FramesDataset:
    """Training pairs with their Face Mesh anchors: half painted (source only; its targets are the unpainted
    frame's), half with the most and least open mouth of a clip, flipped and colour-jittered."""
    dataset = FramesDataset(root, frame_shape=FRAME_SHAPE, id_sampling=False, is_train=True,
                            random_seed=seed, mouth_contrast=0.5, painting_style=0.5,
                            augmentation_params={'flip_param': {'horizontal_flip': True, 'time_flip': True},
                                                 'jitter_param': {'brightness': 0.15, 'contrast': 0.15,
                                                                  'saturation': 0.15, 'hue': 0.1}})
    dataset.landmark_targets = load_or_compute(dataset.videos, FRAME_SHAPE[:2], cache_dir)
    return dataset


def anchor_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 over anchors with a target (NaN: no face found), the lips' gap counted once more: it is what the
    reader is for."""
    known = torch.isfinite(target).all(-1).all(-1)
    if not known.any():
        return predicted.sum() * 0
    p, t = predicted[known], target[known]
    return torch.abs(p - t).mean() + torch.abs(mouth_gap(p) - mouth_gap(t)).mean()


def train(root: str | Path, out: str | Path, steps: int = 2400, batch_size: int = 16, lr: float = 2e-4,
          seed: int = 0, progress: bool = True) -> dict:
    """Train the reader and save it to ``out`` (with the held-out agreement :func:`validate` measures)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dataset = training_dataset(root, out.parent, seed)
    net = build_reader()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                   pct_start=max(0.05, 3 / steps))
    rng = np.random.default_rng(seed)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc='mouth reader', unit='step')
    fast_bf16 = cpu_has_fast_bfloat16()  # bfloat16 is 5-10x slower than float32 without AVX512-BF16 / AMX
    log.info('mouth reader: training in %s', 'bfloat16 autocast' if fast_bf16 else 'float32')
    net.train()
    start, recent = time.time(), []
    for step in range(steps):
        items = [dataset.get(int(rng.integers(len(dataset))), 0, step * batch_size + i) for i in range(batch_size)]
        images = torch.stack([it[k] for it in items for k in ('source', 'driving')])
        targets = torch.stack([it[k] for it in items for k in ('source_landmarks', 'driving_landmarks')])
        images, targets = _affine_jitter(images, targets, generator)
        images = _blur(images, generator)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=fast_bf16):
            predicted = net(images)['value']  # float32 (soft-argmax runs in float32)
        loss = anchor_loss(predicted, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        recent = (recent + [loss.item()])[-50:]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f'{np.mean(recent):.4f}')
    if bar is not None:
        bar.close()
    net.eval()
    report = {'steps': steps, 'batch_size': batch_size, 'seconds': round(time.time() - start, 1),
              'final_loss': float(np.mean(recent))}
    if (Path(root) / 'test').is_dir():
        report['test'] = validate(MouthReader(net), root, out.parent)
    torch.save({'reader': net.state_dict(), 'params': READER_PARAMS, 'report': report}, out)
    return report


@torch.no_grad()
def validate(reader: MouthReader, root: str | Path, cache_dir: str | Path) -> dict:
    """How the reader's mouth gap agrees with Face Mesh's on the test clips of dataset ``root``: the Pearson r over all
    frames with a face, the median r within a clip, and the mean absolute difference (keypoint units)."""
    from .video_frames import read_frames
    videos = list_videos(Path(root) / 'test')
    targets = load_or_compute(videos, FRAME_SHAPE[:2], cache_dir, progress=False)
    ours, theirs, per_clip = [], [], []
    for video in videos:
        frames = read_frames(video, FRAME_SHAPE[:2])
        truth = torch.from_numpy(targets[video.name])
        known = torch.isfinite(truth).all(-1).all(-1)
        images = torch.from_numpy(frames[known.numpy()]).permute(0, 3, 1, 2).float() / 255
        read = torch.cat([reader(chunk) for chunk in images.split(64)])
        a, b = mouth_gap(read).numpy(), mouth_gap(truth[known]).numpy()
        ours.append(a)
        theirs.append(b)
        if len(a) > 2 and a.std() > 0 and b.std() > 0:
            per_clip.append(float(np.corrcoef(a, b)[0, 1]))
    a, b = np.concatenate(ours), np.concatenate(theirs)
    return {'frames': len(a), 'r': float(np.corrcoef(a, b)[0, 1]),
            'median_clip_r': float(np.median(per_clip)) if per_clip else None,
            'mean_abs_gap_error': float(np.abs(a - b).mean()), 'mean_gap': float(b.mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', required=True, help='dataset root with train/ (and test/, to validate)')
    parser.add_argument('--out', required=True, help='where to save the reader (.pth)')
    parser.add_argument('--steps', type=int, default=2400, help='2,400 steps of 16 pairs: 26 min on 2 Zen 4 cores')
    parser.add_argument('--batch_size', type=int, default=16)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if not (Path(args.data) / 'train').is_dir():
        print(f'error: {args.data} has no train/ folder of clips', file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    report = train(args.data, args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    print(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
