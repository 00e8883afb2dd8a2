"""The model on one server replica: avatar preparation, keypoints and *batched* frame generation.

Plain PyTorch, no Ray: the Serve deployment (:mod:`.server`) calls it on one dedicated thread. Batching works
because every input of the per-frame generator (:class:`~fomm_model.inference.FrameGenerator`), the prepared
avatar included, has a batch dimension: frames of streams with different avatars are concatenated into one
call. The eager torch runner is used (ONNX/TensorRT graphs here are exported with a batch of 1).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fomm_model.config import frame_size
from fomm_model.inference import SourceInputs, create_runner
from fomm_model.inference.convert import image_to_tensor, tensor_to_image
from fomm_model.mouth_gain import default_mouth_gain, mouth_keypoints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    """What ``main.py serve`` passes to every replica (plain values: they travel through Ray)."""
    config: str | None = None
    checkpoint: str | None = None
    device: str = 'cpu'
    dtype: str | None = None
    threads: int = 1              # torch threads per replica (CPU)
    max_batch: int = 8            # frames of concurrent streams in one generator call; 1 = no batching
    batch_wait_ms: float = 3.0    # the longest a frame waits for others to join its batch


@dataclass
class FrameJob:
    source: SourceInputs
    kp_value: np.ndarray      # (1, K, 2) float32, already normalised by the client
    kp_jacobian: np.ndarray   # (1, K, 2, 2)


class ModelWorker:
    """Loads the model once per replica; not thread-safe (the replica calls it from its one torch thread)."""

    def __init__(self, options: ServerOptions):
        from live.model_files import load_model
        from live.options import ModelOptions
        torch.set_num_threads(max(1, options.threads))
        models, self.model_key = load_model(ModelOptions(config=options.config, checkpoint=options.checkpoint))
        self.size = frame_size(models.config)
        self.num_kp = int(models.config['model_params']['common_params']['num_kp'])
        # relative motion (and its mouth gain) is the client's: it learns the model's lip keypoints from here
        self.mouth_keypoints, self.mouth_gain = mouth_keypoints(models.config), default_mouth_gain(models.config)
        self.model_name = (Path(options.checkpoint).name if options.checkpoint else 'bundled face model') + \
            (f' ({options.config})' if options.config else '')
        selection = create_runner(models, self.size, 'torch', options.device, options.dtype)
        self.runner = selection.runner
        self.device = self.runner.device
        self.device_label = describe_device(self.device)
        del models

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        r = self.runner
        return image_to_tensor(image, self.size, r.device, r.dtype, r.channels_last)

    @torch.inference_mode()
    def prepare(self, image: np.ndarray) -> SourceInputs:
        """An avatar (model-size uint8 RGB) -> what the generator needs of it, kept on the device."""
        return self.runner.prepare_source(self._tensor(image))

    @torch.inference_mode()
    def keypoints(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        value, jacobian = self.runner.keypoints(self._tensor(image))
        return value.cpu().numpy(), jacobian.cpu().numpy()

    @torch.inference_mode()
    def generate(self, jobs: list[FrameJob]) -> tuple[list[np.ndarray], float]:
        """One generator call for all ``jobs`` -> (uint8 HxWx3 per job, milliseconds of the call)."""
        t0 = time.perf_counter()
        dev = self.device
        if len(jobs) == 1:
            source = jobs[0].source
        else:
            source = SourceInputs(*(torch.cat(parts) for parts in zip(*(j.source for j in jobs))))
        value = torch.from_numpy(np.concatenate([j.kp_value for j in jobs])).to(dev)
        jacobian = torch.from_numpy(np.concatenate([j.kp_jacobian for j in jobs])).to(dev)
        out = self.runner.generate(source, value, jacobian)
        images = [tensor_to_image(out[i:i + 1]) for i in range(len(jobs))]   # waits for the device
        return images, (time.perf_counter() - t0) * 1000


def describe_device(device: torch.device) -> str:
    """'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu (AMD EPYC (AVX2; ...), 1 torch threads)'."""
    if device.type == 'cuda':
        return f'{device} ({torch.cuda.get_device_name(device)})'
    from fomm_model.devices import describe_cpu
    return f'cpu ({describe_cpu()})'
