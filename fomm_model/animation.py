"""Fast animation: the source is prepared once, each driving frame costs keypoints + dense motion + decoder."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import frame_size
from .keypoints import movement_scale, normalize_kp
from .models import Models
from .modules.util import inverse_2x2


class FrameGenerator(nn.Module):
    """Per-frame generator as one tensor-in/tensor-out graph, for torch.compile / ONNX / TensorRT.

    Inputs are the prepared source (image downscaled for dense motion, encoder features, keypoints) and the
    normalised driving keypoints; the output is the prediction. The avatar is an input, not a constant,
    so changing it needs no re-export.
    """

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

    @staticmethod
    def source_inputs(prepared: dict) -> tuple[torch.Tensor, ...]:
        """The first five inputs of :meth:`forward` from ``generator.prepare_source``'s output."""
        dm = prepared.get('dense_motion', {'image': prepared['image']})
        return (prepared['image'], dm['image'], prepared['features'],
                prepared['kp']['value'], prepared['kp']['jacobian'])


def image_to_tensor(image: np.ndarray, size: tuple[int, int], device, dtype=torch.float32,
                    channels_last: bool = False) -> torch.Tensor:
    """HxWx3 uint8 RGB (or float in [0, 1]) -> (1, 3, H, W) in [0, 1], resized to ``size`` if needed."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    t = t.permute(2, 0, 1)[None].float()
    if arr.dtype == np.uint8:
        t = t / 255.0
    if tuple(t.shape[2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode='area' if t.shape[2] > size[0] else 'bilinear', align_corners=None)
    t = t.to(dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> HxWx3 uint8 RGB."""
    return (t[0].detach().float().clamp(0, 1).permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).cpu().numpy()


class Animator:
    """Animate one source image by driving frames, with the source and anchor work cached.

    ``set_source`` runs the keypoint detector and generator encoder once per avatar; ``set_anchor``
    fixes the driving frame that counts as "no motion" (relative mode) and precomputes the adapt-scale
    factor and the anchor jacobian's inverse; ``animate`` then costs keypoints + dense motion + decoder.
    """

    def __init__(self, models: Models, *, relative: bool = True, adapt_scale: bool = True, device='cpu',
                 dtype: torch.dtype = torch.float32, channels_last: bool = False, relative_jacobian: bool = True):
        self.models = models
        self.relative = relative
        self.adapt_scale = adapt_scale
        self.relative_jacobian = relative_jacobian
        self.device = torch.device(device)
        self.dtype = dtype
        self.channels_last = channels_last
        self.size = frame_size(models.config)
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        for m in (models.kp_detector, models.generator):
            m.to(device=self.device, dtype=dtype, memory_format=memory_format).eval()
        self.kp_source = self.prepared = None
        self.kp_anchor = None
        self._scale = 1.0
        self._anchor_jacobian_inv = None

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        return image_to_tensor(image, self.size, self.device, self.dtype, self.channels_last)

    @torch.no_grad()
    def keypoints(self, image: np.ndarray | torch.Tensor) -> dict:
        """Keypoints (float32) of an image or an already converted tensor."""
        x = image if isinstance(image, torch.Tensor) else self.to_tensor(image)
        return self.models.kp_detector(x)

    @torch.no_grad()
    def set_source(self, image: np.ndarray) -> None:
        source = self.to_tensor(image)
        self.kp_source = self.models.kp_detector(source)
        self.prepared = self.models.generator.prepare_source(source, self.kp_source)
        if self.kp_anchor is not None:
            self._update_anchor_cache()

    def set_anchor(self, frame: np.ndarray | dict) -> None:
        """Anchor on a frame (or on keypoints already computed for it)."""
        self.kp_anchor = frame if isinstance(frame, dict) else self.keypoints(frame)
        self._update_anchor_cache()

    def _update_anchor_cache(self) -> None:
        if self.kp_source is not None and self.adapt_scale:
            self._scale = movement_scale(self.kp_source, self.kp_anchor)
        else:
            self._scale = 1.0
        if 'jacobian' in self.kp_anchor:
            self._anchor_jacobian_inv = inverse_2x2(self.kp_anchor['jacobian'])

    def normalize(self, kp_driving: dict) -> dict:
        """Driving keypoints -> keypoints for the source (relative to the anchor when relative mode is on)."""
        if not self.relative:
            return kp_driving
        kp = {'value': (kp_driving['value'] - self.kp_anchor['value']) * self._scale + self.kp_source['value']}
        if 'jacobian' in kp_driving:
            if self.relative_jacobian:
                kp['jacobian'] = kp_driving['jacobian'] @ self._anchor_jacobian_inv @ self.kp_source['jacobian']
            else:
                kp['jacobian'] = kp_driving['jacobian']
        return kp

    @torch.no_grad()
    def animate_keypoints(self, kp_driving: dict) -> torch.Tensor:
        """Prediction tensor (1, 3, H, W) for already detected driving keypoints."""
        if self.prepared is None:
            raise RuntimeError("call set_source() before animate()")
        if self.kp_anchor is None:
            self.set_anchor(kp_driving)
        kp_norm = self.normalize(kp_driving)
        return self.models.generator.forward_prepared(self.prepared, kp_norm, with_visuals=False)['prediction']

    def animate(self, frame: np.ndarray) -> np.ndarray:
        """One driving frame (HxWx3 uint8 RGB) -> animated source (HxWx3 uint8 RGB at the model's size)."""
        return tensor_to_image(self.animate_keypoints(self.keypoints(frame)))

    def reference_animate(self, frame: np.ndarray) -> dict:
        """The original, uncached per-frame path (kp, normalize_kp, full generator) for checks and benchmarks."""
        with torch.no_grad():
            source = self.prepared['image']
            kp_driving = self.keypoints(frame)
            if self.kp_anchor is None:
                self.set_anchor(kp_driving)
            kp_norm = normalize_kp(self.kp_source, kp_driving, self.kp_anchor, self.adapt_scale,
                                   self.relative, self.relative_jacobian)
            return self.models.generator(source, kp_source=self.kp_source, kp_driving=kp_norm)
