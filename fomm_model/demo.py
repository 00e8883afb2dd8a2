"""The original demo.py API (``load_checkpoints``, ``make_animation``) on top of the fast animator."""
from __future__ import annotations

import numpy as np
import torch

from .animation import Animator, tensor_to_image
from .checkpoint import load_checkpoint
from .config import load_config
from .keypoints import pose_distance
from .models import Models


def load_checkpoints(config_path: str, checkpoint_path: str, cpu: bool = False):
    """As the original: returns ``(generator, kp_detector)`` in eval mode (on CUDA unless ``cpu``)."""
    device = 'cpu' if cpu or not torch.cuda.is_available() else 'cuda'
    if not cpu and device == 'cpu':
        raise RuntimeError("CUDA is not available: pass cpu=True to run on the CPU")
    models = load_checkpoint(load_config(config_path), checkpoint_path, device=device, with_discriminator=False)
    return models.generator, models.kp_detector


def find_best_frame(source: np.ndarray, driving: list[np.ndarray], animator: Animator) -> int:
    """Index of the driving frame whose pose best matches the source (model keypoints, scale-normalised)."""
    kp_source = animator.keypoints(source)
    return int(np.argmin([pose_distance(kp_source, animator.keypoints(frame)) for frame in driving]))


def make_animation(source_image: np.ndarray, driving_video: list[np.ndarray], generator, kp_detector,
                   relative: bool = True, adapt_movement_scale: bool = True, cpu: bool = False,
                   config: dict | None = None) -> list[np.ndarray]:
    """Original signature and conventions: float HxWx3 images in [0, 1] in, list of float frames out.

    Runs eagerly in float32 on the networks' device (as the original) on the cached path; the anchor is the
    first driving frame; the lips' motion is not scaled (no mouth gain, as the original).
    """
    device = next(generator.parameters()).device if not cpu else torch.device('cpu')
    h, w = np.asarray(source_image).shape[:2]
    config = config or {'dataset_params': {'frame_shape': [h, w, 3]}}
    animator = Animator(Models(kp_detector, generator, None, config), backend='torch', device=device,
                        dtype=torch.float32, relative=relative, adapt_scale=adapt_movement_scale, mouth_gain=1.0)
    source = np.asarray(source_image)
    animator.set_source(source if source.dtype == np.uint8 else source.astype(np.float32))  # no re-quantising
    predictions = []
    for frame in driving_video:
        frame = np.asarray(frame)
        kp = animator.keypoints(frame if frame.dtype == np.uint8 else frame.astype(np.float32))
        if relative and animator.kp_anchor is None:
            animator.set_anchor(kp)
        prediction = animator.predict(animator.normalize(kp))
        predictions.append(prediction[0].float().permute(1, 2, 0).cpu().numpy())
    return predictions


__all__ = ['load_checkpoints', 'make_animation', 'find_best_frame', 'tensor_to_image']
