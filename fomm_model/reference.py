"""The original per-frame animation step (demo.py's ``make_animation`` loop body), kept as the yardstick.

Every frame it runs the keypoint detector, ``normalize_kp`` (two convex-hull areas) and the full generator
call, source encoder and full-resolution ``deformed`` visualisation included. Tests check the fast path
against it and benchmarks time it; nothing in the product animates with it.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from .config import frame_size
from .inference.convert import image_to_tensor
from .keypoints import normalize_kp
from .models import Models
from .modules.util import AntiAliasInterpolation2d


class OriginalAntiAlias(AntiAliasInterpolation2d):
    """The original's downscaling cost: blur every pixel, then keep every ``int_inv_scale``-th one (the package's
    module blurs only the kept pixels, same values)."""

    def forward(self, x):
        if self.scale == 1.0:
            return x
        out = F.conv2d(F.pad(x, (self.ka, self.kb, self.ka, self.kb)), weight=self.weight.to(x.dtype),
                       groups=self.groups)
        return out[:, :, ::self.int_inv_scale, ::self.int_inv_scale]


def with_original_downscaling(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` (in place) with every anti-alias downscaling computed as the original computes it."""
    for m in module.modules():
        if type(m) is AntiAliasInterpolation2d:
            m.__class__ = OriginalAntiAlias
    return module


class OriginalAnimation:
    """``make_animation`` for one source and anchor, float32 eager, on a private copy of the networks."""

    def __init__(self, models: Models, source: np.ndarray, anchor: np.ndarray, relative: bool = True,
                 adapt_scale: bool = True, device: torch.device | str = 'cpu'):
        self.device = torch.device(device)
        copies = (copy.deepcopy(models.kp_detector), copy.deepcopy(models.generator))
        self.kp_detector, self.generator = (with_original_downscaling(m).to(self.device, torch.float32).eval()
                                            for m in copies)
        self.size = frame_size(models.config)
        self.relative, self.adapt_scale = relative, adapt_scale
        with torch.no_grad():
            self.source = self.to_tensor(source)
            self.kp_source = self.kp_detector(self.source)
            self.kp_initial = self.kp_detector(self.to_tensor(anchor))

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        return image_to_tensor(image, self.size, self.device)

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> dict[str, torch.Tensor]:
        """The generator's full output dict for one driving frame (``prediction`` is the animated frame)."""
        kp_driving = self.kp_detector(self.to_tensor(frame))
        kp_norm = normalize_kp(kp_source=self.kp_source, kp_driving=kp_driving, kp_driving_initial=self.kp_initial,
                               use_relative_movement=self.relative, use_relative_jacobian=self.relative,
                               adapt_movement_scale=self.adapt_scale)
        return self.generator(self.source, kp_source=self.kp_source, kp_driving=kp_norm)
