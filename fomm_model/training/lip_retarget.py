"""Train a lip retargeter (:mod:`fomm_model.lip_retarget`) for a face model, the model itself frozen.

Each step drives avatars (training frames of one person, half of them at their most closed mouth, half restyled in
the training's painting look) with another person's motion as the app does: anchored on that driver's most closed
mouth, relative keypoints, adapt-scale, the model's mouth gain. The retargeter adds its offsets to the lip
keypoints; the frozen generator renders the avatar; a frozen reader (:mod:`.mouth_reader`) reads how far the lips
parted, and the loss asks for the avatar's own opening plus the driver's change in Face Mesh's (scaled by the eyes'
distance), as :func:`.cross_identity.mouth_opening_loss` does for the generator's training. Only the retargeter
learns; the result is a copy of the model's checkpoint with the retargeter's weights added.

    python -m fomm_model.training.lip_retarget --checkpoint assets/models/face-128-v5.pth.tar \\
        --data ../shared/data/faces --reader runs/mouth-reader/reader.pth --out runs/lip-retarget/face-128-v6.pth.tar
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import atomic_save, load_checkpoint, read_checkpoint
from ..config import load_config
from ..config_detection import detect_checkpoint_config
from ..devices import cpu_has_fast_bfloat16
from ..keypoints import Keypoints, RelativeMotion
from ..lip_retarget import STATE_KEY, LipRetargeter
from ..mouth_gain import default_mouth_gain, mouth_keypoints
from .cross_identity import frozen_forward, mouth_opening_loss
from .dataset import identity_of, list_videos
from .landmark_targets import eye_distance, load_or_compute, mouth_gap
from .mouth_reader import MouthReader
from .painting_style import draw_style
from .video_frames import read_frames

log = logging.getLogger(__name__)
FRAME_SIZE = (128, 128)


@dataclass
class Clip:
    identity: str
    frames: np.ndarray      # (T, H, W, 3) uint8
    landmarks: np.ndarray   # (T, A, 2) Face Mesh anchors, NaN where no face
    known: np.ndarray       # indices of frames with a face
    closed: int             # the frame with the most closed mouth
    open_frames: np.ndarray  # frames whose mouth is more open than the clip's median


def load_clips(root: Path, cache_dir: Path, size: tuple[int, int]) -> list[Clip]:
    videos = list_videos(root / 'train')
    targets = load_or_compute(videos, size, cache_dir)
    clips = []
    for video in videos:
        landmarks = targets[video.name]
        gap = mouth_gap(landmarks)
        known = np.flatnonzero(np.isfinite(gap))
        if len(known) < 10:
            continue
        median = np.median(gap[known])
        clips.append(Clip(identity_of(video), read_frames(video, size), landmarks, known,
                          int(known[np.argmin(gap[known])]), known[gap[known] > median]))
    return clips


@dataclass
class Batch:
    source: torch.Tensor           # (B, 3, H, W) avatars
    source_landmarks: torch.Tensor  # (B, A, 2) their Face Mesh anchors (of the unpainted frame)
    anchor_landmarks: torch.Tensor
    driving_landmarks: torch.Tensor
    anchor: torch.Tensor            # (B, 3, H, W) the drivers' closed-mouth frames
    driving: torch.Tensor


def draw_batch(clips: list[Clip], batch_size: int, rng: np.random.Generator, painted: float = 0.5) -> Batch:
    """Avatars (half at their most closed mouth, ``painted`` of them restyled) and other people's frames to drive
    them: each driver's closed-mouth anchor and a frame, half of them from its more open half."""
    parts = {k: [] for k in ('source', 'source_landmarks', 'anchor', 'anchor_landmarks', 'driving', 'driving_landmarks')}
    for _ in range(batch_size):
        avatar = clips[int(rng.integers(len(clips)))]
        others = [c for c in clips if c.identity != avatar.identity]
        driver = others[int(rng.integers(len(others)))]
        s = avatar.closed if rng.random() < 0.5 else int(rng.choice(avatar.known))
        d = int(rng.choice(driver.open_frames if rng.random() < 0.5 and len(driver.open_frames) else driver.known))
        image = avatar.frames[s]
        if rng.random() < painted:
            image = draw_style(rng, image.shape[:2])(image)
        for key, img, lms in (('source', image, avatar.landmarks[s]), ('anchor', driver.frames[driver.closed],
                              driver.landmarks[driver.closed]), ('driving', driver.frames[d], driver.landmarks[d])):
            parts[key].append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255)
            parts[key + '_landmarks'].append(torch.from_numpy(lms))
    return Batch(**{k: torch.stack(v) for k, v in parts.items()})


def driven_keypoints(kp_source: dict, kp_anchor: dict, kp_driving: dict, mouth: list[int], gain: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per item, as the app moves them: (values, jacobians) of the avatar's keypoints driven relative to the
    anchor with the mouth gain, and the lip residual the retargeter reads (in the avatar's units, gain applied)."""
    values, jacobians, residuals = [], [], []
    for b in range(kp_source['value'].shape[0]):
        source, anchor, driving = (Keypoints.from_torch(kp, b) for kp in (kp_source, kp_anchor, kp_driving))
        motion = RelativeMotion(source, anchor, adapt_scale=True, relative_jacobian=True, mouth_keypoints=mouth,
                                mouth_gain=gain)
        moved = motion(driving)
        values.append(moved.value)
        jacobians.append(moved.jacobian)
        residuals.append(motion.lip_residual(driving))
    return tuple(torch.from_numpy(np.stack(x)) for x in (values, jacobians, residuals))


def opening_change(source: torch.Tensor, anchor: torch.Tensor, driving: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) the driver's Face Mesh lip-gap change from its anchor, scaled to the avatar's face by the eyes' distance,
    and (B,) where it is known."""
    known = torch.isfinite(torch.stack([source, anchor, driving])).all(-1).all(-1).all(0)
    source, anchor, driving = (torch.nan_to_num(t.float()) for t in (source, anchor, driving))
    scale = eye_distance(source) / eye_distance(anchor).clamp(min=1e-3)
    return (mouth_gap(driving) - mouth_gap(anchor)) * scale, known


def train(checkpoint: str | Path, data: str | Path, reader_path: str | Path, out: str | Path, *,
          config: str | dict | None = None, steps: int = 1500, batch_size: int = 8, lr: float = 1e-3,
          offset_weight: float = 1.0, seed: int = 0, progress: bool = True) -> dict:
    """Train a retargeter for the model at ``checkpoint`` and save the checkpoint with it at ``out``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = load_config(config) if config is not None else load_config(detect_checkpoint_config(checkpoint).config)
    mouth = mouth_keypoints(config)
    if mouth is None:
        raise ValueError('the model names no lip keypoints (train_params.landmark_keypoints): nothing to retarget')
    gain = default_mouth_gain(config)
    models = load_checkpoint(config, checkpoint, device='cpu', with_discriminator=False)
    models.kp_detector.requires_grad_(False)
    models.generator.requires_grad_(False)
    reader = MouthReader.load(reader_path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clips = load_clips(Path(data), Path(reader_path).parent, FRAME_SIZE)
    log.info('lip retargeter: %d training clips of %d people; mouth keypoints %s, gain %g', len(clips),
             len({c.identity for c in clips}), mouth, gain)
    net = LipRetargeter(models.kp_detector.kp.out_channels, len(mouth))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    fast_bf16 = cpu_has_fast_bfloat16()   # bfloat16 is 5-10x slower than float32 without AVX512-BF16 / AMX
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc='lip retargeter', unit='step')
    start, recent, history = time.time(), [], []
    for step in range(steps):
        batch = draw_batch(clips, batch_size, rng)
        with torch.no_grad():
            kps = [models.kp_detector(x) for x in (batch.source, batch.anchor, batch.driving)]
        value, jacobian, residual = driven_keypoints(*kps, mouth, gain)
        d_value, d_jacobian = net(kps[0]['value'], kps[0]['jacobian'], residual)
        value = value.index_add(1, torch.tensor(mouth), d_value)
        jacobian = jacobian.index_add(1, torch.tensor(mouth), d_jacobian)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=fast_bf16):
            output = frozen_forward(models.generator, batch.source, {'value': value, 'jacobian': jacobian},
                                    {k: v.detach() for k, v in kps[0].items()})['prediction']
            read_output = reader(output.float())
        with torch.no_grad():
            read_source = reader(batch.source)
        change, known = opening_change(batch.source_landmarks, batch.anchor_landmarks, batch.driving_landmarks)
        opening = mouth_opening_loss(read_output, read_source, change, known)
        loss = opening + offset_weight * (d_value.pow(2).mean() + 0.1 * d_jacobian.pow(2).mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        recent = (recent + [opening.item()])[-100:]
        if (step + 1) % 100 == 0:
            history.append({'step': step + 1, 'opening_loss': float(np.mean(recent))})
            log.info('step %d: opening loss %.4f', step + 1, np.mean(recent))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(opening=f'{np.mean(recent):.4f}')
    if bar is not None:
        bar.close()
    report = {'steps': steps, 'batch_size': batch_size, 'seconds': round(time.time() - start, 1),
              'final_opening_loss': float(np.mean(recent)), 'history': history, 'mouth_gain': gain,
              'source_checkpoint': str(checkpoint)}
    ckpt = read_checkpoint(checkpoint)
    ckpt[STATE_KEY] = {**net.state(), 'report': report}
    atomic_save(ckpt, out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', required=True, help='the face model (kept frozen)')
    parser.add_argument('--config', default=None, help='its config (default: detected from the checkpoint)')
    parser.add_argument('--data', required=True, help='dataset root with train/')
    parser.add_argument('--reader', required=True, help='a mouth reader (python -m fomm_model.training.mouth_reader)')
    parser.add_argument('--out', required=True, help='where to write the checkpoint with the retargeter')
    parser.add_argument('--steps', type=int, default=1500)
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--offset_weight', type=float, default=1.0)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if not (Path(args.data) / 'train').is_dir():
        print(f'error: {args.data} has no train/ folder of clips', file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    try:
        report = train(args.checkpoint, args.data, args.reader, args.out, config=args.config, steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, offset_weight=args.offset_weight, seed=args.seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print({k: v for k, v in report.items() if k != 'history'})
    return 0


if __name__ == '__main__':
    sys.exit(main())
