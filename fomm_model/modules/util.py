"""Building blocks shared by the keypoint detector, dense motion network and generator.

Attribute names follow the original code so that state dicts (and published checkpoints) load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def keypoint_indices(indices, count: int, num_kp: int, option: str, meaning: str) -> list[int]:
    """``count`` distinct keypoint indices below ``num_kp``, checked for the config ``option`` (``meaning``: what
    the indices stand for, in order), with an error that names the option."""
    indices = [int(i) for i in indices]
    if len(indices) != count:
        raise ValueError(f'{option} needs {count} keypoint indices, one per {meaning}; got {len(indices)}')
    if len(set(indices)) != count or not all(0 <= i < num_kp for i in indices):
        raise ValueError(f'{option} must be distinct indices in 0..{num_kp - 1} (num_kp {num_kp}); got {indices}')
    return indices


def make_coordinate_grid(spatial_size: tuple[int, int], dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """(h, w, 2) grid of (x, y) in [-1, 1] with +-1 at pixel centres (align_corners=True convention)."""
    h, w = spatial_size
    x = torch.arange(w, dtype=dtype, device=device)
    y = torch.arange(h, dtype=dtype, device=device)
    x = 2 * (x / (w - 1)) - 1
    y = 2 * (y / (h - 1)) - 1
    yy = y.view(-1, 1).expand(h, w)
    xx = x.view(1, -1).expand(h, w)
    return torch.stack([xx, yy], dim=2)


def kp2gaussian(kp: dict, spatial_size: tuple[int, int], kp_variance: float) -> torch.Tensor:
    """Unnormalised Gaussian around each keypoint: (..., K, h, w)."""
    mean = kp['value']
    grid = make_coordinate_grid(spatial_size, mean.dtype, mean.device)
    lead = mean.dim() - 1
    grid = grid.view((1,) * lead + grid.shape)
    mean = mean.view(mean.shape[:lead] + (1, 1, 2))
    return torch.exp(-0.5 * ((grid - mean) ** 2).sum(-1) / kp_variance)


def inverse_2x2(m: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of (..., 2, 2) matrices: exportable to ONNX/TensorRT, unlike torch.inverse."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    return inv / det[..., None, None]


def grid_sample_fp32(inp: torch.Tensor, grid: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Bilinear sampling with float32 coordinates and values whatever the network dtype.

    Sampling coordinates in bfloat16 are off by a large fraction of a pixel (0.16 abs error measured on a
    32x32 image); the op is cheap next to the convolutions, so it always runs in float32.
    """
    if inp.dtype == torch.float32 and grid.dtype == torch.float32:
        return F.grid_sample(inp, grid, align_corners=align_corners)
    out = F.grid_sample(inp.float(), grid.float(), align_corners=align_corners)
    return out.to(inp.dtype)


class ResBlock2d(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv twice) that keeps resolution."""

    def __init__(self, in_features, kernel_size, padding):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(in_features, affine=True)
        self.norm2 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x):
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class UpBlock2d(nn.Module):
    """Nearest x2 upsampling, conv, BN, ReLU."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x):
        out = F.interpolate(x, scale_factor=2)
        return F.relu(self.norm(self.conv(out)))


class DownBlock2d(nn.Module):
    """Conv, BN, ReLU, 2x2 average pooling."""

    def __init__(self, in_features, out_features, kernel_size=3, padding=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x):
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    """Conv, BN, ReLU at constant resolution."""

    def __init__(self, in_features, out_features, groups=1, kernel_size=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


class Encoder(nn.Module):
    """Hourglass encoder: returns the input and every down block's output (skip connections)."""

    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(in_features if i == 0 else min(max_features, block_expansion * (2 ** i)),
                        min(max_features, block_expansion * (2 ** (i + 1))), kernel_size=3, padding=1)
            for i in range(num_blocks))

    def forward(self, x):
        outs = [x]
        for down_block in self.down_blocks:
            outs.append(down_block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: upsamples and concatenates the encoder's skips."""

    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        up_blocks = []
        for i in range(num_blocks)[::-1]:
            in_filters = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * (2 ** (i + 1)))
            out_filters = min(max_features, block_expansion * (2 ** i))
            up_blocks.append(UpBlock2d(in_filters, out_filters, kernel_size=3, padding=1))
        self.up_blocks = nn.ModuleList(up_blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, x):
        skips = list(x)
        out = skips.pop()
        for up_block in self.up_blocks:
            out = torch.cat([up_block(out), skips.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net style hourglass used by the keypoint detector and the dense motion network."""

    def __init__(self, block_expansion, in_features, num_blocks=3, max_features=256):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x):
        return self.decoder(self.encoder(x))


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then strided subsampling, so downscaling does not alias.

    The kernel is a registered buffer named ``weight`` because published state dicts contain it.
    """

    def __init__(self, channels, scale):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.ka = kernel_size // 2
        self.kb = self.ka - 1 if kernel_size % 2 == 0 else self.ka
        # computed on the CPU, then moved to the default device: building on the meta device (config detection)
        # then needs no arange decomposition, which would import torch._dynamo (seconds)
        coords = torch.arange(kernel_size, dtype=torch.float32, device='cpu')
        mean = (kernel_size - 1) / 2
        g = torch.exp(-(coords - mean) ** 2 / (2 * sigma ** 2)) if sigma > 0 else torch.ones(kernel_size,
                                                                                            device='cpu')
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        kernel = kernel.view(1, 1, kernel_size, kernel_size).repeat(channels, 1, 1, 1)
        self.register_buffer('weight', kernel.to(torch.get_default_device()))
        self.groups = channels
        self.scale = scale
        self.int_inv_scale = int(1 / scale)

    def forward(self, x):
        if self.scale == 1.0:
            return x
        # blurring at the sampling stride computes only the pixels kept: the same values as blurring every
        # pixel and keeping every int_inv_scale-th one (the original), with int_inv_scale**2 times less work
        # (the live keypoint detector's downscaling went from ~1 ms to ~0.1 ms a frame at 128 px)
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        return F.conv2d(out, weight=self.weight.to(out.dtype), groups=self.groups, stride=self.int_inv_scale)
