"""The frozen teacher generator and the distillation loss (``loss_weights.distill``), on tiny-128 models and two
real face clips."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fomm_model import build_models, load_checkpoint, load_config
from fomm_model.defaults import default_checkpoint_path
from fomm_model.training.dataset import FramesDataset
from fomm_model.training.full_model import GeneratorFullModel
from fomm_model.training.teacher import TeacherGenerator
from fomm_model.training.trainer import Trainer, TrainingError, TrainOptions
from helpers import REPO, TINY_CONFIG, loss_test_config, make_checkpoint


@pytest.fixture(scope='module')
def teacher_spec(tmp_path_factory) -> dict:
    path = make_checkpoint(tmp_path_factory.mktemp('teacher') / 'teacher.pth.tar', TINY_CONFIG, seed=1)
    return {'checkpoint': str(path), 'config': str(TINY_CONFIG)}


def _batch(root, n: int = 2) -> dict:
    data = FramesDataset(root, frame_shape=(128, 128, 3))
    items = [data.get(i % len(data), 0, i) for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in ('source', 'driving')}


def test_the_teacher_is_the_checkpoints_generator_frozen(faces, teacher_spec):
    teacher = TeacherGenerator.load(teacher_spec)
    models = load_checkpoint(teacher_spec['config'], teacher_spec['checkpoint'])
    x = _batch(faces)
    with torch.no_grad():
        kp_s, kp_d = models.kp_detector(x['source']), models.kp_detector(x['driving'])
        expected = models.generator(x['source'], kp_source=kp_s, kp_driving=kp_d)['prediction']
    got = teacher(x['source'], kp_s, kp_d)
    assert torch.allclose(got, expected, atol=1e-6) and not got.requires_grad
    assert not teacher.generator.training and not any(p.requires_grad for p in teacher.generator.parameters())


def test_the_loss_is_zero_for_the_teacher_itself_and_trains_only_the_student(faces, teacher_spec):
    """A student with the teacher's own weights (both in eval mode) scores 0; another student scores > 0, and the
    gradient reaches its generator, never the teacher's."""
    config = loss_test_config(faces, {'distill': 1}, teacher=teacher_spec)
    x = _batch(faces)
    same = load_checkpoint(teacher_spec['config'], teacher_spec['checkpoint'])
    full = GeneratorFullModel(same.kp_detector, same.generator, None, config['train_params']).eval()
    losses, _ = full(x)
    assert losses['distill'].item() < 1e-6

    torch.manual_seed(5)
    other = build_models(config, with_discriminator=False)
    full = GeneratorFullModel(other.kp_detector, other.generator, None, config['train_params']).eval()
    losses, _ = full(x)
    assert losses['distill'].item() > 1e-3
    losses['distill'].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in other.generator.parameters())
    assert all(p.grad is None for p in full.teacher.generator.parameters())
    # the teacher is no part of the trained model: not in its parameters nor in its state dict (the checkpoint)
    assert not {id(p) for p in full.teacher.generator.parameters()} & {id(p) for p in full.parameters()}
    assert not any(k.startswith('teacher') for k in full.state_dict())


def test_training_with_the_loss_logs_it(faces, teacher_spec, tmp_path):
    config = loss_test_config(faces, {'distill': 10}, teacher=teacher_spec)
    trainer = Trainer(TrainOptions(config=config, log_dir=tmp_path, tensorboard=False, progress=False, seed=2))
    trainer.sampler.set_epoch(0)
    history = [trainer.train_step(x)[0] for x in trainer.loader]
    assert 'distill' in history[0] and all(np.isfinite(h['distill']) and h['distill'] > 0 for h in history)


def test_a_weight_without_a_teacher_and_a_missing_teacher_are_clear_errors(faces, teacher_spec, tmp_path):
    config = loss_test_config(faces, {'distill': 1}, teacher={**teacher_spec, 'checkpoint': str(tmp_path / 'no.pth')})
    with pytest.raises(TrainingError, match='teacher checkpoint .* not found'):
        Trainer(TrainOptions(config=copy.deepcopy(config), log_dir=tmp_path / 'a', tensorboard=False, progress=False))
    del config['train_params']['teacher']
    with pytest.raises(TrainingError, match="teacher needs 'checkpoint'"):
        Trainer(TrainOptions(config=config, log_dir=tmp_path / 'b', tensorboard=False, progress=False))


@pytest.mark.parametrize('name', ['face-128-v5-b4-distilled', 'face-128-v5-b4-teacher300',
                                  'face-128-v5-b4-teacher300-long'])
def test_the_distillation_probes_have_the_bundled_model_as_their_teacher(name):
    """docs/experiments: a 4-block student taught by the 6-block model bundled then (face-128-v5, now in git history
    only; the bundled face-128-v6 has its networks and stands in for it here)."""
    config = load_config(REPO / 'docs/experiments' / f'{name}.yaml')
    tp = config['train_params']
    assert tp['loss_weights']['distill'] > 0 and tp['loss_weights']['cross_mouth'] > 0
    assert tp['teacher']['checkpoint'] == 'runs/teacher/face-128-v5.pth.tar'
    teacher = TeacherGenerator.load({**tp['teacher'], 'checkpoint': str(default_checkpoint_path())})
    student = build_models(config, with_discriminator=False)
    assert len(teacher.generator.bottleneck) == 6 and len(student.generator.bottleneck) == 4
