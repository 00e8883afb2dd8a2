"""Frozen pretrained feature networks for the perceptual loss: VGG19 (original) or MTCNN's ONet (offline fallback).

torchvision's ImageNet VGG19 (``vgg19-dcbb9e9d.pth``) is what the original uses, but it is downloaded at run time,
which is impossible offline. It is loaded from a local file when one is given or cached. Otherwise the only real
pretrained CNN we found that installs from PyPI with its weights inside the wheel, in torch format, is the
MTCNN ONet of ``facenet-pytorch`` (MIT; a face CNN, 4 conv stages). It is extracted once from the wheel into the
user cache (``python -m fomm_model.training.perceptual --fetch``). Random features are never used.
"""
from __future__ import annotations

import logging
import os
import sys
from importlib.util import find_spec
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

VGG19_FILE = 'vgg19-dcbb9e9d.pth'
VGG19_ENV = 'FOMM_VGG19_WEIGHTS'
ONET_ENV = 'FOMM_MTCNN_ONET_WEIGHTS'
ONET_WHEEL = 'facenet-pytorch==2.6.0'
ONET_MEMBER = 'facenet_pytorch/data/onet.pt'
# torchvision vgg19 'features' layout: conv widths, 'M' = max pool
VGG19_CFG = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
             512, 512, 512, 512, 'M']
VGG19_SLICES = [(0, 2), (2, 7), (7, 12), (12, 21), (21, 30)]  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1


class PerceptualWeightsError(RuntimeError):
    """No pretrained perceptual network is available; the message says how to provide one."""


def _cache_dir() -> Path:
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache').expanduser()


def default_vgg19_path() -> Path:
    return Path(os.environ.get('TORCH_HOME') or _cache_dir() / 'torch') / 'hub' / 'checkpoints' / VGG19_FILE


def onet_cache_path() -> Path:
    return _cache_dir() / 'fomm-live' / 'mtcnn-onet.pt'


HOW_TO = (f"Provide ImageNet VGG19 weights (torchvision's {VGG19_FILE}) with --vgg_weights PATH, ${VGG19_ENV}, or at "
          f"{default_vgg19_path()}; or fetch the offline fallback (MTCNN ONet from the {ONET_WHEEL} wheel on PyPI) "
          f"with: python -m fomm_model.training.perceptual --fetch")


class Vgg19(nn.Module):
    """torchvision's VGG19 ``features`` (same ``features.N.weight`` keys), returning relu1_1..relu5_1."""

    name = 'vgg19'
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in VGG19_CFG:
            if v == 'M':
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)
        self.register_buffer('mean_', torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std_', torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (x - self.mean_) / self.std_
        for a, b in VGG19_SLICES:
            h = self.features[a:b](h)
            out.append(h)
        return out


class ONet(nn.Module):
    """The conv trunk of MTCNN's ONet (facenet-pytorch key names), returning its 4 PReLU activations.

    Deeper stages are dropped when the input is too small for them (tiny pyramid levels).
    """

    name = 'mtcnn-onet'

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x * 255.0 - 127.5) * 0.0078125  # MTCNN's input normalisation
        stages = [(None, self.conv1, self.prelu1), (self.pool1, self.conv2, self.prelu2),
                  (self.pool2, self.conv3, self.prelu3), (self.pool3, self.conv4, self.prelu4)]
        out = []
        for pool, conv, act in stages:
            if pool is not None:
                if min(h.shape[-2:]) < pool.kernel_size:
                    break
                h = pool(h)
            if min(h.shape[-2:]) < conv.kernel_size[0]:
                break
            h = act(conv(h))
            out.append(h)
        return out


def _freeze(net: nn.Module) -> nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_vgg19(path: str | Path) -> Vgg19:
    """VGG19 from a torchvision-format state dict (``features.N.*``; ``classifier.*`` ignored)."""
    path = Path(path)
    if not path.is_file():
        raise PerceptualWeightsError(f"VGG19 weights not found: {path}. {HOW_TO}")
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise PerceptualWeightsError(f"cannot read VGG19 weights {path}: {exc}. {HOW_TO}") from exc
    state = {k: v for k, v in state.items() if k.startswith('features.')}
    net = Vgg19()
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PerceptualWeightsError(f"{path} is not a torchvision VGG19 state dict (missing {missing[:3]}, "
                                     f"unexpected {unexpected[:3]}). {HOW_TO}")
    return _freeze(net)


def find_onet_weights() -> Path | None:
    """ONet weights: ``$FOMM_MTCNN_ONET_WEIGHTS``, an installed facenet_pytorch, or the user cache."""
    env = os.environ.get(ONET_ENV)
    if env:
        return Path(env)
    spec = find_spec('facenet_pytorch')  # locates the package without importing it (it needs torchvision)
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / 'data' / 'onet.pt'
            if p.is_file():
                return p
    cached = onet_cache_path()
    return cached if cached.is_file() else None


def load_onet(path: str | Path) -> ONet:
    path = Path(path)
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise PerceptualWeightsError(f"cannot read MTCNN ONet weights {path}: {exc}. {HOW_TO}") from exc
    net = ONet()
    trunk = {k: v for k, v in state.items() if k.split('.')[0] in dict(net.named_children())}
    try:
        net.load_state_dict(trunk, strict=True)
    except RuntimeError as exc:
        raise PerceptualWeightsError(f"{path} is not facenet-pytorch's onet.pt ({exc}). {HOW_TO}") from exc
    return _freeze(net)


def fetch_onet(force: bool = False, quiet: bool = False) -> Path:
    """Extract ONet's weights from the facenet-pytorch wheel (PyPI, no dependencies installed) into the cache."""
    dest = onet_cache_path()
    if dest.is_file() and not force:
        return dest
    from ..wheel_files import WheelFetchError, extract_from_wheel
    try:
        extract_from_wheel(ONET_WHEEL, 'facenet_pytorch-*.whl', ONET_MEMBER, dest)
    except WheelFetchError as exc:
        raise PerceptualWeightsError(str(exc)) from exc
    load_onet(dest)  # validate
    if not quiet:
        print(f"MTCNN ONet weights saved to {dest}")
    return dest


def load_perceptual_net(kind: str = 'auto', vgg_weights: str | Path | None = None) -> nn.Module:
    """A frozen pretrained feature net. ``kind``: 'vgg19', 'onet' or 'auto' (VGG19 if its weights are found,
    else ONet). Raises PerceptualWeightsError with instructions when neither is available."""
    if kind not in ('auto', 'vgg19', 'onet'):
        raise ValueError(f"perceptual net must be auto, vgg19 or onet, not {kind!r}")
    if kind in ('auto', 'vgg19'):
        path = vgg_weights or os.environ.get(VGG19_ENV) or default_vgg19_path()
        if vgg_weights or os.environ.get(VGG19_ENV) or Path(path).is_file() or kind == 'vgg19':
            return load_vgg19(path)
    path = find_onet_weights()
    if path is None or not Path(path).is_file():
        raise PerceptualWeightsError(f"no pretrained network for the perceptual loss. {HOW_TO}")
    if kind == 'auto':
        log.warning("VGG19 ImageNet weights not found; the perceptual loss uses MTCNN's ONet (%s) instead. %s",
                    path, 'For the original loss pass --vgg_weights PATH.')
    return load_onet(path)


def _main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description='Fetch the offline perceptual-loss network (MTCNN ONet weights).')
    p.add_argument('--fetch', action='store_true', help='download facenet-pytorch wheel and extract onet.pt')
    p.add_argument('--force', action='store_true')
    args = p.parse_args(argv)
    if args.fetch:
        fetch_onet(force=args.force)
    else:
        p.print_help()
    return 0


if __name__ == '__main__':
    sys.exit(_main())
