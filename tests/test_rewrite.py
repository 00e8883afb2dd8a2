"""The exact inference rewrite (sub-pixel up blocks) computes what the original up blocks compute, alone and
inside the bundled model, and the runners that use it still agree with the unchanged model."""
from __future__ import annotations

import copy

import pytest
import torch

from fomm_model.inference.graphs import FrameGenerator, KeypointGraph, prepare_source
from fomm_model.inference.rewrite import SubpixelUpBlock2d, rewritable, subpixel_up_blocks
from fomm_model.inference.torch_runner import TorchRunner
from fomm_model.modules.util import UpBlock2d

from helpers import load_bundled



def _block(cin: int, cout: int, seed: int) -> UpBlock2d:
    torch.manual_seed(seed)
    block = UpBlock2d(cin, cout)
    with torch.no_grad():   # batch-norm statistics far from the identity, so folding them is exercised
        block.norm.running_mean.normal_()
        block.norm.running_var.uniform_(0.3, 3.0)
        block.norm.weight.normal_()
        block.norm.bias.normal_()
    return block.eval()


@pytest.mark.parametrize('cin,cout,h,w', [(3, 2, 1, 1), (8, 5, 7, 9), (16, 16, 12, 4)])
def test_subpixel_up_block_equals_upsample_then_conv(cin, cout, h, w):
    block = _block(cin, cout, seed=cin + h)
    x = torch.randn(2, cin, h, w)
    rewritten = SubpixelUpBlock2d(block)
    with torch.no_grad():
        expected = block(x)
        forms = {'eager': rewritten(x), 'one': rewritten.one_convolution(x), 'four': rewritten.four_convolutions(x)}
    for form, got in forms.items():   # both exact forms, borders included (zero padding)
        assert got.shape == expected.shape == (2, cout, 2 * h, 2 * w), form
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=form)
    assert torch.equal(forms['eager'], forms['one'])


def test_onnx_export_takes_the_four_convolution_form(tmp_path):
    import onnx
    x = torch.randn(1, 6, 5, 7)
    torch.onnx.export(SubpixelUpBlock2d(_block(6, 4, seed=3)), (x,), str(tmp_path / 'up.onnx'), opset_version=17,
                      dynamo=False)
    exported = [n.op_type for n in onnx.load(str(tmp_path / 'up.onnx')).graph.node]
    assert exported.count('Conv') == 4 and 'DepthToSpace' in exported and 'Resize' not in exported


def test_only_blocks_it_reproduces_are_rewritten():
    assert rewritable(_block(4, 4, 0))
    assert not rewritable(_block(4, 4, 0).train())                    # batch statistics in training
    odd = _block(4, 4, 0)
    odd.conv = torch.nn.Conv2d(4, 4, kernel_size=5, padding=2)
    assert not rewritable(odd)


def test_bundled_model_rewritten_computes_the_same_frames():
    models = load_bundled()
    kp, generator = copy.deepcopy(models.kp_detector).eval(), copy.deepcopy(models.generator).eval()
    replaced = subpixel_up_blocks(kp) + subpixel_up_blocks(generator)
    ups = [m for m in list(models.kp_detector.modules()) + list(models.generator.modules()) if isinstance(m, UpBlock2d)]
    assert replaced == len(ups) > 0
    assert not any(isinstance(m, UpBlock2d) for m in list(kp.modules()) + list(generator.modules()))
    torch.manual_seed(1)
    source, driving = torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128)
    outputs = []
    with torch.no_grad():
        for k, g in ((models.kp_detector, models.generator), (kp, generator)):
            graph = KeypointGraph(k).eval()
            prepared = prepare_source(graph, g, source)
            value, jacobian = graph(driving)
            outputs.append((value, FrameGenerator(g).eval()(*prepared, value, jacobian)))
    (ref_kp, ref_out), (got_kp, got_out) = outputs
    torch.testing.assert_close(got_kp, ref_kp, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_out, ref_out, atol=1e-5, rtol=0)


def test_torch_runner_rewrites_its_copy_and_never_the_callers_model():
    models = load_bundled()
    before = sum(isinstance(m, UpBlock2d) for m in models.generator.modules())
    fast = TorchRunner(models)
    assert sum(isinstance(m, UpBlock2d) for m in models.generator.modules()) == before
    assert any(isinstance(m, SubpixelUpBlock2d) for m in fast._generator.modules())
    plain = TorchRunner(models, rewrite=False)
    assert not any(isinstance(m, SubpixelUpBlock2d) for m in plain._generator.modules())
