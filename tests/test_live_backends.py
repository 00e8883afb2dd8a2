"""Backends: ONNX matches eager, auto selection explains itself, GPU backends that are missing fail clearly."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from test_live_support import make_checkpoint

from fomm_model.checkpoint import load_checkpoint
from live.backends import BackendError, create_backend, sample_images, verify_backend
from live.backends.torch_backend import TorchBackend

SIZE = (128, 128)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    torch.set_num_threads(1)
    return load_checkpoint('face-128', make_checkpoint(tmp_path_factory.mktemp('ckpt') / 'm.pth.tar', seed=1))


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv('FOMM_LIVE_CACHE', str(tmp_path_factory.getbasetemp() / 'live-cache'))


def test_onnx_matches_eager_and_is_cached(models, tmp_path_factory):
    from live.backends.onnx_backend import OnnxBackend
    onnx = OnnxBackend(models, SIZE, 'key1', threads=1)
    eager = TorchBackend(models, SIZE)
    source, driving = sample_images(SIZE)
    kp_e, kp_o = eager.set_source(source), onnx.set_source(source)
    np.testing.assert_allclose(kp_o.value, kp_e.value, atol=1e-5)
    d_e, d_o = eager.keypoints(driving), onnx.keypoints(driving)
    np.testing.assert_allclose(d_o.value, d_e.value, atol=1e-5)
    np.testing.assert_allclose(d_o.jacobian, d_e.jacobian, atol=1e-4)
    out_e, out_o = eager.generate(d_e), onnx.generate(d_e)
    assert out_o.shape == (128, 128, 3) and out_o.dtype == np.uint8
    assert np.abs(out_o.astype(int) - out_e.astype(int)).max() <= 1
    report = verify_backend(onnx, eager, SIZE)
    assert report['output_max_abs_diff'] <= 1 / 255
    folder = tmp_path_factory.getbasetemp() / 'live-cache' / 'onnx' / 'key1-128x128-opset17'
    mtime = (folder / 'generator.onnx').stat().st_mtime_ns
    OnnxBackend(models, SIZE, 'key1', threads=1)   # second build reuses the export
    assert (folder / 'generator.onnx').stat().st_mtime_ns == mtime


def test_verification_catches_broken_output(models):
    class Broken(TorchBackend):
        def generate(self, kp):
            return np.zeros_like(super().generate(kp))

    with pytest.raises(BackendError, match='black frames'):
        verify_backend(Broken(models, SIZE), TorchBackend(models, SIZE), SIZE)

    class Nan(TorchBackend):
        def keypoints(self, image):
            kp = super().keypoints(image)
            return kp._replace(value=kp.value * np.nan)

    with pytest.raises(BackendError, match='NaN'):
        verify_backend(Nan(models, SIZE), TorchBackend(models, SIZE), SIZE)


def test_auto_on_cpu_picks_the_fastest_and_says_why(models, caplog):
    with caplog.at_level(logging.INFO, logger='live.backends'):
        sel = create_backend('auto', models, SIZE, 'key2', 'cpu')
    assert sel.backend.name in ('torch', 'onnx')
    assert sel.reason.startswith('auto: fastest on cpu')
    assert len(sel.timings_ms) >= 2 and all(v > 0 for v in sel.timings_ms.values())
    assert sel.backend.selection_reason == sel.reason
    assert any('backend:' in r.message for r in caplog.records)
    source, driving = sample_images(SIZE)
    sel.backend.set_source(source)
    assert sel.backend.step(driving).shape == (128, 128, 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the no-GPU error path')
def test_gpu_requests_without_gpu_fail_with_install_hints(models):
    with pytest.raises(BackendError, match='download.pytorch.org'):
        create_backend('torch', models, SIZE, 'k', 'cuda')
    with pytest.raises(BackendError, match='--device cuda'):
        create_backend('tensorrt', models, SIZE, 'k', 'cpu')
    with pytest.raises(BackendError, match='CUDA'):
        create_backend('tensorrt', models, SIZE, 'k', 'cuda')
    from live.backends.tensorrt_backend import _import_trt
    try:
        import torch_tensorrt  # noqa: F401
    except Exception:
        with pytest.raises(BackendError, match='pip install torch-tensorrt'):
            _import_trt()
    with pytest.raises(BackendError, match='float16 needs a CUDA'):
        create_backend('torch', models, SIZE, 'k', 'cpu', 'float16')
    with pytest.raises(BackendError, match='unknown backend'):
        create_backend('openvino', models, SIZE, 'k', 'cpu')


def test_bfloat16_channels_last_passes_verification(models):
    sel = create_backend('torch', models, SIZE, 'k', 'cpu', 'bfloat16', channels_last=True)
    assert sel.backend.describe() == 'torch on cpu (bfloat16, channels_last)'
    assert sel.verification['output_max_abs_diff'] < 0.15


@pytest.mark.slow
def test_torch_compile_backend_matches_eager(models):
    sel = create_backend('compile', models, SIZE, 'k', 'cpu')   # compiles (about a minute on 2 shared cores)
    assert sel.backend.name == 'compile'
    assert sel.verification['output_max_abs_diff'] <= 2 / 255
    source, driving = sample_images(SIZE)
    eager = TorchBackend(models, SIZE)
    eager.set_source(source)
    sel.backend.set_source(source)
    np.testing.assert_allclose(sel.backend.keypoints(driving).value, eager.keypoints(driving).value, atol=1e-5)
