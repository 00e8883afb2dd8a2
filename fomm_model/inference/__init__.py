"""Runtimes for the two per-frame graphs (eager / compiled PyTorch, ONNX Runtime, OpenVINO, TensorRT), behind one
small interface (:class:`Runner`), chosen and checked by :func:`create_runner`. The rest of the per-frame work is
:class:`fomm_model.Animator`'s, done once for every runner."""
from .graphs import FrameGenerator, KeypointGraph, SourceInputs
from .runner import EagerPreparer, Runner, RunnerError
from .select import BACKENDS, Selection, create_runner
from .verify import sample_images, time_steps, verify_runner

__all__ = ['BACKENDS', 'EagerPreparer', 'FrameGenerator', 'KeypointGraph', 'Runner', 'RunnerError', 'Selection',
           'SourceInputs', 'create_runner', 'sample_images', 'time_steps', 'verify_runner']
