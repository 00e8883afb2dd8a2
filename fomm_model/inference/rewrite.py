"""Exact rewrites of the networks for inference: the same function in fewer operations.

:func:`subpixel_up_blocks` replaces each up block (nearest x2 upsampling, 3x3 convolution, batch norm, ReLU)
by convolutions on the low-resolution input. Nearest upsampling repeats every pixel, so each output pixel's
3x3 window covers only 2x2 distinct input pixels: the taps that land on the same input pixel are summed into
one weight, and each of the four output positions in a 2x2 block (its parity) is a 2x2 convolution, put in
place by slicing (eager PyTorch) or depth-to-space (exported graphs: in the order each runtime runs faster,
:attr:`SubpixelUpBlock2d.export_order`). That is 2.25x fewer multiply-adds for
the same result (float32 rounding aside, ~1e-6); on vox-256 the up blocks were a quarter of the per-frame
generator's work. The batch norm (inference statistics) is folded into the convolutions.

:func:`winograd_res_blocks` gives the residual blocks of wide bottlenecks (vox-256: 256 channels at 64x64, 12
3x3 convolutions, two thirds of the per-frame generator) a second exported form: Winograd's F(4x4, 3x3), which
computes each 4x4 output tile from a 6x6 input tile with 36 multiplications per channel pair instead of 144: the
input and output transforms are additions of the tiles' taps and the products are one batched matrix product.
The result differs from the direct convolution by float32 rounding only (~1e-5 of the activations). OpenVINO,
capped at AVX2, ran such a 3x3 convolution in 14.4 ms of layer time instead of 27.2 ms (AMD EPYC Zen 4);
ONNX Runtime ran a whole block 1.2x slower, and narrow layers (the bundled model's 64 channels at 32x32)
were slower everywhere. So eager PyTorch keeps the direct form, only OpenVINO's export takes Winograd's
(``export_onnx(openvino=True, winograd=True)``), and only where :func:`winograd_pays`.

Runners apply them to their own copies of the networks; the float32 reference they are checked against is the
unchanged model, so every runner's agreement check covers the rewrite too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.util import ResBlock2d, UpBlock2d

# which 3x3 kernel rows (columns) each of the two 2x2 taps sums, for output parity 0 and 1:
# parity 0 (output row 2i) reads input rows i-1, i, i; parity 1 (row 2i+1) reads rows i, i, i+1.
_TAPS = {0: torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), 1: torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])}


class SubpixelUpBlock2d(nn.Module):
    """An :class:`~fomm_model.modules.util.UpBlock2d` (eval mode) as 2x2 convolutions on the low-resolution input.

    Two exact forms of the same weights: eager PyTorch runs :meth:`one_convolution`, ONNX export (ONNX Runtime,
    OpenVINO) :meth:`four_convolutions`; each is the faster one where it runs (measured per block, 2 threads).

    ``export_order`` (set by :func:`subpixel_export_order`) is how the exported graph interleaves the four
    parities: ``'CRD'``, stacked per channel and pixel-shuffled (ONNX Runtime: the bundled model's generator
    5% faster than DCR), or ``'DCR'``, concatenated along the channels and moved by depth-to-space in DCR order
    (OpenVINO: 8-10% faster, because it keeps the convolutions' blocked layout where the stack needed four
    reorders; bundled model, 2 threads, AMD EPYC with and without an AVX2 cap)."""

    export_order = 'CRD'

    def __init__(self, block: UpBlock2d):
        super().__init__()
        conv, norm = block.conv, block.norm
        w = conv.weight.detach().float()
        scale = norm.weight.detach().float() / torch.sqrt(norm.running_var.float() + norm.eps)
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros_like(scale)
        bias = (bias - norm.running_mean.float()) * scale + norm.bias.detach().float()
        w = w * scale[:, None, None, None]
        kernels = [torch.einsum('ir,js,ocrs->ocij', _TAPS[a], _TAPS[b], w) for a in (0, 1) for b in (0, 1)]
        self.out_channels = w.shape[0]
        self.weight = nn.Parameter(torch.cat(kernels, 0).to(conv.weight.dtype), requires_grad=False)
        self.bias = nn.Parameter(bias.repeat(4).to(conv.weight.dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return self.four_convolutions(x)
        return self.one_convolution(x)

    def one_convolution(self, x: torch.Tensor) -> torch.Tensor:
        """All four parities in one 2x2 convolution padded on every side, then interleaved by slicing: the
        faster form in eager PyTorch (8-60% faster than :meth:`four_convolutions` on vox-256's up blocks)."""
        y = F.relu(F.conv2d(x, self.weight, self.bias, padding=1))       # (B, 4C, H+1, W+1)
        b, _, h1, w1 = y.shape
        h, w, c = h1 - 1, w1 - 1, self.out_channels
        y = y.reshape(b, 2, 2, c, h1, w1)
        # parity (a, b) of output pixel (2i+a, 2j+b) is conv output (i+a, j+b) of group (a, b)
        rows = [torch.stack([y[:, a, 0, :, a:a + h, 0:w], y[:, a, 1, :, a:a + h, 1:w + 1]], dim=-1)
                for a in (0, 1)]
        return torch.stack(rows, dim=3).reshape(b, c, 2 * h, 2 * w)

    def four_convolutions(self, x: torch.Tensor) -> torch.Tensor:
        """One 2x2 convolution per parity (a, b), each padded on its own sides so that it yields exactly the
        input's size, then depth-to-space: the form exported to ONNX, because OpenVINO runs it 20-35% faster
        than the sliced form (its concat of the slices) and ONNX Runtime runs both alike."""
        c = self.out_channels
        parts = [F.relu(F.conv2d(F.pad(x, (1 - b, b, 1 - a, a)), self.weight[p * c:(p + 1) * c],
                                 self.bias[p * c:(p + 1) * c]))
                 for p, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1)))]
        if self.export_order == 'DCR':
            y = torch.cat(parts, 1)                                       # channel (2a + b) * C + c
            n, _, h, w = y.shape
            return y.reshape(n, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, 2 * h, 2 * w)
        y = torch.stack(parts, dim=2)                                     # (B, C, 4, H, W): channel c*4 + 2a + b
        return F.pixel_shuffle(y.flatten(1, 2), 2)


def rewritable(block: nn.Module) -> bool:
    """An up block this rewrite reproduces exactly: 3x3, padding 1, stride 1, no groups, eval mode."""
    conv = getattr(block, 'conv', None)
    return (isinstance(block, UpBlock2d) and not block.training and conv.kernel_size == (3, 3)
            and conv.padding == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
            and conv.dilation == (1, 1) and block.norm.track_running_stats)


def subpixel_up_blocks(module: nn.Module) -> int:
    """Replace every rewritable up block inside ``module`` (in place); returns how many were replaced."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if rewritable(child):
                setattr(parent, name, SubpixelUpBlock2d(child))
                count += 1
    return count


def subpixel_export_order(module: nn.Module, order: str) -> None:
    """Make every :class:`SubpixelUpBlock2d` inside ``module`` export with parity ``order`` ('CRD' or 'DCR')."""
    if order not in ('CRD', 'DCR'):
        raise ValueError(f'export order must be CRD or DCR, got {order!r}')
    for block in module.modules():
        if isinstance(block, SubpixelUpBlock2d):
            block.export_order = order


# Winograd F(4x4, 3x3) (Lavin & Gray, 2016): input transform B^T d B (6x6 tiles), filter transform G g G^T,
# output transform A^T m A (4x4 tiles); all entries small integers or exact fractions
_WINOGRAD_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
_WINOGRAD_G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                            [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
_WINOGRAD_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
# where the exported Winograd form was measured faster (OpenVINO capped at AVX2, 2 threads, layer time of one
# convolution): 256 channels at 64x64 (vox, bair, taichi) 1.9x faster; 128 at 64x64 1.04x slower; 64 at 32x32
# (the bundled model) 1.55x slower
WINOGRAD_MIN_CHANNELS = 256
WINOGRAD_MIN_TILES = 256


def winograd_pays(x: torch.Tensor, channels: int) -> bool:
    """Whether the exported graph should take the Winograd form for this input: batch 1, a side divisible by 4,
    wide and large enough (``WINOGRAD_MIN_CHANNELS``, ``WINOGRAD_MIN_TILES``)."""
    b, _, h, w = x.shape
    return (b == 1 and h % 4 == 0 and w % 4 == 0 and channels >= WINOGRAD_MIN_CHANNELS
            and (h // 4) * (w // 4) >= WINOGRAD_MIN_TILES)


def _combine(parts: list[torch.Tensor], coefficients: list[float]) -> torch.Tensor:
    """sum(c * p), skipping zero terms and multiplying only where c is not +-1 (the graph stays additions)."""
    out = None
    for c, p in zip(coefficients, parts):
        if c == 0:
            continue
        if out is None:
            out = p if c == 1 else -p if c == -1 else p * c
        else:
            out = out + p if c == 1 else out - p if c == -1 else out + p * c
    return out


def winograd_filters(weight: torch.Tensor) -> torch.Tensor:
    """(36, out, in) transformed 3x3 filters G w G^T, computed in float64."""
    u = torch.einsum('ai,ocij,bj->abco', _WINOGRAD_G, weight.detach().double(), _WINOGRAD_G)
    return u.reshape(36, weight.shape[1], weight.shape[0]).transpose(1, 2).contiguous().float()


def winograd_conv3x3(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 3x3 convolution (stride 1, zero padding 1) of a (1, C, H, W) input, H and W divisible by 4, with
    ``filters`` from :func:`winograd_filters`.

    Tile row t reads padded rows 4t..4t+5: with the rows grouped in fours (a reshape), tap i < 4 is index i of
    group t and taps 4, 5 are indices 0, 1 of group t + 1. OpenVINO runs these indexed reads as jit Gathers,
    1.25x faster over the whole convolution than strided slices (which it runs as reference code)."""
    _, c, h, w = x.shape
    th, tw = h // 4, w // 4
    xp = F.pad(x, (1, 3, 1, 3))[0].reshape(c, th + 1, 4, w + 4)                 # (C, row groups, 4, W+4)
    rows = [xp[:, :th, i] if i < 4 else xp[:, 1:, i - 4] for i in range(6)]      # (C, th, W+4) each
    v = []
    for r in (_combine(rows, _WINOGRAD_BT[a]) for a in range(6)):
        g = r.reshape(c, th, tw + 1, 4)
        cols = [g[:, :, :tw, j] if j < 4 else g[:, :, 1:, j - 4] for j in range(6)]
        v.extend(_combine(cols, _WINOGRAD_BT[b]) for b in range(6))             # (C, th, tw): tile entry (a, b)
    m = torch.matmul(filters, torch.stack(v).reshape(36, c, th * tw))            # (36, O, th*tw)
    m = list(m.reshape(36, -1, th, tw).unbind(0))
    s = [[_combine(m[b::6], _WINOGRAD_AT[p]) for b in range(6)] for p in range(4)]   # rows of A^T m
    y = torch.stack([_combine(s[p], _WINOGRAD_AT[q]) for p in range(4) for q in range(4)])  # (16, O, th, tw)
    o = y.shape[1]
    y = y.reshape(4, 4, o, th, tw).permute(2, 3, 0, 4, 1).reshape(1, o, h, w)   # pixel (4i+p, 4j+q)
    return y + bias[None, :, None, None]


class WinogradResBlock2d(nn.Module):
    """A :class:`~fomm_model.modules.util.ResBlock2d` (eval mode) whose ONNX export computes both convolutions
    in Winograd's F(4x4, 3x3) form where :func:`winograd_pays`, with the second batch norm folded into the first
    convolution; eager calls (and narrow or small inputs) run the block unchanged."""

    def __init__(self, block: ResBlock2d):
        super().__init__()
        self.block = block
        norm = block.norm2
        scale = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
        w1 = block.conv1.weight.detach().double() * scale[:, None, None, None]
        b1 = (block.conv1.bias.detach().double() - norm.running_mean.double()) * scale + norm.bias.detach().double()
        self.filters1 = nn.Parameter(winograd_filters(w1), requires_grad=False)
        self.bias1 = nn.Parameter(b1.float(), requires_grad=False)
        self.filters2 = nn.Parameter(winograd_filters(block.conv2.weight), requires_grad=False)
        self.bias2 = nn.Parameter(block.conv2.bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() and winograd_pays(x, self.filters1.shape[1]):
            return self.winograd(x)
        return self.block(x)

    def winograd(self, x: torch.Tensor) -> torch.Tensor:
        out = winograd_conv3x3(F.relu(self.block.norm1(x)), self.filters1, self.bias1)
        return winograd_conv3x3(F.relu(out), self.filters2, self.bias2) + x


def winograd_rewritable(block: nn.Module) -> bool:
    """A residual block with 3x3 convolutions (padding 1, stride 1, no groups), in eval mode."""
    convs = (getattr(block, 'conv1', None), getattr(block, 'conv2', None))
    return (isinstance(block, ResBlock2d) and not block.training and block.norm2.track_running_stats
            and all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) and c.groups == 1
                    and c.dilation == (1, 1) and c.bias is not None and c.padding_mode == 'zeros' for c in convs))


def winograd_res_blocks(module: nn.Module) -> int:
    """Wrap every rewritable residual block inside ``module`` (in place); returns how many were wrapped."""
    count = 0
    for parent in list(module.modules()):
        if isinstance(parent, WinogradResBlock2d):   # already wrapped
            continue
        for name, child in list(parent.named_children()):
            if winograd_rewritable(child):
                setattr(parent, name, WinogradResBlock2d(child))
                count += 1
    return count
