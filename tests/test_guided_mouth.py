"""Keypoint-guided mouth occlusion (generator_params.mouth_keypoints): the interior the lip keypoints open is
zeroed in the occlusion map, nothing else changes, every runtime computes the same, and exported graphs of the
same weights under another setting are not reused."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml
from helpers import TINY_CONFIG, skip_unless_installed

from fomm_model import build_models
from fomm_model.inference import create_runner
from fomm_model.inference.cache import graph_key
from fomm_model.modules.mouth_interior import mouth_interior

MOUTH = [3, 7, 1, 5]   # upper lip, lower lip, right corner, left corner among the tiny model's 10 keypoints


def _mouth(gap: float, centre=(0.0, 0.4), width: float = 0.4, angle: float = 0.0) -> torch.Tensor:
    """(1, 4, 2) inner-mouth points ``gap`` apart (negative: the lower lip above the upper), rolled by ``angle``."""
    cx, cy = centre
    points = torch.tensor([[0, -gap / 2], [0, gap / 2], [-width / 2, 0], [width / 2, 0]])
    c, s = math.cos(angle), math.sin(angle)
    return (points @ torch.tensor([[c, s], [-s, c]]) + torch.tensor([cx, cy]))[None]


def test_the_interior_opens_with_the_lips_apart_and_not_with_lips_pressed_past_each_other():
    closed = _mouth(0.02)
    area = lambda src, drv: mouth_interior(src, drv, (32, 32))[0].sum().item()
    opened = area(closed, _mouth(0.2))
    expected = math.pi * 0.2 * (0.1 - 0.01) / (2 / 32) ** 2   # pi * a * (b_d - b_s), in cells 2/32 wide
    assert 0.7 * expected < opened < 1.3 * expected, (opened, expected)
    # relative motion can carry a closing driver's lips past each other on a source whose lips touch: shut
    assert area(closed, _mouth(-0.2)) == 0
    assert area(_mouth(-0.05), _mouth(0.0)) == 0
    # a rolled head opens as far
    rolled = area(_mouth(0.02, angle=0.5), _mouth(0.2, angle=0.5))
    assert abs(rolled - opened) < 0.1 * opened, (rolled, opened)


def _tiny_config(mouth_keypoints=MOUTH) -> dict:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    if mouth_keypoints is not None:
        config['model_params']['generator_params']['mouth_keypoints'] = mouth_keypoints
    return config


@pytest.fixture(scope='module')
def guided_and_plain():
    torch.manual_seed(0)
    plain = build_models(_tiny_config(None), with_discriminator=False)
    with torch.no_grad():   # random weights decode everything to ~0.5: make the output react visibly
        plain.generator.final.weight.mul_(20)
    guided = build_models(_tiny_config(), with_discriminator=False)
    guided.kp_detector.load_state_dict(plain.kp_detector.state_dict())
    guided.generator.load_state_dict(plain.generator.state_dict())   # the setting adds no weights
    for models in (guided, plain):
        models.kp_detector.eval(), models.generator.eval()
    return guided, plain


def _opening_lips(kp_source: dict, gap: float) -> dict:
    """The source keypoints with the lip keypoints ``gap`` further apart (upper up, lower down)."""
    value = kp_source['value'].clone()
    value[:, MOUTH[0], 1] -= gap / 2
    value[:, MOUTH[1], 1] += gap / 2
    return {'value': value, 'jacobian': kp_source['jacobian']}


def test_the_generator_zeroes_the_occlusion_map_where_its_lip_keypoints_open(guided_and_plain):
    guided, plain = guided_and_plain
    source = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        kp_source = guided.kp_detector(source)
        kp_source['value'][:, MOUTH] = _mouth(0.02)       # a closed mouth where the lip keypoints are
        kp_driving = _opening_lips(kp_source, 0.25)
        outputs = {name: models.generator(source, kp_driving=kp_driving, kp_source=kp_source)
                   for name, models in (('guided', guided), ('plain', plain))}
        still = guided.generator(source, kp_driving=kp_source, kp_source=kp_source)
        still_plain = plain.generator(source, kp_driving=kp_source, kp_source=kp_source)
    revealed, _ = mouth_interior(kp_source['value'][:, MOUTH], kp_driving['value'][:, MOUTH], (32, 32))
    assert revealed.sum() > 3
    g, p = outputs['guided']['occlusion_map'], outputs['plain']['occlusion_map']
    inside, outside = revealed > 0.99, revealed == 0
    assert torch.all(g[inside] == 0)
    assert torch.equal(g[outside], p[outside])                    # elsewhere the learned map, untouched
    assert (outputs['guided']['prediction'] - outputs['plain']['prediction']).abs().max() > 1e-3
    # lips that do not open: the same output as without the setting
    assert torch.equal(still['prediction'], still_plain['prediction'])


def test_bad_mouth_keypoints_are_a_clear_error():
    with pytest.raises(ValueError, match='mouth_keypoints needs 4 keypoint indices'):
        build_models(_tiny_config([1, 2, 3]), with_discriminator=False)
    for bad in ([1, 1, 2, 3], [1, 2, 3, 10]):
        with pytest.raises(ValueError, match=r'mouth_keypoints must be distinct indices in 0\.\.9'):
            build_models(_tiny_config(bad), with_discriminator=False)
    config = _tiny_config()
    config['model_params']['generator_params']['estimate_occlusion_map'] = False
    with pytest.raises(ValueError, match='needs estimate_occlusion_map'):
        build_models(config, with_discriminator=False)


def test_the_same_weights_under_another_setting_get_another_graph_key(guided_and_plain):
    guided, plain = guided_and_plain
    assert graph_key(guided) != graph_key(plain)
    assert graph_key(guided, 'abc') != graph_key(plain, 'abc')
    assert graph_key(guided) == graph_key(copy.deepcopy(guided))


@pytest.mark.parametrize('backend', ['onnx', 'openvino'])
def test_exported_runtimes_open_the_mouth_as_eager_does(guided_and_plain, backend, tmp_path, monkeypatch):
    skip_unless_installed(backend)
    monkeypatch.setenv('FOMM_LIVE_CACHE', str(tmp_path))
    guided, _ = guided_and_plain
    runner = create_runner(guided, (128, 128), backend, 'cpu').runner
    source = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    prepared = runner.prepare_source(source)
    value = prepared.kp_value.clone()
    value[:, MOUTH] = _mouth(0.02)                         # a closed mouth where the lip keypoints are
    prepared.feeds['kp_source_value'] = value.numpy()
    kp_source = {'value': value, 'jacobian': prepared.kp_jacobian}
    kp_driving = _opening_lips(kp_source, 0.25)
    with torch.no_grad():
        eager = guided.generator(source, kp_driving=kp_driving, kp_source=kp_source)['prediction']
    got = runner.generate(prepared, kp_driving['value'], kp_driving['jacobian'])
    assert float((got.float() - eager).abs().max()) < 1e-4
    closed = runner.generate(prepared, kp_source['value'], kp_source['jacobian'])
    assert float((got.float() - closed.float()).abs().max()) > 1e-3   # the opening reached the exported graph
