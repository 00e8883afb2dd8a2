"""Inference backends behind one interface (numpy in/out): eager PyTorch, torch.compile, ONNX Runtime, TensorRT."""
from .base import Backend, BackendError, Keypoints, sample_images, time_steps, verify_backend
from .selection import BACKEND_NAMES, Selection, create_backend

__all__ = ['Backend', 'BackendError', 'Keypoints', 'BACKEND_NAMES', 'Selection', 'create_backend',
           'sample_images', 'time_steps', 'verify_backend']
