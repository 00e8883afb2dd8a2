"""Every shipped config loads, builds and runs a forward pass at its frame size."""
from __future__ import annotations

import pytest
import torch
from helpers import REPO

from fomm_model import available_configs, build_models, load_config
from fomm_model.config import ConfigError, frame_size

PAPER_CONFIGS = {'vox-256', 'vox-adv-256', 'taichi-256', 'taichi-adv-256', 'fashion-256', 'mgif-256', 'nemo-256',
                 'bair-256', 'ted-256', 'face-128'}


def test_all_paper_configs_are_shipped():
    assert PAPER_CONFIGS <= set(available_configs())


@pytest.mark.parametrize('name', sorted(PAPER_CONFIGS))
@torch.no_grad()
def test_config_builds_and_runs(name):
    torch.manual_seed(0)
    config = load_config(name)
    assert config['model_params']['common_params']['align_corners'] is True
    models = build_models(config).eval()
    h, w = frame_size(config)
    source = torch.rand(1, 3, h, w)
    driving = torch.rand(1, 3, h, w)
    kp_s, kp_d = models.kp_detector(source), models.kp_detector(driving)
    assert kp_s['value'].shape == (1, config['model_params']['common_params']['num_kp'], 2)
    assert kp_s['jacobian'].shape[-2:] == (2, 2)
    out = models.generator(source, kp_source=kp_s, kp_driving=kp_d)
    assert out['prediction'].shape == (1, 3, h, w)
    for key in ('mask', 'sparse_deformed', 'occlusion_map', 'deformed', 'deformation'):
        assert key in out and torch.isfinite(out[key]).all()
    disc_kp = kp_d if config['model_params']['discriminator_params'].get('use_kp') else None
    disc = models.discriminator({'prediction_1': out['prediction']}, kp=disc_kp)
    assert torch.isfinite(disc['prediction_map_1']).all()


def test_config_by_path_and_name_agree(tmp_path):
    from fomm_model.config import resolve_config_path
    path = resolve_config_path('vox-256')
    assert load_config(path) == load_config('vox-256') == load_config('vox-256.yaml')


def test_old_image_shape_key_is_read_as_frame_shape(tmp_path):
    text = resolve_text('taichi-256').replace('frame_shape', 'image_shape')
    (tmp_path / 'old.yaml').write_text(text)
    assert frame_size(load_config(tmp_path / 'old.yaml')) == (256, 256)


def resolve_text(name: str) -> str:
    from fomm_model.config import resolve_config_path
    return resolve_config_path(name).read_text()


def test_a_retired_default_config_name_loads_its_successor(caplog):
    """An installed model recorded with face-128-v4 (the default until 2026-12-03) still loads: same networks."""
    from fomm_model.config import RETIRED_CONFIGS, resolve_config_path
    assert 'face-128-v4' not in available_configs()
    with caplog.at_level('WARNING', logger='fomm_model.config'):
        assert resolve_config_path('face-128-v4') == resolve_config_path(RETIRED_CONFIGS['face-128-v4'])
    assert "config 'face-128-v4' was retired" in caplog.text
    for old, new in RETIRED_CONFIGS.items():    # the successor builds the very networks the retired recipe did
        recorded = load_config(REPO / 'docs' / 'experiments' / f'{old}.yaml')
        assert recorded['model_params'] == load_config(new)['model_params'], old


def test_unknown_config_names_the_shipped_ones():
    with pytest.raises(ConfigError, match='vox-256'):
        load_config('vox-1024')


def test_file_without_model_params_is_rejected(tmp_path):
    (tmp_path / 'bad.yaml').write_text('dataset_params: {}\n')
    with pytest.raises(ConfigError, match='model_params'):
        load_config(tmp_path / 'bad.yaml')
