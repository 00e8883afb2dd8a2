"""Training/test datasets over a folder of videos, as the original FramesDataset, plus a deterministic sampler.

Determinism: every sample's randomness comes from ``np.random.default_rng([seed, epoch, position])`` where the
sampler encodes the epoch into the index it yields. Results therefore do not depend on the number of
DataLoader workers, and a run resumed mid-epoch sees exactly the samples the uninterrupted run would have.
"""
from __future__ import annotations

import csv
import logging
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .augmentation import Augmentation
from .landmark_targets import mirror as mirror_targets
from .landmark_targets import mouth_gap
from .painting_style import draw_style
from .video_frames import VideoReadError, is_video, read_frames

MOUTH_CONTRAST_CANDIDATES = 8  # frames drawn for a mouth-contrasting pair: its most and least open mouth

log = logging.getLogger(__name__)


def identity_of(path: Path) -> str:
    """Identity of a video: the name before '#' (vox convention), else the whole stem."""
    name = path.name if path.is_dir() else path.stem
    return name.split('#')[0]


def list_videos(folder: Path) -> list[Path]:
    """Sorted videos in a folder (frame folders, video files, image strips)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder} (expected <root>/train and <root>/test)")
    return sorted(p for p in folder.iterdir() if is_video(p))


class FramesDataset(Dataset):
    """Videos under ``root/train`` or ``root/test``; train items are {'source','driving'} frame pairs.

    With ``id_sampling`` an item is an identity and each fetch picks one of its videos at random (one video per
    identity per pass, as the original). Decoded, resized frames are cached in memory up to ``cache_bytes``.
    Unreadable videos are skipped with a warning naming the file; the next video is used instead.
    ``landmark_targets`` ({video name: (T, A, 2)}, see :mod:`.landmark_targets`) adds 'source_landmarks' and
    'driving_landmarks' to train items, moved by the same augmentation (NaN: no face in that frame).
    ``mouth_contrast`` (0-1, needs the targets): that share of the pairs are the most and the least open mouth of
    MOUTH_CONTRAST_CANDIDATES random frames of the clip, instead of two random frames. Why: in random pairs of a
    talking clip the mouth changes little, so a generator rarely has to open or close one.
    ``painting_style`` (0-1): that share of the pairs get one painting look (:mod:`.painting_style`) on the source
    and on 'driving_target', the frame the generator must reproduce; 'driving', whose keypoints drive, stays a
    camera frame. Train items then always carry 'driving_target' (the plain driving frame when not restyled).
    """

    def __init__(self, root_dir: str | Path, frame_shape=(256, 256, 3), id_sampling: bool = False,
                 is_train: bool = True, random_seed: int = 0, augmentation_params: dict | None = None,
                 cache_bytes: int = 4 << 30, landmark_targets: dict[str, np.ndarray] | None = None,
                 mouth_contrast: float = 0.0, painting_style: float = 0.0, **unused):
        self.root = Path(root_dir)
        self.frame_shape = tuple(int(x) for x in frame_shape)
        self.is_train = is_train
        self.seed = int(random_seed)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root} (give --data ROOT with train/ and test/)")
        split = self.root / ('train' if is_train else 'test')
        self.videos = list_videos(split)
        if not self.videos:
            raise FileNotFoundError(f"no videos in {split}: expected frame folders, video files or image strips")
        self.id_sampling = bool(id_sampling) and is_train
        groups: dict[str, list[Path]] = defaultdict(list)
        for v in self.videos:
            groups[identity_of(v)].append(v)
        self.identities = sorted(groups)
        self.by_identity = {k: groups[k] for k in self.identities}
        self.transform = Augmentation(**augmentation_params) if (is_train and augmentation_params) else None
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[Path, np.ndarray] = {}
        self._cached = 0
        self._bad: set[Path] = set()
        self.landmark_targets = landmark_targets
        if not 0.0 <= float(mouth_contrast) <= 1.0:
            raise ValueError(f"dataset_params.mouth_contrast must be in [0, 1], got {mouth_contrast}")
        self.mouth_contrast = float(mouth_contrast)
        if not 0.0 <= float(painting_style) <= 1.0:
            raise ValueError(f"dataset_params.painting_style must be in [0, 1], got {painting_style}")
        self.painting_style = float(painting_style)

    def __len__(self) -> int:
        return len(self.identities) if self.id_sampling else len(self.videos)

    def frames(self, path: Path) -> np.ndarray:
        """Decoded frames of one video (cached)."""
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        frames = read_frames(path, self.frame_shape[:2])
        if self._cached + frames.nbytes <= self.cache_bytes:
            self._cache[path] = frames
            self._cached += frames.nbytes
        return frames

    def _video_for(self, item: int, rng: np.random.Generator) -> Path:
        if self.id_sampling:
            choices = self.by_identity[self.identities[item % len(self.identities)]]
            return choices[int(rng.integers(len(choices)))]
        return self.videos[item % len(self.videos)]

    def _load(self, item: int, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
        for attempt in range(len(self)):
            path = self._video_for(item + attempt, rng)
            if path in self._bad:
                continue
            try:
                return path, self.frames(path)
            except VideoReadError as exc:
                self._bad.add(path)
                warnings.warn(f"skipping unreadable video: {exc}", RuntimeWarning, stacklevel=2)
                log.warning("skipping unreadable video: %s", exc)
        raise VideoReadError(f"no readable video left in {self.root} (all {len(self.videos)} failed to decode)")

    def get(self, item: int, epoch: int = 0, position: int | None = None) -> dict:
        """Sample ``item`` with the randomness of (seed, epoch, position)."""
        rng = np.random.default_rng([self.seed, int(epoch), int(item if position is None else position)])
        path, frames = self._load(item, rng)
        if not self.is_train:
            video = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)  # (3, T, H, W)
            return {'video': video, 'name': path.name}
        idx = self._pair(path, len(frames), rng)
        pair = frames[idx]
        points = self._targets(path, len(frames), idx)
        if self.transform is not None and points is not None:
            pair, points = self.transform(pair, rng, points, mirror_targets)
        elif self.transform is not None:
            pair = self.transform(pair, rng)
        if self.painting_style > 0:
            pair = np.concatenate([pair, pair[1:]])  # source, driving (keypoints), driving_target (reproduced)
            if rng.random() < self.painting_style:
                style = draw_style(rng, pair.shape[1:3])
                pair[0], pair[2] = style(pair[0]), style(pair[2])
        pair = torch.from_numpy(np.ascontiguousarray(pair)).permute(0, 3, 1, 2).float().div_(255.0)
        item = {'source': pair[0], 'driving': pair[1], 'name': path.name}
        if self.painting_style > 0:
            item['driving_target'] = pair[2]
        if points is not None:
            item['source_landmarks'], item['driving_landmarks'] = torch.from_numpy(points).unbind(0)
        return item

    def _pair(self, path: Path, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """Two frame indices in time order (augmentation may flip time): random, or mouth-contrasting."""
        if self.mouth_contrast > 0 and rng.random() < self.mouth_contrast:
            if self.landmark_targets is None:
                raise ValueError("dataset_params.mouth_contrast needs landmark targets (loss_weights.landmarks or "
                                 "loss_weights.mouth in the config)")
            candidates = rng.choice(num_frames, size=min(MOUTH_CONTRAST_CANDIDATES, num_frames), replace=False)
            gaps = mouth_gap(self._targets(path, num_frames, candidates))
            known = np.isfinite(gaps)
            if known.sum() >= 2:
                frames, gaps = candidates[known], gaps[known]
                return np.sort([frames[np.argmin(gaps)], frames[np.argmax(gaps)]])
        return np.sort(rng.choice(num_frames, replace=True, size=2))

    def _targets(self, path: Path, num_frames: int, idx: np.ndarray) -> np.ndarray | None:
        if self.landmark_targets is None:
            return None
        targets = self.landmark_targets.get(path.name)
        if targets is None or len(targets) != num_frames:
            raise ValueError(f"landmark targets for {path.name} are missing or of another length "
                             f"({None if targets is None else len(targets)} vs {num_frames} frames): recompute them")
        return targets[idx]

    def __getitem__(self, index: int) -> dict:
        # indices from EpochSampler encode epoch * epoch_length + position; plain ints work as epoch 0
        length = getattr(self, 'epoch_length', None) or len(self)
        epoch, position = divmod(int(index), length)
        return self.get(position % len(self), epoch, position)


class EpochSampler(Sampler[int]):
    """Shuffled indices over ``num_repeats`` copies of the dataset, split across distributed ranks.

    Yields ``epoch * epoch_length + position`` so the dataset (even inside persistent workers) knows the epoch.
    ``start`` skips the first positions of this rank, for resuming mid-epoch.
    """

    def __init__(self, dataset_len: int, num_repeats: int = 1, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.n = int(dataset_len) * max(1, int(num_repeats))
        self.seed, self.rank, self.world = int(seed), int(rank), int(world_size)
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = self.n // self.world  # drop the tail so every rank runs the same number of steps
        mine = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        return [self.epoch * self.n + p for p in mine]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return max(0, self.n // self.world - self.start)


class PairedDataset(Dataset):
    """(source video, driving video) pairs for animation evaluation, from a csv (columns source, driving)
    or drawn at random (seeded) between test videos, as the original PairedDataset."""

    def __init__(self, initial_dataset: FramesDataset, number_of_pairs: int = 50, seed: int = 0,
                 pairs_list: str | Path | None = None):
        self.initial = initial_dataset
        names = [v.name for v in initial_dataset.videos]
        index = {n: i for i, n in enumerate(names)} | {Path(n).stem: i for i, n in enumerate(names)}
        if pairs_list:
            pairs_list = Path(pairs_list)
            if not pairs_list.is_file():
                raise FileNotFoundError(f"pairs_list not found: {pairs_list}")
            with open(pairs_list, newline='') as f:
                rows = list(csv.DictReader(f))
            if rows and not {'source', 'driving'} <= set(rows[0]):
                raise ValueError(f"{pairs_list}: needs columns 'source' and 'driving', found {list(rows[0])}")
            pairs = [(index[r['source']], index[r['driving']]) for r in rows
                     if r['source'] in index and r['driving'] in index]
        else:
            rng = np.random.default_rng(seed)
            all_pairs = [(i, j) for i in range(len(names)) for j in range(len(names))]
            take = min(number_of_pairs, len(all_pairs))
            pairs = [all_pairs[k] for k in rng.choice(len(all_pairs), size=take, replace=False)]
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int) -> dict:
        s, d = self.pairs[idx]
        src, drv = self.initial.get(s), self.initial.get(d)
        return {'source_video': src['video'], 'driving_video': drv['video'],
                'source_name': src['name'], 'driving_name': drv['name']}
