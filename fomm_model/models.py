"""Build the three networks from a config, as the original run.py/demo.py do."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import load_config
from .modules import KPDetector, MultiScaleDiscriminator, OcclusionAwareGenerator


@dataclass
class Models:
    """The networks of one FOMM model. ``discriminator`` is None when not built or not in a checkpoint."""

    kp_detector: KPDetector
    generator: OcclusionAwareGenerator
    discriminator: MultiScaleDiscriminator | None
    config: dict

    def modules(self) -> dict[str, nn.Module]:
        out = {'kp_detector': self.kp_detector, 'generator': self.generator}
        if self.discriminator is not None:
            out['discriminator'] = self.discriminator
        return out

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> 'Models':
        for m in self.modules().values():
            m.to(device=device, dtype=dtype)
        return self

    def eval(self) -> 'Models':
        for m in self.modules().values():
            m.eval()
        return self

    def train(self, mode: bool = True) -> 'Models':
        for m in self.modules().values():
            m.train(mode)
        return self


def common_params(config: dict) -> dict:
    params = dict(config['model_params']['common_params'])
    params.setdefault('align_corners', True)
    return params


def build_models(config: dict | str, with_discriminator: bool = True) -> Models:
    """Instantiate kp detector, generator and (optionally) discriminator from ``config['model_params']``."""
    config = load_config(config)
    mp = config['model_params']
    common = common_params(config)
    kp_detector = KPDetector(**mp['kp_detector_params'], **common)
    generator = OcclusionAwareGenerator(**mp['generator_params'], **common)
    discriminator = None
    if with_discriminator and 'discriminator_params' in mp:
        discriminator = MultiScaleDiscriminator(**mp['discriminator_params'], **common)
    return Models(kp_detector, generator, discriminator, config)
