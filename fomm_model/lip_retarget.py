"""Lip retargeting: a small learnt correction of the lip keypoints, from the avatar's keypoints and the lips' motion.

Why (assets/models/MODEL_CARD.md, "Lip retargeting"): from a closed-mouth avatar the face model opens the mouth
fully given a real open-mouthed keypoint configuration, and only part of the way given the avatar's keypoints moved
by another person's change; a scalar gain (:mod:`fomm_model.mouth_gain`) helps but cannot know what this avatar's
mouth needs. As LivePortrait retargets its lips, a small network maps (the avatar's keypoints, the lips' own motion
after the gain) to offsets of the lip keypoints' values and jacobians; it is trained with the face model frozen,
against a separate frozen reader of the generated mouth (:mod:`fomm_model.training.lip_retarget`).

The offsets are zero when the lips do not move (the network's output at zero motion is subtracted), so a closed
anchor still gives the avatar as it is, and head motion, which leaves no lip residual, passes unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

STATE_KEY = 'lip_retargeter'   # where a checkpoint keeps the network's weights, beside the original layout's


class LipRetargeter(nn.Module):
    """(avatar keypoints, lip residual) -> (lip value offsets, lip jacobian offsets).

    Inputs: the avatar's keypoint values (B, K, 2), centred on their mean so that where the crop puts the face
    does not count, its jacobians (B, K, 2, 2) and the mouth keypoints' residual motion (B, M, 2) in the avatar's
    units (adapt-scale and mouth gain applied). Outputs (B, M, 2) and (B, M, 2, 2). The last layer starts at zero:
    an untrained retargeter changes nothing.
    """

    def __init__(self, num_kp: int, num_mouth: int = 4, hidden: int = 128):
        super().__init__()
        self.num_kp, self.num_mouth, self.hidden = int(num_kp), int(num_mouth), int(hidden)
        self.net = nn.Sequential(nn.Linear(self.num_kp * 6 + self.num_mouth * 2, self.hidden), nn.SiLU(),
                                 nn.Linear(self.hidden, self.hidden), nn.SiLU(),
                                 nn.Linear(self.hidden, self.num_mouth * 6))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, source_value: torch.Tensor, source_jacobian: torch.Tensor,
                residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = residual.shape[0]
        value = source_value - source_value.mean(dim=1, keepdim=True)
        avatar = torch.cat([value.reshape(b, -1), source_jacobian.reshape(b, -1)], dim=1)
        moved = self.net(torch.cat([avatar, residual.reshape(b, -1)], dim=1))
        still = self.net(torch.cat([avatar, torch.zeros_like(residual.reshape(b, -1))], dim=1))
        out = (moved - still).view(b, self.num_mouth, 6)
        return out[..., :2], out[..., 2:].reshape(b, self.num_mouth, 2, 2)

    def config(self) -> dict:
        return {'num_kp': self.num_kp, 'num_mouth': self.num_mouth, 'hidden': self.hidden}

    @torch.no_grad()
    def offsets(self, source_value: np.ndarray, source_jacobian: np.ndarray,
                residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NumPy in and out, for :class:`~fomm_model.keypoints.RelativeMotion`: ``residual`` (..., M, 2) for one
        avatar (K, 2) / (K, 2, 2) (or a batch of one); offsets shaped like the residual's leading dimensions."""
        lead = residual.shape[:-2]
        r = torch.from_numpy(np.ascontiguousarray(residual, np.float32)).reshape(-1, self.num_mouth, 2)
        v = torch.from_numpy(np.ascontiguousarray(source_value, np.float32)).reshape(-1, self.num_kp, 2)[:1]
        j = torch.from_numpy(np.ascontiguousarray(source_jacobian, np.float32)).reshape(-1, self.num_kp, 2, 2)[:1]
        dv, dj = self(v.expand(len(r), -1, -1), j.expand(len(r), -1, -1, -1), r)
        return dv.numpy().reshape(lead + (self.num_mouth, 2)), dj.numpy().reshape(lead + (self.num_mouth, 2, 2))

    def state(self) -> dict:
        """What a checkpoint stores under :data:`STATE_KEY`: the sizes and the weights (float32; a few hundred KB)."""
        return {'config': self.config(), 'weights': {k: v.detach().float().clone() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict) -> LipRetargeter:
        net = cls(**state['config'])
        net.load_state_dict({k: v.float() for k, v in state['weights'].items()})
        return net.eval().requires_grad_(False)
