"""Patch discriminators used by the adversarial (-adv) training configs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .util import kp2gaussian


class DownBlock2d(nn.Module):
    """Discriminator block: 4x4 valid conv (optionally spectral-normed), instance norm, leaky ReLU, pool."""

    def __init__(self, in_features, out_features, norm=False, kernel_size=4, pool=False, sn=False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size)
        if sn:
            self.conv = nn.utils.spectral_norm(self.conv)
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x):
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        if self.pool:
            out = F.avg_pool2d(out, (2, 2))
        return out


class Discriminator(nn.Module):
    """Returns the feature map of every block (for feature matching) and a 1x1-conv prediction map."""

    def __init__(self, num_channels=3, block_expansion=64, num_blocks=4, max_features=512,
                 sn=False, use_kp=False, num_kp=10, kp_variance=0.01, **kwargs):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(num_channels + num_kp * use_kp if i == 0 else min(max_features, block_expansion * (2 ** i)),
                        min(max_features, block_expansion * (2 ** (i + 1))),
                        norm=(i != 0), kernel_size=4, pool=(i != num_blocks - 1), sn=sn)
            for i in range(num_blocks))
        last = self.down_blocks[-1].conv
        self.conv = nn.Conv2d(last.out_channels, out_channels=1, kernel_size=1)
        if sn:
            self.conv = nn.utils.spectral_norm(self.conv)
        self.use_kp = use_kp
        self.kp_variance = kp_variance

    def forward(self, x: torch.Tensor, kp: dict | None = None):
        feature_maps = []
        out = x
        if self.use_kp:
            heatmap = kp2gaussian(kp, x.shape[2:], self.kp_variance).to(x.dtype)
            out = torch.cat([out, heatmap], dim=1)
        for down_block in self.down_blocks:
            out = down_block(out)
            feature_maps.append(out)
        return feature_maps, self.conv(out)


class MultiScaleDiscriminator(nn.Module):
    """One discriminator per pyramid scale; inputs are ``{'prediction_<scale>': image}``."""

    def __init__(self, scales=(), **kwargs):
        super().__init__()
        self.scales = scales
        self.discs = nn.ModuleDict({str(scale).replace('.', '-'): Discriminator(**kwargs) for scale in scales})

    def forward(self, x: dict, kp: dict | None = None) -> dict:
        out_dict = {}
        for scale, disc in self.discs.items():
            scale = str(scale).replace('-', '.')
            feature_maps, prediction_map = disc(x['prediction_' + scale], kp)
            out_dict['feature_maps_' + scale] = feature_maps
            out_dict['prediction_map_' + scale] = prediction_map
        return out_dict
