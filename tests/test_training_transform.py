"""Equivariance transform: identity parameters warp nothing, known affine jacobians are recovered."""
from __future__ import annotations

import torch

from fomm_model.modules.util import make_coordinate_grid
from fomm_model.training.transform import Transform

torch.set_num_threads(1)


def test_identity_params_give_identity_warp():
    t = Transform(2, sigma_affine=0.0, sigma_tps=0.0, points_tps=5)
    frame = torch.rand(2, 3, 32, 40)
    assert torch.allclose(t.transform_frame(frame), frame, atol=1e-5)
    pts = torch.rand(2, 7, 2) * 2 - 1
    assert torch.allclose(t.warp_coordinates(pts), pts, atol=1e-7)
    eye = torch.eye(2).expand(2, 7, 2, 2)
    assert torch.allclose(t.jacobian(pts), eye, atol=1e-6)


def test_known_affine_jacobian_and_translation():
    t = Transform(1, sigma_affine=0.0)  # no TPS
    a = torch.tensor([[1.1, 0.2], [-0.3, 0.9]])
    t.theta = torch.cat([a, torch.tensor([[0.05], [-0.1]])], 1)[None]
    pts = (torch.rand(1, 5, 2) * 2 - 1).requires_grad_(True)
    warped = t.warp_coordinates(pts)
    assert torch.allclose(warped, pts @ a.T + torch.tensor([0.05, -0.1]), atol=1e-6)
    assert torch.allclose(t.jacobian(pts), a.expand(1, 5, 2, 2), atol=1e-6)


def test_tps_uses_l1_distance_and_same_offset_for_x_and_y():
    t = Transform(1, sigma_affine=0.0, sigma_tps=0.0, points_tps=5)
    t.control_params = torch.zeros(1, 1, 25)
    t.control_params[0, 0, 12] = 1.0  # the centre control point (0, 0)
    p = torch.tensor([[[0.3, -0.4]]])
    r = 0.7  # |0.3| + |-0.4|
    expected = r ** 2 * torch.log(torch.tensor(r + 1e-6))
    assert torch.allclose(t.warp_coordinates(p) - p, expected.expand(1, 1, 2), atol=1e-6)


def test_frame_warp_matches_coordinate_warp_and_jacobian_is_differentiable():
    torch.manual_seed(0)
    t = Transform(2, sigma_affine=0.05, sigma_tps=0.005, points_tps=5)
    # a linear ramp image: sampled value at z is a known function of warp(z)
    h = w = 33
    grid = make_coordinate_grid((h, w))
    ramp = grid.permute(2, 0, 1)[None].repeat(2, 1, 1, 1)  # channels = (x, y)
    out = t.transform_frame(ramp)
    expected = t.warp_coordinates(grid.view(1, -1, 2).repeat(2, 1, 1)).view(2, h, w, 2).permute(0, 3, 1, 2)
    inside = (expected.abs() < 0.95).all(1, keepdim=True).expand_as(out)  # reflection padding elsewhere
    assert torch.allclose(out[inside], expected[inside], atol=1e-4)
    kp = (torch.rand(2, 10, 2) * 1.6 - 0.8).requires_grad_(True)
    jac = t.jacobian(kp)
    assert jac.shape == (2, 10, 2, 2) and jac.requires_grad  # create_graph=True: trainable through
    jac.sum().backward()
    assert kp.grad is not None and torch.isfinite(kp.grad).all()
