"""Face-landmark targets for some keypoints: an optional training loss that puts keypoints on the lips and lids.

Why: the unsupervised keypoints of a small face model settle where motion is large (head pose): face-128 put 9 of
its 10 keypoints around the eyes and nose, and its mouths barely open across people. Tying a few keypoints to
the inner lips, mouth corners and eyelids makes their motion carry the mouth and eye opening the output must
copy. The networks, the checkpoint layout and inference are unchanged; only training gains one loss term
(``loss_weights.landmarks``, with ``train_params.landmark_keypoints`` naming the keypoint for each anchor).

Targets are Face Mesh landmarks (:class:`~fomm_model.evaluation.landmarks.FaceLandmarker`) of every training
frame at the training size, in the keypoints' coordinates (x, y in [-1, 1], align_corners), NaN where no face is
found. They are computed once per dataset and cached in the run's folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..modules.util import keypoint_indices
from .video_frames import read_frames

log = logging.getLogger(__name__)

# (name, Face Mesh indices averaged). "right" is the subject's right, on the image's left (Face Mesh's convention).
ANCHORS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ('upper_lip', (82, 13, 312)),     # inner edge of the upper lip, centre three points
    ('lower_lip', (87, 14, 317)),     # inner edge of the lower lip
    ('mouth_right', (78,)),           # inner mouth corners
    ('mouth_left', (308,)),
    ('right_upper_lid', (159,)),      # lid centres
    ('right_lower_lid', (145,)),
    ('left_upper_lid', (386,)),
    ('left_lower_lid', (374,)),
)
ANCHOR_NAMES = tuple(name for name, _ in ANCHORS)
# after a horizontal flip the subject's right is on the image's right: each anchor takes its mirror twin's place
MIRROR = tuple(ANCHOR_NAMES.index(name.replace('right', '#').replace('left', 'right').replace('#', 'left'))
               for name in ANCHOR_NAMES)
CACHE_VERSION = 1


def anchors_from_landmarks(points: np.ndarray) -> np.ndarray:
    """(len(ANCHORS), 2) anchor pixel positions from (468, 2) Face Mesh landmarks."""
    return np.stack([points[list(idx)].mean(axis=0) for _, idx in ANCHORS])


def to_keypoint_coordinates(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixel (x, y), pixel centres at integers, to keypoint coordinates in [-1, 1] for an image of (H, W)."""
    h, w = size
    return (2.0 * np.asarray(pixels, np.float64) / (np.array([w, h]) - 1.0) - 1.0).astype(np.float32)


UPPER_LIP, LOWER_LIP = ANCHOR_NAMES.index('upper_lip'), ANCHOR_NAMES.index('lower_lip')
LIDS = tuple(ANCHOR_NAMES.index(n) for n in ('right_upper_lid', 'right_lower_lid', 'left_upper_lid', 'left_lower_lid'))


def mouth_gap(targets: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """(...,) distance between the inner upper and lower lip of (..., A, 2) anchors (NaN where no face was found):
    a NumPy array for landmark targets, a differentiable tensor for anchors a network read."""
    if isinstance(targets, torch.Tensor):
        return (targets[..., UPPER_LIP, :] - targets[..., LOWER_LIP, :]).norm(dim=-1)
    t = np.asarray(targets, np.float32)
    return np.linalg.norm(t[..., UPPER_LIP, :] - t[..., LOWER_LIP, :], axis=-1)


def eye_distance(anchors: torch.Tensor) -> torch.Tensor:
    """(...,) distance between the two eyes' lid centres of (..., A, 2) anchors: the face's size, for adapt-scale."""
    right = anchors[..., list(LIDS[:2]), :].mean(-2)
    left = anchors[..., list(LIDS[2:]), :].mean(-2)
    return (right - left).norm(dim=-1)


def mirror(targets: np.ndarray) -> np.ndarray:
    """Targets (..., A, 2) of a horizontally flipped image: x negated, mirror twins swapped."""
    flipped = np.array(targets, dtype=np.float32, copy=True)[..., list(MIRROR), :]
    flipped[..., 0] *= -1.0
    return flipped


def clip_targets(landmarker, frames: np.ndarray) -> np.ndarray:
    """(T, A, 2) keypoint-coordinate targets of one clip's frames (T, H, W, 3) uint8; NaN rows: no face."""
    out = np.full((len(frames), len(ANCHORS), 2), np.nan, np.float32)
    for t, frame in enumerate(frames):
        points = landmarker.detect(frame)
        if points is not None:
            out[t] = to_keypoint_coordinates(anchors_from_landmarks(points), frame.shape[:2])
    return out


def _fingerprint(videos: Sequence[Path], size: tuple[int, int]) -> str:
    """What the targets depend on: the anchors, the frame size, each video's name and bytes.

    Content, not modification time: a dataset copied afresh (as ``../shared`` is for each session) keeps its
    cache, and an edited clip is recomputed. Hashing the files costs a fraction of a second per 100 MB.
    """
    h = hashlib.sha256(json.dumps({'version': CACHE_VERSION, 'anchors': ANCHORS, 'size': list(size)}).encode())
    for v in videos:
        h.update(v.name.encode() + b'|')
        files = sorted(p for p in v.rglob('*') if p.is_file()) if v.is_dir() else [v]  # a frame folder, or a file
        for f in files:
            with open(f, 'rb') as stream:  # in chunks: a long video is not read into memory at once
                for chunk in iter(lambda: stream.read(1 << 20), b''):
                    h.update(chunk)
    return h.hexdigest()[:16]


def load_or_compute(videos: Sequence[Path], size: tuple[int, int], cache_dir: str | Path,
                    progress: bool = True) -> dict[str, np.ndarray]:
    """{video name: (T, A, 2) targets} for ``videos`` at ``size`` (H, W), from ``cache_dir`` or computed there.

    The cache file's name holds a fingerprint of the inputs, so a changed dataset or anchor set is recomputed
    rather than mismatched.
    """
    size = (int(size[0]), int(size[1]))
    path = Path(cache_dir) / f'landmark-targets-{size[0]}x{size[1]}-{_fingerprint(videos, size)}.npz'
    if path.is_file():
        with np.load(path) as cached:
            return {name: cached[name] for name in cached.files}
    from ..evaluation.landmarks import FaceLandmarker, LandmarkerUnavailable
    try:
        landmarker = FaceLandmarker()
    except LandmarkerUnavailable as exc:
        raise RuntimeError(f'the landmarks loss needs the face landmark model: {exc}') from exc
    targets: dict[str, np.ndarray] = {}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(videos), desc='face landmarks of the training clips', unit='clip')
    with landmarker:
        for video in videos:
            targets[video.name] = clip_targets(landmarker, read_frames(video, size))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    found = sum(int(np.isfinite(t[:, 0, 0]).sum()) for t in targets.values())
    total = sum(len(t) for t in targets.values())
    log.info('landmark targets: a face in %d of %d frames; cached in %s', found, total, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp.npz')
    np.savez_compressed(tmp, **targets)
    tmp.replace(path)
    return targets


def check_keypoint_indices(indices: Sequence[int], num_kp: int) -> list[int]:
    """``train_params.landmark_keypoints``: one distinct keypoint index per anchor, each below num_kp."""
    return keypoint_indices(indices, len(ANCHORS), num_kp, 'train_params.landmark_keypoints',
                            f'anchor ({", ".join(ANCHOR_NAMES)})')
