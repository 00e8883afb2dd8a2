"""uint8 images <-> model tensors: the one conversion every runner's inputs and outputs go through."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def image_to_tensor(image: np.ndarray, size: tuple[int, int], device: torch.device | str = 'cpu',
                    dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """HxWx3 uint8 RGB (or float in [0, 1]) -> (1, 3, H, W) in [0, 1], resized to ``size`` if needed.

    A model-size uint8 image costs one upload and one scaling: the HWC -> NCHW view already has
    channels_last strides, so that layout needs no copy at all."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {arr.shape}')
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device, non_blocking=True).permute(2, 0, 1)[None]
    if tuple(arr.shape[:2]) != tuple(size):
        t = t.float()
        if arr.dtype == np.uint8:
            t = t / 255.0
        t = F.interpolate(t, size=tuple(size), mode='area' if t.shape[2] > size[0] else 'bilinear')
        t = t.to(dtype)
    elif arr.dtype == np.uint8:
        t = t.to(dtype).mul_(1.0 / 255.0)
    else:
        t = t.to(dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) (or (3, H, W)) in [0, 1] -> HxWx3 uint8 RGB."""
    t = t[0] if t.dim() == 4 else t
    out = t.detach().float().clamp(0, 1).mul(255).add_(0.5).to(torch.uint8).permute(1, 2, 0)
    return np.ascontiguousarray(out.cpu().numpy())
