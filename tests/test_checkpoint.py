"""Checkpoint loading: original layout, prefixes, weights_only, half precision, atomic saving."""
from __future__ import annotations

import pytest
import torch

from fomm_model import build_models, load_checkpoint, load_config, save_checkpoint
from fomm_model.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    read_checkpoint,
    strip_prefixes,
)


@pytest.fixture(scope='module')
def tiny(reference_dir):
    return load_config(reference_dir / 'tiny-128.yaml'), reference_dir / 'tiny-128-checkpoint.pth.tar'


def test_reference_checkpoint_loads_weights_only(tiny):
    config, path = tiny
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    assert {'generator', 'kp_detector', 'discriminator', 'optimizer_generator', 'epoch'} <= set(ckpt)
    models = load_checkpoint(config, path)
    assert not models.generator.training and models.discriminator is not None
    torch.testing.assert_close(models.kp_detector.state_dict()['kp.weight'], ckpt['kp_detector']['kp.weight'])


def test_prefixed_keys_load(tiny, tmp_path):
    config, path = tiny
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    ckpt['generator'] = {'module.' + k: v for k, v in ckpt['generator'].items()}
    ckpt['kp_detector'] = {'module._orig_mod.' + k: v for k, v in ckpt['kp_detector'].items()}
    del ckpt['discriminator']
    torch.save(ckpt, tmp_path / 'prefixed.pth.tar')
    models = load_checkpoint(config, tmp_path / 'prefixed.pth.tar')
    assert models.discriminator is None
    assert strip_prefixes({'_orig_mod.module.a': 1}) == {'a': 1}


def test_half_checkpoint_round_trip(tiny, tmp_path):
    config, path = tiny
    models = load_checkpoint(config, path)
    save_checkpoint(tmp_path / 'half.pth.tar', models, half=True, include_discriminator=False)
    back = load_checkpoint(config, tmp_path / 'half.pth.tar')
    w = back.generator.final.weight
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, models.generator.final.weight.half().float())
    assert (tmp_path / 'half.pth.tar').stat().st_size < path.stat().st_size / 2


def test_mismatch_names_config_checkpoint_and_keys(tiny, tmp_path):
    config, _ = tiny
    save_checkpoint(tmp_path / 'face.pth.tar', build_models('face-128'))
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(config, tmp_path / 'face.pth.tar')
    message = str(err.value)
    assert 'tiny-128.yaml' in message and 'face.pth.tar' in message
    assert 'checkpoint (' in message and 'config (' in message  # shapes of the first mismatching keys
    assert 'face-128' in message  # names the shipped config that fits


def test_truncated_and_foreign_files(tiny, tmp_path):
    config, path = tiny
    data = path.read_bytes()
    (tmp_path / 'cut.pth.tar').write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match='truncated'):
        read_checkpoint(tmp_path / 'cut.pth.tar')
    torch.save({'state_dict': {}}, tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match='not a first-order-model checkpoint'):
        load_checkpoint(config, tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match='not found'):
        read_checkpoint(tmp_path / 'missing.pth.tar')


def test_release_keeps_only_inference_weights_in_half(tiny, tmp_path):
    from fomm_model.training.release import release
    config, path = tiny
    release(path, tmp_path / 'small.pth.tar')
    ckpt = torch.load(tmp_path / 'small.pth.tar', weights_only=True)
    assert set(ckpt) == {'kp_detector', 'generator', 'epoch'}
    assert ckpt['generator']['final.weight'].dtype == torch.float16
    models = load_checkpoint(config, tmp_path / 'small.pth.tar')
    assert models.discriminator is None and models.generator.final.weight.dtype == torch.float32


class _Code:
    """Pickles as a call of os.system: what a malicious checkpoint carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f'touch {self.marker}',))


def test_code_or_objects_in_a_checkpoint_are_refused_as_unsafe_not_corrupt(tiny, tmp_path):
    import numpy as np

    from fomm_model.checkpoint import UnsafeCheckpointError
    config, path = tiny
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    marker = tmp_path / 'ran'
    torch.save({**ckpt, 'epoch': _Code(marker)}, tmp_path / 'code.pth.tar')
    torch.save({**ckpt, 'epoch': np.zeros(3)}, tmp_path / 'numpy.pth.tar')
    for name, culprit in (('code.pth.tar', 'posix.system'), ('numpy.pth.tar', 'numpy')):
        with pytest.raises(UnsafeCheckpointError) as err:
            load_checkpoint(config, tmp_path / name)
        message = str(err.value)
        assert 'unsafe' in message and culprit in message and 'weights_only' not in message
        assert 'truncated' not in message
    assert not marker.exists()


class _DiskFull:
    def __reduce__(self):
        raise OSError(28, 'No space left on device')


def test_atomic_save_keeps_the_old_file_when_the_save_fails(tmp_path):
    from fomm_model.checkpoint import atomic_save
    from fomm_model.output_paths import temp_files
    path = tmp_path / 'model.pth.tar'
    atomic_save({'a': torch.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match='could not write checkpoint .*No space left on device'):
        atomic_save({'a': torch.zeros(2), 'disk': _DiskFull()}, path)  # fails mid-save
    assert path.read_bytes() == before and not temp_files(tmp_path)
    (tmp_path / 'sub').write_text('a file where the folder should be')
    with pytest.raises(CheckpointError, match='could not write checkpoint'):
        atomic_save({'a': torch.ones(2)}, tmp_path / 'sub' / 'x.pth.tar')
