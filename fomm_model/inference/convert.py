"""uint8 images <-> model tensors: the one conversion every runner's inputs and outputs go through.

On the CPU the per-frame cases (a model-size uint8 image in, a float32 frame out) are done in NumPy. The
results are bit-identical to the PyTorch expressions they replace, but a few small PyTorch operations right
after a model step wake the step's sleeping OpenMP threads for each operation: 0.2-0.4 ms a frame each way on
a 2-core Xeon, against about 0.1 ms in NumPy (measured inside the live engine, face-128, 128x128).
OpenVINO's float32 graphs compute the same arithmetic themselves (``openvino_runner.uint8_frame_graphs``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SCALE = np.float32(1.0 / 255.0)


def image_to_tensor(image: np.ndarray, size: tuple[int, int], device: torch.device | str = 'cpu',
                    dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """HxWx3 uint8 RGB (or float in [0, 1]) -> (1, 3, H, W) in [0, 1], resized to ``size`` if needed.

    A model-size uint8 image costs one scaling pass: on the CPU in NumPy, elsewhere after a uint8 upload. The
    HWC -> NCHW view already has channels_last strides, so that layout needs no copy at all."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {arr.shape}')
    model_size = tuple(arr.shape[:2]) == tuple(size)
    if model_size and arr.dtype == np.uint8 and torch.device(device).type == 'cpu':
        if channels_last:   # NHWC in memory is the channels_last layout of NCHW
            t = torch.from_numpy(np.multiply(arr, SCALE, dtype=np.float32)).permute(2, 0, 1)[None]
        else:
            t = torch.from_numpy(np.multiply(arr.transpose(2, 0, 1), SCALE, dtype=np.float32, order='C'))[None]
        return t if dtype == torch.float32 else t.to(dtype)
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device, non_blocking=True).permute(2, 0, 1)[None]
    if not model_size:
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
    """(1, 3, H, W) (or (3, H, W)) in [0, 1] -> HxWx3 uint8 RGB (rounded, values outside [0, 1] clipped)."""
    t = t[0] if t.dim() == 4 else t
    t = t.detach()
    if t.device.type != 'cpu':
        t = t.float().clamp(0, 1).mul(255).add_(0.5).to(torch.uint8).cpu()
        return np.ascontiguousarray(t.permute(1, 2, 0).numpy())
    x = (t if t.dtype == torch.float32 else t.float()).numpy()
    y = np.clip(x, 0, 1)                     # the arithmetic in channel-first order, where it is contiguous
    y *= np.float32(255)
    y += np.float32(0.5)
    # each channel cast (truncating) straight into its interleaved place: half the time of a uint8 copy
    # transposed afterwards (0.09 -> 0.04 ms for 128x128)
    out = np.empty(y.shape[1:] + (y.shape[0],), np.uint8)
    for c in range(y.shape[0]):
        out[..., c] = y[c]
    return out
