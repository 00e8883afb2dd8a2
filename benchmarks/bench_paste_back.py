"""Per-frame cost of pasting an animated 128 px face crop back into a 720p / 1080p avatar.

The avatar is a synthetic smooth image with fine noise (no download, no picture of a person); each frame's
crop is the original crop moved by a few pixels and brightened, so the colour match and the detail gate do real
work. Sizes are interleaved round by round in one process (the host is shared) and medians are reported, with
the cost of the full-image copy separately (``out=`` reuses a buffer and skips it).

    python -m benchmarks.bench_paste_back [--rounds 7] [--frames 60] [--cv2-threads 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from fomm_model.paste_back import PasteBack

SIZES = {'720p': (720, 1280), '1080p': (1080, 1920)}
CROP = (128, 128)


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def avatar(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus pixel noise: smooth for the model-size crop, detailed at full size."""
    import cv2
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (shape[0] // 64 + 2, shape[1] // 64 + 2, 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    return np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)


def face_box(shape: tuple[int, int], fraction: float) -> tuple[int, int, int, int]:
    """A centred square whose side is ``fraction`` of the image height (a face crop is 2x the face width)."""
    side = int(shape[0] * fraction)
    x0, y0 = (shape[1] - side) // 2, (shape[0] - side) // 2
    return x0, y0, x0 + side, y0 + side


def frames(paste: PasteBack, n: int) -> list[np.ndarray]:
    """The original crop shifted by up to 3 px and brightened by up to 12 levels."""
    import cv2
    out = []
    for i in range(n):
        dx, dy = 3 * np.sin(i / 5), 2 * np.cos(i / 7)
        moved = cv2.warpAffine(paste.crop, np.float32([[1, 0, dx], [0, 1, dy]]), paste.crop.shape[1::-1],
                               borderMode=cv2.BORDER_REPLICATE)
        out.append(cv2.add(moved, np.full_like(moved, 6 + i % 7)))
    return out


def main(argv: list[str] | None = None) -> None:
    import cv2
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--frames', type=int, default=60)
    parser.add_argument('--cv2-threads', type=int, default=1, help='the live app runs OpenCV with 1 thread')
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.cv2_threads)
    cases = {}
    for name, shape in SIZES.items():
        image = avatar(shape)
        for fraction in (2 / 3, 1.0):
            paste = PasteBack(image, face_box(shape, fraction), CROP)
            cases[f'{name} box {paste.box[2] - paste.box[0]}px'] = (paste, frames(paste, args.frames))
    labels = ('per frame', 'with out=', 'CPU time', 'image copy')
    timings: dict[str, dict[str, list[float]]] = {k: {label: [] for label in labels} for k in cases}
    for _ in range(args.rounds):
        for key, (paste, crops) in cases.items():
            buffer = paste.image.copy()
            t0 = time.perf_counter()
            for crop in crops:
                paste(crop)
            t1 = time.perf_counter()
            c1 = time.thread_time()
            for crop in crops:
                paste(crop, out=buffer)
            t2, c2 = time.perf_counter(), time.thread_time()
            for _crop in crops:
                paste.image.copy()
            t3 = time.perf_counter()
            for label, seconds in zip(labels, (t1 - t0, t2 - t1, c2 - c1, t3 - t2)):
                timings[key][label].append(1000 * seconds / len(crops))
    print(f'CPU: {cpu_model()} ({os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.1f}), '
          f'OpenCV {cv2.__version__} with {cv2.getNumThreads()} thread(s); crop {CROP[1]}x{CROP[0]}; median of '
          f'{args.rounds} rounds of {args.frames} frames. "CPU time" is the with-out= run\'s own CPU time, which '
          f'other processes on shared cores do not inflate as they do wall time.')
    print(f'{"case":<20}' + ''.join(f'{label:>12}' for label in labels))
    for key, t in timings.items():
        print(f'{key:<20}' + ''.join(f'{statistics.median(t[label]):>9.2f} ms' for label in labels))


if __name__ == '__main__':
    main()
