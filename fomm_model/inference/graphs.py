"""The two per-frame graphs every runner executes, as plain tensor-in/tensor-out modules.

Exportable (ONNX, TensorRT) and compilable (``torch.compile``): no dicts at the boundary, the avatar is an
input rather than a constant (changing it needs no re-export), and nothing per-avatar is recomputed.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class SourceInputs(NamedTuple):
    """What the generator needs of a prepared avatar: the first five inputs of :class:`FrameGenerator`."""

    image: torch.Tensor        # (B, 3, H, W) the avatar at model size
    down: torch.Tensor         # (B, 3, h, w) downscaled for the dense motion network
    features: torch.Tensor     # (B, C, h', w') encoder output
    kp_value: torch.Tensor     # (B, K, 2) float32
    kp_jacobian: torch.Tensor  # (B, K, 2, 2) float32


class KeypointGraph(nn.Module):
    """The keypoint detector with tuple outputs (value, jacobian); identity jacobians if it has none."""

    def __init__(self, kp_detector: nn.Module):
        super().__init__()
        self.kp_detector = kp_detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.kp_detector(image)
        value = out['value']
        jacobian = out.get('jacobian')
        if jacobian is None:  # a model without jacobians moves like one with identity jacobians
            jacobian = torch.eye(2, dtype=value.dtype, device=value.device).expand(*value.shape[:-1], 2, 2)
        return value, jacobian


class FrameGenerator(nn.Module):
    """Per-frame generator: prepared avatar (:class:`SourceInputs`) + driving keypoints -> prediction."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, source_image: torch.Tensor, source_down: torch.Tensor, source_features: torch.Tensor,
                kp_source_value: torch.Tensor, kp_source_jacobian: torch.Tensor,
                kp_driving_value: torch.Tensor, kp_driving_jacobian: torch.Tensor) -> torch.Tensor:
        g = self.generator
        kp_source = {'value': kp_source_value, 'jacobian': kp_source_jacobian}
        prepared = {'image': source_image, 'features': source_features, 'kp': kp_source}
        if g.dense_motion_network is not None:
            prepared['dense_motion'] = g.dense_motion_network.prepare_downscaled(source_down, kp_source)
        kp_driving = {'value': kp_driving_value, 'jacobian': kp_driving_jacobian}
        return g.forward_prepared(prepared, kp_driving, with_visuals=False)['prediction']


@torch.no_grad()
def prepare_source(kp_graph: nn.Module, generator: nn.Module, image: torch.Tensor) -> SourceInputs:
    """The per-avatar work, once: keypoints, encoder features, the dense-motion network's downscaled source."""
    value, jacobian = kp_graph(image)
    prepared = generator.prepare_source(image, {'value': value, 'jacobian': jacobian})
    down = prepared['dense_motion']['image'] if 'dense_motion' in prepared else image
    return SourceInputs(image, down, prepared['features'], value.float(), jacobian.float())


GENERATOR_INPUTS = ('source_image', 'source_down', 'source_features', 'kp_source_value', 'kp_source_jacobian',
                    'kp_driving_value', 'kp_driving_jacobian')
