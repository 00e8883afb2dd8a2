"""The exact inference rewrite (sub-pixel up blocks) computes what the original up blocks compute, alone and
inside the bundled model, and the runners that use it still agree with the unchanged model."""
from __future__ import annotations

import copy

import pytest
import torch

from fomm_model.inference.graphs import FrameGenerator, KeypointGraph, prepare_source
from fomm_model.inference.rewrite import SubpixelUpBlock2d, rewritable, subpixel_export_order, subpixel_up_blocks
from fomm_model.inference.torch_runner import TorchRunner
from fomm_model.modules.util import UpBlock2d

from helpers import load_bundled, skip_unless_installed



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
    dcr = copy.deepcopy(rewritten)
    subpixel_export_order(dcr, 'DCR')
    with torch.no_grad():
        expected = block(x)
        forms = {'eager': rewritten(x), 'one': rewritten.one_convolution(x), 'four': rewritten.four_convolutions(x),
                 'four, DCR order': dcr.four_convolutions(x)}
    for form, got in forms.items():   # both exact forms, borders included (zero padding)
        assert got.shape == expected.shape == (2, cout, 2 * h, 2 * w), form
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=form)
    assert torch.equal(forms['eager'], forms['one'])
    assert torch.equal(forms['four'], forms['four, DCR order'])   # the same values, only moved otherwise


def test_onnx_export_takes_the_four_convolution_form(tmp_path):
    import onnx
    x = torch.randn(1, 6, 5, 7)
    torch.onnx.export(SubpixelUpBlock2d(_block(6, 4, seed=3)), (x,), str(tmp_path / 'up.onnx'), opset_version=17,
                      dynamo=False)
    exported = [n.op_type for n in onnx.load(str(tmp_path / 'up.onnx')).graph.node]
    assert exported.count('Conv') == 4 and 'DepthToSpace' in exported and 'Resize' not in exported


def test_openvino_export_interleaves_in_dcr_order_and_its_graph_has_no_reorders_around_it(tmp_path):
    """DCR order: the four parities concatenated along channels, no per-parity unsqueeze; OpenVINO fuses the
    reshape-transpose-reshape into one depth-to-space and its CPU plugin needs no layout change for the concat."""
    import onnx
    pytest.importorskip('openvino')
    from fomm_model.inference.openvino_runner import _import_openvino, compile_config
    x = torch.randn(1, 16, 8, 8)
    block = SubpixelUpBlock2d(_block(16, 16, seed=4))
    compiled, layers = {}, {}
    for order in ('CRD', 'DCR'):
        subpixel_export_order(block, order)
        path = tmp_path / f'up-{order}.onnx'
        torch.onnx.export(block, (x,), str(path), opset_version=17, dynamo=False)
        compiled[order] = _import_openvino().Core().compile_model(str(path), 'CPU', compile_config(2, torch.float32))
        layers[order] = [op.get_rt_info()['layerType'].astype(str) for op in compiled[order].get_runtime_model().get_ops()]
    nodes = onnx.load(str(path)).graph.node
    perms = [list(a.ints) for n in nodes if n.op_type == 'Transpose' for a in n.attribute if a.name == 'perm']
    assert [0, 3, 4, 1, 5, 2] in perms and not any(n.op_type == 'DepthToSpace' for n in nodes)   # (2-D ones: pads)
    assert 'DepthToSpace' in layers['DCR'] and 'Transpose' not in layers['DCR']
    assert layers['DCR'].count('Reorder') < layers['CRD'].count('Reorder')   # 3 against 6 here
    got = compiled['DCR'].create_infer_request().infer({0: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), block.one_convolution(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='CRD or DCR'):
        subpixel_export_order(block, 'dcr')


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


@pytest.mark.parametrize('scale,h,w', [(0.25, 128, 128), (0.25, 30, 17), (0.5, 9, 12), (0.125, 64, 40)])
def test_anti_alias_downscaling_at_the_stride_equals_blur_then_subsample(scale, h, w):
    """The original blurs every pixel, then keeps every 1/scale-th one; the module blurs only those."""
    from fomm_model.modules.util import AntiAliasInterpolation2d
    from fomm_model.reference import with_original_downscaling
    down = AntiAliasInterpolation2d(3, scale)
    original = with_original_downscaling(copy.deepcopy(down))
    x = torch.rand(2, 3, h, w)
    k = down.int_inv_scale
    expected = original(x)
    got = down(x)
    assert type(original).__name__ == 'OriginalAntiAlias'
    assert got.shape == expected.shape == (2, 3, -(-h // k), -(-w // k))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def _res_block(channels: int, seed: int):
    from fomm_model.modules.util import ResBlock2d
    torch.manual_seed(seed)
    block = ResBlock2d(channels, kernel_size=3, padding=1)
    with torch.no_grad():   # batch-norm statistics far from the identity, so folding norm2 is exercised
        for norm in (block.norm1, block.norm2):
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.3, 3.0)
            norm.weight.normal_()
            norm.bias.normal_()
    return block.eval()


@pytest.mark.parametrize('cin,cout,h,w', [(3, 5, 4, 4), (8, 8, 8, 12), (16, 4, 20, 16)])
def test_winograd_convolution_equals_the_direct_one(cin, cout, h, w):
    import torch.nn.functional as F
    from fomm_model.inference.rewrite import winograd_conv3x3, winograd_filters
    torch.manual_seed(cin * h)
    weight, bias, x = torch.randn(cout, cin, 3, 3), torch.randn(cout), torch.randn(1, cin, h, w)
    expected = F.conv2d(x, weight, bias, padding=1)
    got = winograd_conv3x3(x, winograd_filters(weight), bias)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)   # borders included (zero padding)


def test_winograd_res_block_equals_the_block_and_runs_it_unchanged_outside_export():
    from fomm_model.inference.rewrite import WinogradResBlock2d
    block = _res_block(16, seed=2)
    wrapped = WinogradResBlock2d(copy.deepcopy(block))
    x = torch.randn(1, 16, 12, 8)
    with torch.no_grad():
        expected = block(x)
        torch.testing.assert_close(wrapped.winograd(x), expected, atol=1e-4, rtol=1e-4)
        assert torch.equal(wrapped(x), expected)   # eager: the direct form


def test_winograd_only_where_it_was_measured_faster():
    from fomm_model.inference.rewrite import winograd_pays
    assert winograd_pays(torch.empty(1, 256, 64, 64), 256)          # vox-256's bottleneck
    assert not winograd_pays(torch.empty(1, 64, 32, 32), 64)        # the bundled model's: slower there
    assert not winograd_pays(torch.empty(1, 128, 64, 64), 128)      # no faster there
    assert not winograd_pays(torch.empty(1, 256, 32, 32), 256)      # too few tiles
    assert not winograd_pays(torch.empty(2, 256, 64, 64), 256)      # batch
    assert not winograd_pays(torch.empty(1, 256, 64, 66), 256)      # side not divisible by 4


@pytest.mark.parametrize('side,form', [(64, 'winograd'), (32, 'direct')])
def test_exported_res_block_takes_the_measured_form_and_runtimes_agree(tmp_path, side, form):
    import onnx
    import onnxruntime
    from fomm_model.inference.rewrite import WinogradResBlock2d
    block = _res_block(256, seed=5)
    wrapped = WinogradResBlock2d(copy.deepcopy(block)).eval()
    x = torch.randn(1, 256, side, side)
    path = tmp_path / 'block.onnx'
    with torch.no_grad():
        expected = block(x).numpy()
        torch.onnx.export(wrapped, (x,), str(path), opset_version=17, dynamo=False)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert (('MatMul' in ops and 'Conv' not in ops) if form == 'winograd' else ('Conv' in ops and 'MatMul' not in ops))
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert float(abs(got - expected).max()) < 1e-3 * float(abs(expected).max())


def test_openvino_runs_a_wide_generator_in_winograd_form_and_agrees_with_eager(reference_dir, monkeypatch, tmp_path):
    """A vox-like bottleneck (256 channels at 64x64): the OpenVINO graphs take Winograd's form, ONNX Runtime's do
    not, and the OpenVINO runner passes its start-up check against the unchanged model."""
    import onnx
    from fomm_model import build_models, load_config
    from fomm_model.devices import cpu_has_fast_bfloat16
    from fomm_model.inference import create_runner
    from fomm_model.inference.onnx_runner import export_onnx
    from fomm_model.inference.rewrite import WinogradResBlock2d
    skip_unless_installed('openvino')
    monkeypatch.setenv('FOMM_LIVE_CACHE', str(tmp_path))
    config = load_config(reference_dir / 'tiny-128.yaml')
    config['dataset_params']['frame_shape'] = [256, 256, 3]
    config['model_params']['generator_params'].update(block_expansion=64, max_features=256, num_bottleneck_blocks=1)
    torch.manual_seed(0)
    models = build_models(config, with_discriminator=False)
    selection = create_runner(models, (256, 256), 'openvino', 'cpu')
    assert selection.verification['output_max_abs_diff'] <= 1 / 255
    ov_graph = onnx.load(str(selection.runner._paths[1]))
    ort_graph = onnx.load(str(export_onnx(models, (256, 256), 'wide')[1]))
    count = lambda graph, op: sum(n.op_type == op for n in graph.graph.node)
    # the block's two convolutions: two batched products in OpenVINO's graph instead of two Conv nodes
    assert count(ov_graph, 'MatMul') == count(ort_graph, 'MatMul') + 2
    assert count(ov_graph, 'Conv') == count(ort_graph, 'Conv') - 2
    assert not any(isinstance(m, WinogradResBlock2d) for m in models.generator.modules())   # the caller's model
    if cpu_has_fast_bfloat16():   # bfloat16's 8-bit mantissa: the direct form
        bf16 = create_runner(models, (256, 256), 'openvino', 'cpu', dtype='bfloat16').runner
        assert count(onnx.load(str(bf16._paths[1])), 'MatMul') == count(ort_graph, 'MatMul')
        assert selection.runner.images_in_graph and not bf16.images_in_graph   # nor x * 255 + 0.5 in its graph
