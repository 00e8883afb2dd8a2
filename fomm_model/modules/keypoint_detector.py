"""Unsupervised keypoint detector: hourglass -> heatmaps -> soft-argmax keypoints and local jacobians."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .util import AntiAliasInterpolation2d, Hourglass, make_coordinate_grid


class KPDetector(nn.Module):
    """Predicts K keypoints (x, y in [-1, 1]) and a 2x2 jacobian per keypoint.

    Heatmap soft-argmax and jacobian pooling run in float32 whatever the network's dtype, so keypoints
    stay precise under bfloat16/float16 and the outputs are always float32.
    """

    def __init__(self, block_expansion, num_kp, num_channels, max_features, num_blocks, temperature,
                 estimate_jacobian=False, scale_factor=1, single_jacobian_map=False, pad=0, **kwargs):
        super().__init__()
        self.predictor = Hourglass(block_expansion, in_features=num_channels,
                                   max_features=max_features, num_blocks=num_blocks)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=(7, 7), padding=pad)
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * self.num_jacobian_maps,
                                      kernel_size=(7, 7), padding=pad)
            self.jacobian.weight.data.zero_()
            self.jacobian.bias.data.copy_(torch.tensor([1, 0, 0, 1] * self.num_jacobian_maps, dtype=torch.float))
        else:
            self.jacobian = None
        self.temperature = temperature
        self.scale_factor = scale_factor
        if self.scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, self.scale_factor)

    def gaussian2kp(self, heatmap: torch.Tensor) -> dict:
        """Soft-argmax: expected (x, y) under each heatmap."""
        grid = make_coordinate_grid(heatmap.shape[2:], heatmap.dtype, heatmap.device)
        value = (heatmap.unsqueeze(-1) * grid[None, None]).sum(dim=(2, 3))
        return {'value': value}

    def forward(self, x: torch.Tensor) -> dict:
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)
        prediction = self.kp(feature_map).float()
        b, k, h, w = prediction.shape
        heatmap = F.softmax(prediction.reshape(b, k, -1) / self.temperature, dim=2).view(b, k, h, w)
        out = self.gaussian2kp(heatmap)
        if self.jacobian is not None:
            jacobian_map = self.jacobian(feature_map).float().reshape(b, self.num_jacobian_maps, 4, h, w)
            jacobian = (heatmap.unsqueeze(2) * jacobian_map).reshape(b, k, 4, -1).sum(dim=-1)
            out['jacobian'] = jacobian.view(b, k, 2, 2)
        return out
