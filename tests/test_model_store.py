"""Installed models (fomm_model.model_store) and ``fomm models``: install only what loads, list, use by name,
remove; a bad file leaves the folder as it was."""
from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from helpers import make_checkpoint

from fomm_model.cli import main as fomm_main
from fomm_model.defaults import DEFAULT_CONFIG, resolve_model
from fomm_model.model_store import (
    MODELS_DIR_ENV,
    ModelStoreError,
    file_sha256,
    find_model,
    install,
    list_models,
    models_dir,
    remove,
)


@pytest.fixture()
def store(tmp_path, monkeypatch):
    folder = tmp_path / 'models'
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    return folder


@pytest.fixture(scope='module')
def v5_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp('ckpt') / 'my-v5.pth.tar', 'face-128-v6')


def test_models_dir_follows_the_environment_and_the_platform(store, monkeypatch, tmp_path):
    assert models_dir() == store
    monkeypatch.delenv(MODELS_DIR_ENV)
    monkeypatch.setenv('XDG_DATA_HOME', str(tmp_path / 'data'))
    monkeypatch.setattr('sys.platform', 'linux')
    assert models_dir() == tmp_path / 'data' / 'fomm-live' / 'models'
    monkeypatch.setattr('sys.platform', 'win32')
    monkeypatch.setenv('LOCALAPPDATA', str(tmp_path / 'local'))
    assert models_dir() == tmp_path / 'local' / 'fomm-live' / 'models'


def test_install_list_use_by_name_and_remove(store, v5_checkpoint):
    assert [e.name for e in list_models()] == [DEFAULT_CONFIG]        # the bundled model, even with no folder
    entry = install(v5_checkpoint)
    assert (entry.name, entry.config, entry.size) == ('my-v5', 'face-128-v6', v5_checkpoint.stat().st_size)
    assert entry.path == store / 'my-v5.pth.tar' and file_sha256(entry.path) == file_sha256(v5_checkpoint)
    sidecar = json.loads((store / 'my-v5.json').read_text())
    assert sidecar['sha256'] == entry.sha256 and sidecar['config'] == 'face-128-v6'
    assert 'only config' in sidecar['config_reason'] and sidecar['source'] == str(v5_checkpoint.resolve())
    listed = list_models()
    assert [e.name for e in listed] == [DEFAULT_CONFIG, 'my-v5'] and listed[0].bundled
    assert resolve_model(None, 'my-v5') == ('face-128-v6', entry.path)     # by name, config from the sidecar
    # the same content again is refused, under any name; nothing new appears
    with pytest.raises(ModelStoreError, match='already installed as "my-v5"'):
        install(v5_checkpoint, name='other')
    assert sorted(p.name for p in store.iterdir()) == ['my-v5.json', 'my-v5.pth.tar']
    # another file with the same name gets a free one
    second = install(make_checkpoint(store.parent / 'my-v5.pth.tar', 'face-128-v6', seed=1))
    assert second.name == 'my-v5-2'
    assert remove('my-v5').name == 'my-v5'
    assert [e.name for e in list_models()] == [DEFAULT_CONFIG, 'my-v5-2'] and find_model('my-v5') is None
    assert sorted(p.name for p in store.iterdir()) == ['my-v5-2.json', 'my-v5-2.pth.tar']
    with pytest.raises(ModelStoreError, match='cannot be removed'):
        remove(DEFAULT_CONFIG)
    with pytest.raises(ModelStoreError, match='no installed model "nope"; installed: my-v5-2'):
        remove('nope')


def test_the_bundled_model_is_not_installed_twice(store):
    bundled = list_models()[0]
    if not bundled.path.is_file():
        pytest.skip('the bundled model is not trained yet')
    with pytest.raises(ModelStoreError, match=f'already installed as "{DEFAULT_CONFIG}"'):
        install(bundled.path)


def _bad_files(tmp_path):
    truncated = tmp_path / 'truncated.pth.tar'
    truncated.write_bytes(make_checkpoint(tmp_path / 'full.pth.tar').read_bytes()[:5000])
    unsafe = tmp_path / 'unsafe.pth.tar'
    unsafe.write_bytes(pickle.dumps({'generator': {}, 'kp_detector': {}, 'x': print}, protocol=2))
    odd = make_checkpoint(tmp_path / 'odd.pth.tar')
    ckpt = torch.load(odd, weights_only=True)
    ckpt['kp_detector']['kp.weight'] = torch.zeros(7, 32, 7, 7)
    torch.save(ckpt, odd)
    return {'truncated': (truncated, 'truncated, corrupt'), 'unsafe': (unsafe, 'as unsafe'),
            'odd': (odd, 'fits none of the known configs'), 'missing': (tmp_path / 'none.pth.tar', 'no such file')}


def test_files_that_do_not_load_are_refused_and_nothing_is_copied(store, tmp_path):
    store.mkdir()
    for name, (path, message) in _bad_files(tmp_path).items():
        with pytest.raises(ModelStoreError, match=message):
            install(path)
        assert list(store.iterdir()) == [], name
    assert [e.name for e in list_models()] == [DEFAULT_CONFIG]


def test_a_config_found_beside_the_file_is_kept_with_the_model(store, reference_dir, tmp_path):
    entry = install(reference_dir / 'tiny-128-checkpoint.pth.tar', name='tiny')
    assert entry.config == str(store / 'tiny.yaml')
    assert (store / 'tiny.yaml').read_bytes() == (reference_dir / 'tiny-128.yaml').read_bytes()
    assert resolve_model(None, 'tiny') == (str(store / 'tiny.yaml'), store / 'tiny.pth.tar')
    remove('tiny')
    assert list(store.iterdir()) == []


def test_a_broken_sidecar_or_a_missing_file_is_skipped(store, v5_checkpoint, caplog):
    install(v5_checkpoint)
    (store / 'junk.json').write_text('{not json')
    shutil.copy(store / 'my-v5.json', store / 'gone.json')
    data = json.loads((store / 'gone.json').read_text())
    (store / 'gone.json').write_text(json.dumps({**data, 'name': 'gone', 'file': 'gone.pth.tar'}))
    assert [e.name for e in list_models()] == [DEFAULT_CONFIG, 'my-v5']
    assert 'junk.json: not a readable model description' in caplog.text and 'gone.pth.tar is missing' in caplog.text


def test_fomm_models_command(store, v5_checkpoint, capsys):
    assert fomm_main(['models', 'install', str(v5_checkpoint), '--name', 'mine']) == 0
    assert 'installed "mine" (config face-128-v6' in capsys.readouterr().out
    assert fomm_main(['models']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(DEFAULT_CONFIG) and out[1].startswith('mine ') and 'face-128-v6' in out[1]
    assert out[-1] == f'models folder: {store}'
    assert fomm_main(['models', 'install', str(v5_checkpoint)]) == 2
    assert 'fomm models: error:' in capsys.readouterr().err
    assert fomm_main(['models', 'remove', 'mine']) == 0
    assert fomm_main(['models', 'remove', 'mine']) == 2
    assert 'no installed model "mine"' in capsys.readouterr().err
