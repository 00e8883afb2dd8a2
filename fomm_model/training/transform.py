"""Random affine + thin-plate-spline warp used by the equivariance losses (original model.Transform).

Quirks kept on purpose: the TPS kernel uses the L1 distance, r^2 log(r + 1e-6), and adds the same scalar
offset to x and y; the frame is warped with reflection padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd import grad

from ..modules.util import make_coordinate_grid


class Transform:
    """One random warp per batch item: theta = [I|0] + N(0, sigma_affine), TPS weights N(0, sigma_tps)."""

    def __init__(self, bs: int, sigma_affine: float, sigma_tps: float | None = None, points_tps: int | None = None,
                 align_corners: bool = True, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None):
        self.bs = bs
        self.align_corners = align_corners
        noise = torch.randn(bs, 2, 3, generator=generator) * sigma_affine
        self.theta = (noise + torch.eye(2, 3).view(1, 2, 3)).to(device)
        self.tps = sigma_tps is not None and points_tps is not None
        if self.tps:
            self.control_points = make_coordinate_grid((points_tps, points_tps), device=device).view(1, -1, 2)
            self.control_params = (torch.randn(bs, 1, points_tps ** 2, generator=generator) * sigma_tps).to(device)

    def warp_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Map (bs, N, 2) points in [-1, 1] through the warp."""
        theta = self.theta.to(coordinates.dtype).unsqueeze(1)
        transformed = (theta[:, :, :, :2] @ coordinates.unsqueeze(-1) + theta[:, :, :, 2:]).squeeze(-1)
        if self.tps:
            cp = self.control_points.to(coordinates.dtype)
            distances = (coordinates.view(coordinates.shape[0], -1, 1, 2) - cp.view(1, 1, -1, 2)).abs().sum(-1)
            result = distances ** 2 * torch.log(distances + 1e-6) * self.control_params.to(coordinates.dtype)
            transformed = transformed + result.sum(dim=2).view(self.bs, coordinates.shape[1], 1)
        return transformed

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """Warp a (bs, C, H, W) batch: output pixel z samples the input at warp(z)."""
        h, w = frame.shape[2:]
        grid = make_coordinate_grid((h, w), frame.dtype, frame.device).view(1, h * w, 2)
        grid = self.warp_coordinates(grid).view(self.bs, h, w, 2)
        return F.grid_sample(frame, grid, padding_mode='reflection', align_corners=self.align_corners)

    def jacobian(self, coordinates: torch.Tensor) -> torch.Tensor:
        """d warp / d z at each point, (bs, N, 2, 2), by autograd with create_graph=True (it is trained through)."""
        if not coordinates.requires_grad:
            coordinates = coordinates.detach().requires_grad_(True)
        new = self.warp_coordinates(coordinates)
        grad_x = grad(new[..., 0].sum(), coordinates, create_graph=True)[0]
        grad_y = grad(new[..., 1].sum(), coordinates, create_graph=True)[0]
        return torch.stack([grad_x, grad_y], dim=-2)
