"""The image <-> tensor conversions: the CPU's NumPy path gives exactly what the plain PyTorch expressions give
(every runner's inputs and outputs go through it, so a difference would change every frame)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fomm_model.inference.convert import image_to_tensor, tensor_to_image
from helpers import AVATAR


def torch_image_to_tensor(image: np.ndarray, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    t = torch.from_numpy(image).permute(2, 0, 1)[None].to(dtype).mul_(1.0 / 255.0)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def torch_tensor_to_image(t: torch.Tensor) -> np.ndarray:
    t = t[0] if t.dim() == 4 else t
    return t.float().clamp(0, 1).mul(255).add_(0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


@pytest.fixture(scope='module')
def photo() -> np.ndarray:
    from PIL import Image
    return np.array(Image.open(AVATAR).convert('RGB').resize((128, 128)))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('channels_last', [False, True])
def test_model_size_uint8_image_becomes_the_same_tensor_as_in_pytorch(photo, dtype, channels_last):
    got = image_to_tensor(photo, (128, 128), 'cpu', dtype, channels_last)
    want = torch_image_to_tensor(photo, dtype, channels_last)
    assert got.dtype == dtype and got.shape == (1, 3, 128, 128)
    assert torch.equal(got, want)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert got.is_contiguous(memory_format=layout)


def test_other_sizes_are_resized_and_scaled(photo):
    big = np.repeat(np.repeat(photo, 2, axis=0), 2, axis=1)   # 256x256: area-downscaled back to the photo
    got = image_to_tensor(big, (128, 128))
    assert torch.allclose(got, torch_image_to_tensor(photo, torch.float32, False), atol=1e-6)


@pytest.mark.parametrize('layout', ['nchw', 'channels_last', 'chw', 'bfloat16'])
def test_frame_becomes_the_same_uint8_image_as_in_pytorch_with_clipping(layout):
    rng = np.random.default_rng(1)
    t = torch.from_numpy(rng.uniform(-0.3, 1.3, (1, 3, 96, 128)).astype(np.float32))
    t[0, 0, 0, :6] = torch.tensor([0.0, 1.0, 0.5 / 255, 254.5 / 255, -1.0, 2.0])   # rounding edges and clipping
    t = {'nchw': t, 'channels_last': t.contiguous(memory_format=torch.channels_last), 'chw': t[0],
         'bfloat16': t.to(torch.bfloat16)}[layout]
    got = tensor_to_image(t)
    assert got.dtype == np.uint8 and got.shape == (96, 128, 3) and got.flags['C_CONTIGUOUS']
    assert np.array_equal(got, torch_tensor_to_image(t))
    if layout == 'nchw':
        assert got[0, :6, 0].tolist() == [0, 255, 1, 255, 0, 255]


def test_round_trip_keeps_every_pixel(photo):
    assert np.array_equal(tensor_to_image(image_to_tensor(photo, (128, 128))), photo)


def _identity_graphs(shape: tuple[int, ...]):
    """An OpenVINO 'keypoint graph' and 'generator' that return their float input: what uint8_frame_graphs adds
    is then all that happens to a frame."""
    from fomm_model.inference.openvino_runner import _import_openvino
    ov = _import_openvino()
    from openvino import opset13 as ops

    def identity(name: str):
        x = ops.parameter(shape, np.float32, name=name)
        return ov.Model([ops.result(ops.multiply(x, ops.constant(np.float32(1))))], [x], name)
    return ov, identity('kp'), identity('generator')


def test_openvino_frame_graphs_convert_exactly_as_numpy_with_clipping(photo):
    pytest.importorskip('openvino')
    from fomm_model.inference.openvino_runner import compile_config, uint8_frame_graphs
    ov, kp, generator = _identity_graphs((1, 3, 96, 128))
    kp_image, generator_image = uint8_frame_graphs(kp, generator)
    assert len(generator.outputs) == 1 and kp.input(0).get_element_type() == ov.Type.f32   # copies: untouched
    core, config = ov.Core(), compile_config(2, torch.float32)
    kp_image, generator_image = (core.compile_model(m, 'CPU', config) for m in (kp_image, generator_image))

    image = np.ascontiguousarray(np.concatenate([photo, photo[:32, :]], 0)[:96])  # 96x128 RGB
    got = kp_image.create_infer_request().infer({0: image[None]})[0]
    assert np.array_equal(got, image_to_tensor(image, (96, 128)).numpy())

    rng = np.random.default_rng(1)
    t = rng.uniform(-0.3, 1.3, (1, 3, 96, 128)).astype(np.float32)
    t[0, 0, 0, :6] = [0.0, 1.0, 0.5 / 255, 254.5 / 255, -1.0, 2.0]   # rounding edges and clipping
    out = generator_image.create_infer_request().infer({0: t})
    assert np.array_equal(out[0], t)                                    # the float frame is still there
    frame = out[1][0]
    assert frame.dtype == np.uint8 and frame.shape == (96, 128, 3)
    assert np.array_equal(frame, tensor_to_image(torch.from_numpy(t)))
    assert frame[0, :6, 0].tolist() == [0, 255, 1, 255, 0, 255]
