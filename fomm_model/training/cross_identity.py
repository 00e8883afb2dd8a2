"""Cross-identity keypoint consistency: a training signal for driving one person's face with another's motion.

The original trains only on pairs from one video, so the generator never learns to open a mouth the source does
not show: across people the avatar's mouth opened about a fifth as far as the driver's (assets/models/MODEL_CARD.md).
Here each batch item's source is also driven by another item's motion, relative to that item's own source frame
as the app's anchor (:class:`~fomm_model.keypoints.RelativeMotion`, adapt-scale on). There is no real frame to
compare with, but the keypoint detector, whose lip and lid keypoints are pulled onto face landmarks, can read the
output back: its keypoints should land where the generator was told to move them. Or, since the generator learnt
to please that detector more than to open the mouth, a separate frozen reader (:mod:`.mouth_reader`) measures the
output's lip gap against the driver's change in Face Mesh's (:func:`mouth_opening_loss`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..keypoints import Keypoints, RelativeMotion
from .landmark_targets import eye_distance, mouth_gap


def other_items(batch_size: int) -> torch.Tensor:
    """For each batch item, the item whose motion drives it: the previous one (a different clip, and with
    ``id_sampling`` most often a different person)."""
    return torch.roll(torch.arange(batch_size), 1)


def relative_keypoints(kp_source: dict, kp_anchor: dict, kp_driving: dict) -> dict:
    """Per batch item, the source keypoints moved by ``kp_driving`` relative to ``kp_anchor``, exactly as the
    app does (adapt-scale and relative jacobians); detached, since they are a target."""
    moved = []
    for b in range(kp_source['value'].shape[0]):
        motion = RelativeMotion(Keypoints.from_torch(kp_source, b), Keypoints.from_torch(kp_anchor, b),
                                adapt_scale=True, relative_jacobian=True)
        moved.append(motion(Keypoints.from_torch(kp_driving, b)))
    ref = kp_source['value']
    out = {'value': torch.from_numpy(np.stack([m.value for m in moved])).to(ref.device, torch.float32)}
    if 'jacobian' in kp_source:
        out['jacobian'] = torch.from_numpy(np.stack([m.jacobian for m in moved])).to(ref.device, torch.float32)
    return out


def cross_targets(kp_source: dict, kp_driving: dict) -> dict:
    """Each batch item's source keypoints moved by the :func:`other_items` item's motion, relative to that item's
    own source keypoints (its anchor): the keypoints the cross-identity output is driven to."""
    other = other_items(kp_source['value'].shape[0]).to(kp_source['value'].device)
    return relative_keypoints(kp_source, {k: v[other] for k, v in kp_source.items()},
                              {k: v[other] for k, v in kp_driving.items()})


def closed_mouth_first(images: tuple[torch.Tensor, torch.Tensor], keypoints: tuple[dict, dict],
                       landmarks: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict, dict, torch.Tensor,
                                                                               torch.Tensor]:
    """Per batch item, its pair's frame with the more closed mouth first: (image, its keypoints, the other frame's
    keypoints, its landmarks, the other's landmarks), from ``images`` / ``keypoints`` / ``landmarks`` given as
    (source, driving) pairs. Where either mouth is unknown the order stays.

    Why: an avatar's mouth is usually closed, and face-128-v5 opens a closed mouth about a quarter as far as the
    driver's while it moves an open one fully (model card, "Closed mouths"); with this order every cross-identity
    item starts from the closed frame and is driven by another item opening its mouth (anchor closed, driving open).
    """
    gap_source, gap_driving = (mouth_gap(t.float()) for t in landmarks)
    swap = torch.nan_to_num(gap_driving, nan=float('inf')) < torch.nan_to_num(gap_source, nan=float('inf'))

    def pick(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return torch.where(swap.view(-1, *([1] * (first.dim() - 1))).to(first.device), second, first)

    kp_closed = {k: pick(keypoints[0][k], keypoints[1][k]) for k in keypoints[0]}
    kp_open = {k: pick(keypoints[1][k], keypoints[0][k]) for k in keypoints[0]}
    return (pick(*images), kp_closed, kp_open, pick(*landmarks), pick(landmarks[1], landmarks[0]))


def frozen_forward(module: nn.Module, *args):
    """``module(*args)`` with gradients to the inputs only: its parameters are detached and its buffers copied,
    so a loss on the output trains what made the inputs, and neither the module's weights nor its batch-norm
    statistics learn from generated images."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    return functional_call(module, {**params, **buffers}, args)


def keypoint_consistency(detected: torch.Tensor, target: torch.Tensor, indices: list[int],
                         centred: bool = False) -> torch.Tensor:
    """Mean L1 between keypoints ``indices`` of (B, K, 2) detected and target values; ``centred`` compares them
    about their own centroid, so only their shape counts (how far the lips part), not where the detector puts the
    group on another person's face."""
    detected, target = detected[:, indices].float(), target[:, indices].float()
    if centred:
        detected = detected - detected.mean(1, keepdim=True)
        target = target - target.mean(1, keepdim=True)
    return torch.abs(detected - target).mean()


def mouth_opening_change(source_landmarks: torch.Tensor, driving_landmarks: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) how far each cross-identity output's lips should part beyond its source's, and (B,) where that is
    known: the :func:`other_items` driver's Face Mesh lip gap minus its anchor's, scaled from the anchor's face to
    the source's by the distance between the eyes (adapt-scale). From the landmark targets of the unpainted frames,
    so painted sources get the same target."""
    other = other_items(source_landmarks.shape[0]).to(source_landmarks.device)
    src, anchor, drv = source_landmarks.float(), source_landmarks[other].float(), driving_landmarks[other].float()
    known = torch.isfinite(torch.stack([src, anchor, drv])).all(-1).all(-1).all(0)
    src, anchor, drv = (torch.nan_to_num(t) for t in (src, anchor, drv))
    scale = eye_distance(src) / eye_distance(anchor).clamp(min=1e-3)
    return (mouth_gap(drv) - mouth_gap(anchor)) * scale, known


def mouth_opening_loss(read_output: torch.Tensor, read_source: torch.Tensor, change: torch.Tensor,
                       known: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the lip gap a frozen reader finds on each output and the one it finds on the source plus
    ``change`` (not below closed), over the items where the change is known. Both gaps come from the same reader,
    so its bias on a face or a painting style cancels."""
    target = (mouth_gap(read_source.detach()) + change).clamp(min=0)
    error = torch.abs(mouth_gap(read_output) - target)
    return error[known].mean() if known.any() else read_output.sum() * 0
