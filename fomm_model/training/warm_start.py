"""Start training from another model's weights, growing the keypoint count where the new config has more.

A grown model starts as the same function as the old one: each new keypoint is a copy of an old keypoint
(its heatmap head plus a little noise to break the symmetry, the same jacobian head), and every weight that
reads a keypoint's channels is split in half between the original and its copy (dense-motion input, the
hourglass skip into the mask and occlusion heads), with the copy's mask logit and the original's both
lowered by log 2, so the softmax gives the pair the original's share. Training then pulls the copies apart.
Copies are made of the lowest keypoints in the face (largest mean y on sample frames): mouth and jaw sit
there, and mouth motion is what a 10-keypoint face model transfers worst.

Besides the keypoint count, a ``scale_factor`` may differ (the dense motion network or keypoint detector
working on a finer or coarser copy of the image): the convolutions do not depend on it, and the anti-aliasing
kernel it fixes is taken from the new config. And the generator may have fewer bottleneck blocks (a faster
model): it keeps the checkpoint's first ones. Each block adds its output to its input, so what is left is still a
working residual network of the same widths, which fine-tuning adapts.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from ..checkpoint import read_checkpoint, strip_prefixes
from ..models import Models
from ..modules.util import AntiAliasInterpolation2d

log = logging.getLogger(__name__)

NOISE = 0.02  # relative std of the noise added to a copied heatmap head


class WarmStartError(RuntimeError):
    """Weights that cannot seed this model (other widths or depths, fewer keypoints)."""


def num_keypoints(kp_state: dict) -> int:
    return int(kp_state['kp.weight'].shape[0])


def lowest_keypoints(kp_detector: torch.nn.Module, frames: torch.Tensor, count: int) -> list[int]:
    """Indices of the ``count`` keypoints with the largest mean y (lowest in the image) on ``frames``."""
    with torch.no_grad():
        was_training = kp_detector.training
        kp_detector.eval()
        mean_y = kp_detector(frames)['value'][..., 1].mean(0)
        kp_detector.train(was_training)
    return [int(i) for i in torch.argsort(mean_y, descending=True)[:count]]


def _grow_kp_detector(state: dict, target: dict, copies: list[int], generator: torch.Generator,
                      noise_std: float) -> dict:
    k_old = num_keypoints(state)
    out = dict(state)
    w, b = state['kp.weight'], state['kp.bias']
    noise = torch.randn((len(copies),) + tuple(w.shape[1:]), generator=generator) * noise_std * w.std()
    out['kp.weight'] = torch.cat([w, w[copies] + noise.to(w.dtype)])
    out['kp.bias'] = torch.cat([b, b[copies]])
    if 'jacobian.weight' in state and target['jacobian.weight'].shape[0] != state['jacobian.weight'].shape[0]:
        if state['jacobian.weight'].shape[0] != 4 * k_old:
            raise WarmStartError('a single shared jacobian map cannot be grown per keypoint')
        rows = [4 * k + i for k in copies for i in range(4)]
        out['jacobian.weight'] = torch.cat([state['jacobian.weight'], state['jacobian.weight'][rows]])
        out['jacobian.bias'] = torch.cat([state['jacobian.bias'], state['jacobian.bias'][rows]])
    return out


def _split_channels(weight: torch.Tensor, groups_old: int, group_size: int, offset: int, copies: list[int]
                    ) -> torch.Tensor:
    """Input channels laid out as ``offset`` others, then ``groups_old`` groups of ``group_size`` (one per
    keypoint, background first): halve each copied group and append its half as the copy's group."""
    w = weight.clone()
    added = []
    for k in copies:
        lo = offset + (k + 1) * group_size  # +1: group 0 is the background
        w[:, lo:lo + group_size] *= 0.5
        added.append(w[:, lo:lo + group_size])
    assert w.shape[1] == offset + groups_old * group_size
    return torch.cat([w] + added, dim=1)


def _grow_generator(state: dict, copies: list[int], k_old: int, channels: int) -> dict:
    out = dict(state)
    prefix = 'dense_motion_network.'
    if prefix + 'mask.weight' not in state:
        return out
    group = channels + 1  # per keypoint: heatmap difference + deformed source
    first = prefix + 'hourglass.encoder.down_blocks.0.conv.weight'
    out[first] = _split_channels(state[first], k_old + 1, group, 0, copies)
    skip = state[prefix + 'mask.weight'].shape[1] - (k_old + 1) * group  # decoder features before the input skip
    for head in ('mask', 'occlusion'):
        key = prefix + head + '.weight'
        if key in state:
            out[key] = _split_channels(state[key], k_old + 1, group, skip, copies)
    mask_w, mask_b = out[prefix + 'mask.weight'], state[prefix + 'mask.bias'].clone()
    rows = [k + 1 for k in copies]
    mask_b[rows] -= math.log(2.0)
    out[prefix + 'mask.weight'] = torch.cat([mask_w, mask_w[rows]])
    out[prefix + 'mask.bias'] = torch.cat([mask_b, mask_b[rows]])
    return out


def warm_start(models: Models, path: str | Path, frames: torch.Tensor | None = None, seed: int = 0,
               noise: float = NOISE) -> dict:
    """Load generator and keypoint-detector weights from ``path`` into ``models`` (discriminator: only if it
    fits), growing the keypoint count when the checkpoint has fewer. Returns a summary for the log."""
    ckpt = read_checkpoint(path)
    kp_state, gen_state = strip_prefixes(ckpt['kp_detector']), strip_prefixes(ckpt['generator'])
    kp_target = models.kp_detector.state_dict()
    k_old, k_new = num_keypoints(kp_state), num_keypoints(kp_target)
    if k_new < k_old:
        raise WarmStartError(f'{path} has {k_old} keypoints, the config {k_new}: a model can only be grown')
    copies: list[int] = []
    if k_new > k_old:
        if k_new - k_old > k_old:
            raise WarmStartError(f'growing {k_old} -> {k_new} keypoints copies each old keypoint at most once')
        old = type(models.kp_detector)(**_kp_params(models, k_old))
        old.load_state_dict(kp_state)
        if frames is None:
            raise WarmStartError('growing the keypoint count needs sample frames to choose the copies')
        copies = lowest_keypoints(old, frames, k_new - k_old)
        gen = torch.Generator().manual_seed(seed)
        kp_state = _grow_kp_detector(kp_state, kp_target, copies, gen, noise)
        gen_state = _grow_generator(gen_state, copies, k_old, models.config['model_params']['common_params']
                                    .get('num_channels', 3))
    gen_state, dropped = _drop_bottleneck_blocks(gen_state, models.generator.state_dict())
    rescaled: list[str] = []
    for name, module, state in (('kp_detector', models.kp_detector, kp_state),
                                ('generator', models.generator, gen_state)):
        target = module.state_dict()
        # an anti-aliasing kernel is fixed by its scale_factor, not learnt: a new scale keeps the new kernel
        fixed = {f'{n}.weight' for n, m in module.named_modules() if isinstance(m, AntiAliasInterpolation2d)}
        for k in [k for k in state if k in fixed and k in target and state[k].shape != target[k].shape]:
            state = {**state, k: target[k]}
            rescaled.append(f'{name}.{k}')
        bad = [f'{k}: {tuple(v.shape)} vs {tuple(target[k].shape)}' for k, v in state.items()
               if k in target and v.shape != target[k].shape]
        missing = [k for k in target if k not in state]
        if bad or missing:
            raise WarmStartError(f'{path}: the {name} weights do not fit this config '
                                 f'({"; ".join((bad + missing)[:4])}): only the keypoint count and scale factors may '
                                 f'differ, and the generator may have fewer bottleneck blocks')
        module.load_state_dict({k: v.to(target[k].dtype) for k, v in state.items()})
    disc = 'not loaded'
    if models.discriminator is not None and 'discriminator' in ckpt:
        try:
            models.discriminator.load_state_dict(strip_prefixes(ckpt['discriminator']))
            disc = 'loaded'
        except RuntimeError:
            disc = 'does not fit (new keypoint count or widths): trained from scratch'
    summary = {'from': str(path), 'keypoints': f'{k_old} -> {k_new}', 'copied_keypoints': copies,
               'rescaled': rescaled, 'dropped_bottleneck_blocks': dropped, 'discriminator': disc}
    log.info('warm start: %s', summary)
    return summary


def _drop_bottleneck_blocks(state: dict, target: dict) -> tuple[dict, list[str]]:
    """The generator ``state`` without the bottleneck blocks the ``target`` generator does not have, and their
    names (``r3``, ...)."""
    def block(key: str) -> str | None:
        return key.split('.')[1] if key.startswith('bottleneck.') else None
    kept = {block(k) for k in target} - {None}
    dropped = sorted({block(k) for k in state} - {None} - kept, key=lambda b: int(b[1:]))
    return {k: v for k, v in state.items() if block(k) not in dropped}, dropped


def _kp_params(models: Models, num_kp: int) -> dict:
    mp = models.config['model_params']
    common = dict(mp['common_params'], num_kp=num_kp)
    common.setdefault('align_corners', True)
    return dict(mp['kp_detector_params'], **common)
