"""A frozen teacher generator: a smaller student learns to give what a released model gives.

Why: issue 15 wants the bundled model's step faster, and most of it is the generator's bottleneck blocks. A
generator with fewer blocks, fine-tuned on the usual losses, rebuilt the held-out clips as well as the released
one but followed other people's mouths less closely (model card, "Half the bottleneck"): the rebuilding losses do
not see the cross-identity outputs the app shows, and the reader's term sees only the lip gap. With
``loss_weights.distill`` the student's cross-identity output is pulled towards the teacher's for the same source and
the same (detached) keypoints, so the whole face, not just its lips, keeps the released model's transfer.
"""
from __future__ import annotations

from pathlib import Path

import torch


class TeacherGenerator:
    """A released model's generator, frozen: ``teacher(source, kp_source, kp_driving)`` is its prediction, without
    gradients. Not an ``nn.Module`` on purpose: it must not join the student's parameters, state dict or
    optimiser."""

    def __init__(self, generator: torch.nn.Module):
        self.generator = generator.eval().requires_grad_(False)

    @classmethod
    def load(cls, spec: dict, device: torch.device | str = 'cpu') -> TeacherGenerator:
        """From ``train_params.teacher``: ``{'checkpoint': PATH, 'config': NAME_OR_PATH}``."""
        from ..checkpoint import load_checkpoint
        if not isinstance(spec, dict) or not spec.get('checkpoint') or not spec.get('config'):
            raise ValueError("train_params.teacher needs 'checkpoint' (the released model to learn from) and "
                             f"'config' (its config), got {spec!r}")
        path = Path(spec['checkpoint'])
        if not path.is_file():
            raise FileNotFoundError(f'teacher checkpoint {path} not found')
        models = load_checkpoint(spec['config'], path, with_discriminator=False)
        return cls(models.generator.float().to(device))

    def to(self, device) -> TeacherGenerator:
        self.generator.to(device)
        return self

    def __call__(self, source: torch.Tensor, kp_source: dict, kp_driving: dict) -> torch.Tensor:
        with torch.no_grad():
            return self.generator(source, kp_source=kp_source, kp_driving=kp_driving)['prediction'].float()
