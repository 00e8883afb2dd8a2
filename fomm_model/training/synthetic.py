"""Tiny synthetic video datasets (moving coloured blobs) in every supported layout, for tests and benchmarks.

Real footage is not needed to check that the loader, losses and loop work; blobs move smoothly so a model can
learn something in a few dozen steps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ('mp4', 'gif', 'strip', 'folder')


def blob_clip(num_frames: int = 8, size: int = 128, seed: int = 0) -> np.ndarray:
    """(T, size, size, 3) uint8: two Gaussian blobs drifting over a gradient background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    base = np.stack([xx, yy, 1 - xx], -1) * 0.5
    start, velocity = rng.uniform(0.3, 0.7, (2, 2)), rng.uniform(-0.03, 0.03, (2, 2))
    colors = rng.uniform(0.3, 1.0, (2, 3))
    frames = []
    for t in range(num_frames):
        img = base.copy()
        for (cx, cy), (vx, vy), color in zip(start, velocity, colors):
            g = np.exp(-(((xx - cx - vx * t) ** 2 + (yy - cy - vy * t) ** 2) / (2 * 0.08 ** 2)))
            img = img * (1 - g[..., None]) + color * g[..., None]
        frames.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
    return np.stack(frames)


def write_clip(frames: np.ndarray, path: Path, fmt: str) -> Path:
    """Write frames as ``fmt`` (mp4, gif, strip, folder) at ``path`` without extension; returns the path."""
    path = Path(path)
    if fmt == 'mp4':
        import imageio.v2 as iio
        out = path.with_suffix('.mp4')
        iio.mimwrite(str(out), list(frames), fps=10, codec='libx264', quality=9, macro_block_size=1)
    elif fmt == 'gif':
        out = path.with_suffix('.gif')
        images = [Image.fromarray(f) for f in frames]
        images[0].save(out, save_all=True, append_images=images[1:], duration=100, loop=0)
    elif fmt == 'strip':
        out = path.with_suffix('.png')
        Image.fromarray(np.concatenate(list(frames), axis=1)).save(out)
    elif fmt == 'folder':
        out = path
        out.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(out / f'{i:04d}.png')
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
    return out


def make_dataset(root: str | Path, identities: int = 3, clips_per_identity: int = 2, num_frames: int = 8,
                 size: int = 128, formats: tuple[str, ...] = FORMATS, test_clips: int = 1) -> Path:
    """root/train and root/test with ``<id>#synthetic__<k>`` clips cycling through ``formats``."""
    root = Path(root)
    k = 0
    for split, count in (('train', identities * clips_per_identity), ('test', test_clips)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            ident = f'id{i // clips_per_identity}' if split == 'train' else f'test{i}'
            write_clip(blob_clip(num_frames, size, seed=k), root / split / f'{ident}#synthetic__{i}',
                       formats[k % len(formats)])
            k += 1
    return root
