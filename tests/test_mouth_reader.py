"""The frozen mouth reader (fomm_model.training.mouth_reader) and the cross-identity mouth-opening loss it judges."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fomm_model import build_models
from fomm_model.training.cross_identity import mouth_opening_change, mouth_opening_loss, other_items
from fomm_model.training.full_model import GeneratorFullModel
from fomm_model.training.landmark_targets import ANCHOR_NAMES, eye_distance, mouth_gap
from fomm_model.training.mouth_reader import MouthReader, _affine_jitter, anchor_loss, main, train
from fomm_model.training.trainer import Trainer, TrainingError, TrainOptions

from helpers import REPO, loss_test_config

UPPER, LOWER = ANCHOR_NAMES.index('upper_lip'), ANCHOR_NAMES.index('lower_lip')


def _face(gap: float, eyes: float = 0.6, centre=(0.0, 0.0)) -> torch.Tensor:
    """(A, 2) anchors of a schematic face: lips ``gap`` apart, eyes ``eyes`` apart, scaled about ``centre``."""
    points = {'upper_lip': (0, 0.4 - gap / 2), 'lower_lip': (0, 0.4 + gap / 2), 'mouth_right': (-0.2, 0.4),
              'mouth_left': (0.2, 0.4), 'right_upper_lid': (-eyes / 2, -0.22), 'right_lower_lid': (-eyes / 2, -0.18),
              'left_upper_lid': (eyes / 2, -0.22), 'left_lower_lid': (eyes / 2, -0.18)}
    return torch.tensor([points[n] for n in ANCHOR_NAMES]) + torch.tensor(centre)


def test_the_change_is_the_drivers_scaled_to_the_source_face():
    """Item 1 drives item 0 (other_items): its lips part 0.1 beyond its anchor's; item 0's face is half the size
    (eyes 0.3 apart against 0.6), so its lips must part 0.05 beyond its own."""
    assert other_items(2).tolist() == [1, 0]
    source = torch.stack([_face(0.02, eyes=0.3), _face(0.05)])
    driving = torch.stack([_face(0.02, eyes=0.3), _face(0.15)])
    change, known = mouth_opening_change(source, driving)
    assert known.tolist() == [True, True]
    assert change[0].item() == pytest.approx(0.05, abs=1e-5)
    assert change[1].item() == pytest.approx(0.0, abs=1e-5)  # item 0 drives item 1 and did not move
    driving[1, UPPER] = float('nan')  # no face found in item 1's driving frame: item 0's change is unknown
    assert mouth_opening_change(source, driving)[1].tolist() == [False, True]


def test_the_loss_is_zero_when_the_output_parted_as_far_as_asked_and_skips_unknown_items():
    source = torch.stack([_face(0.02), _face(0.10)])
    change = torch.tensor([0.06, -0.30])  # item 1 would close past shut: its target is closed (gap 0)
    output = torch.stack([_face(0.08), _face(0.0)]).requires_grad_(True)
    known = torch.tensor([True, True])
    assert mouth_opening_loss(output, source, change, known).item() == pytest.approx(0, abs=1e-6)
    wrong = torch.stack([_face(0.02), _face(0.0)])
    assert mouth_opening_loss(wrong, source, change, known).item() == pytest.approx(0.03, abs=1e-5)
    assert mouth_opening_loss(wrong, source, change, torch.tensor([False, True])).item() == pytest.approx(0, abs=1e-6)
    loss = mouth_opening_loss(output, source, change, torch.tensor([False, False]))
    loss.backward()
    assert loss.item() == 0 and output.grad.abs().sum() == 0


def test_the_gaps_and_face_size():
    faces = torch.stack([_face(0.1, eyes=0.5), _face(0.0, eyes=0.8)])
    assert torch.allclose(mouth_gap(faces), torch.tensor([0.1, 0.0]), atol=1e-6)
    assert torch.allclose(eye_distance(faces), torch.tensor([0.5, 0.8]), atol=1e-6)


def test_the_jitter_moves_the_anchors_with_the_image():
    """A bright dot drawn at each anchor is found, after the random similarity, where the moved anchor says."""
    size = 128
    anchors = torch.tensor([[[-0.3, 0.2], [0.25, -0.1]]] * 4)
    images = torch.zeros(4, 3, size, size)
    for b in range(4):
        for x, y in anchors[b]:
            col, row = round((x.item() + 1) / 2 * (size - 1)), round((y.item() + 1) / 2 * (size - 1))
            images[b, :, row - 1:row + 2, col - 1:col + 2] = 1
    moved, moved_anchors = _affine_jitter(images, anchors, torch.Generator().manual_seed(3))
    assert not torch.allclose(moved_anchors, anchors, atol=1e-3)
    for b in range(4):
        for x, y in moved_anchors[b]:
            col, row = (x.item() + 1) / 2 * (size - 1), (y.item() + 1) / 2 * (size - 1)
            patch = moved[b, 0, round(row) - 1:round(row) + 2, round(col) - 1:round(col) + 2]
            assert patch.max() > 0.5, (b, col, row)


def test_anchor_loss_skips_frames_without_a_face():
    target = torch.stack([_face(0.05), _face(0.05)])
    target[1] = float('nan')
    predicted = torch.stack([_face(0.05), _face(0.3)])
    assert anchor_loss(predicted, target).item() == pytest.approx(0, abs=1e-6)
    assert anchor_loss(predicted, torch.full_like(target, float('nan'))).item() == 0


@pytest.fixture(scope='module')
def reader_checkpoint(faces, tmp_path_factory):
    """A reader trained briefly on the two real clips (their Face Mesh anchors), with its report."""
    out = tmp_path_factory.mktemp('reader') / 'reader.pth'
    torch.manual_seed(0)
    report = train(faces, out, steps=150, batch_size=4, lr=1e-3, progress=False)
    return out, report


def test_training_the_reader_finds_the_lips_and_lids(faces, reader_checkpoint):
    """On the clips' frames the trained reader's anchors are far closer to Face Mesh's than an untrained one's."""
    from fomm_model.training.landmark_targets import load_or_compute
    from fomm_model.training.mouth_reader import build_reader
    from fomm_model.training.video_frames import read_frames
    path, report = reader_checkpoint
    assert report['steps'] == 150 and np.isfinite(report['final_loss'])
    videos = sorted((faces / 'train').iterdir())
    targets = load_or_compute(videos, (128, 128), path.parent, progress=False)  # the cache train() wrote
    frames = np.concatenate([read_frames(v, (128, 128)) for v in videos])
    truth = torch.from_numpy(np.concatenate([targets[v.name] for v in videos]))
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        trained = anchor_loss(MouthReader.load(path)(images), truth).item()
        untrained = anchor_loss(MouthReader(build_reader())(images), truth).item()
    assert trained < 0.5 * untrained, (trained, untrained)


def test_the_reader_is_frozen_and_outside_the_model(reader_checkpoint):
    reader = MouthReader.load(reader_checkpoint[0])
    image = torch.rand(2, 3, 128, 128, requires_grad=True)
    mouth_gap(reader(image)).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in reader.net.parameters())
    assert not reader.net.training  # batch-norm statistics fixed


def _config(root, reader, **loss) -> dict:
    return loss_test_config(root, {'generator_gan': 1, 'feature_matching': [0], **loss}, mouth_reader=str(reader))


def test_training_with_the_loss_logs_it_and_keeps_the_reader_out_of_the_model(faces, reader_checkpoint, tmp_path):
    path = reader_checkpoint[0]
    trainer = Trainer(TrainOptions(config=_config(faces, path, cross_mouth=30), log_dir=tmp_path, tensorboard=False,
                                   progress=False, seed=2))
    trainer.sampler.set_epoch(0)
    history = [trainer.train_step(x)[0] for x in trainer.loader]
    assert {'cross_mouth', 'cross_gan', 'gen_gan', 'disc_gan'} <= set(history[0])
    assert 'cross_keypoints' not in history[0]
    assert all(np.isfinite(v) for h in history for v in h.values())
    # the reader is no part of the trained model: not in its parameters nor in its checkpoint
    assert not any('mouth_reader' in k or k.startswith('reader') for k in trainer.generator_full.state_dict())
    reader_params = {id(p) for p in trainer.generator_full.mouth_reader.net.parameters()}
    assert not reader_params & {id(p) for p in trainer.generator_full.parameters()}


def test_the_loss_trains_the_generator_to_part_the_lips_as_asked(faces, reader_checkpoint):
    """Real clips, their most and least open mouths paired: fitting the generator to one batch with the loss alone
    brings the lip gap the reader finds on the cross-identity outputs to the asked one (the gradient reaches the
    generator through the frozen reader, and the loss can be met)."""
    from fomm_model.training.dataset import FramesDataset
    from fomm_model.training.landmark_targets import load_or_compute
    config = _config(faces, reader_checkpoint[0], cross_mouth=1, generator_gan=0, l1=0)
    models = build_models(config, with_discriminator=True)
    full = GeneratorFullModel(models.kp_detector, models.generator, models.discriminator, config['train_params'])
    data = FramesDataset(faces, frame_shape=(128, 128, 3), mouth_contrast=1.0)
    data.landmark_targets = load_or_compute(data.videos, (128, 128), reader_checkpoint[0].parent, progress=False)
    items = [data.get(i % len(data), 0, i) for i in range(4)]
    x = {k: torch.stack([it[k] for it in items]) for k in ('source', 'driving', 'source_landmarks',
                                                             'driving_landmarks')}
    change, known = mouth_opening_change(x['source_landmarks'], x['driving_landmarks'])
    assert known.all() and change.abs().max() > 0.02  # the pairs ask for a visible change
    optimizer = torch.optim.Adam(models.generator.parameters(), lr=1e-3)
    torch.manual_seed(0)
    history = []
    for _ in range(40):
        losses, _ = full(x)
        optimizer.zero_grad()
        losses['cross_mouth'].backward()
        optimizer.step()
        history.append(losses['cross_mouth'].item())
    assert np.mean(history[-5:]) < 0.5 * np.mean(history[:5]), history


def test_a_weight_without_a_reader_and_a_missing_reader_are_clear_errors(faces, tmp_path):
    config = _config(faces, tmp_path / 'nowhere.pth', cross_mouth=10)
    with pytest.raises(TrainingError, match='python -m fomm_model.training.mouth_reader'):
        Trainer(TrainOptions(config=copy.deepcopy(config), log_dir=tmp_path / 'a', tensorboard=False, progress=False))
    del config['train_params']['mouth_reader']
    with pytest.raises(TrainingError, match='no mouth_reader'):
        Trainer(TrainOptions(config=config, log_dir=tmp_path / 'b', tensorboard=False, progress=False))


def test_the_command_line_says_what_is_missing(tmp_path, capsys):
    assert main(['--data', str(tmp_path), '--out', str(tmp_path / 'r.pth')]) == 2
    assert 'no train/ folder' in capsys.readouterr().err


@pytest.mark.parametrize('name', ['face-128-v6', 'docs/experiments/face-128-v5.yaml',
                                  'docs/experiments/face-128-v4-cross-reader-x3.yaml',
                                  'docs/experiments/face-128-v5-continued.yaml',
                                  'docs/experiments/face-128-v5-b3.yaml',
                                  'docs/experiments/face-128-v5-b3-continued.yaml',
                                  'docs/experiments/face-128-v5-b4.yaml',
                                  'docs/experiments/face-128-v5-closed-first.yaml'])
def test_the_configs_set_the_loss_up(name, reader_checkpoint):
    """The default model's recipe and the recorded probes that continue it build their training losses (with a
    reader from here)."""
    from fomm_model import load_config
    config = load_config(REPO / name if name.endswith('.yaml') else name)
    assert config['train_params']['mouth_reader'] == 'runs/mouth-reader/reader.pth'
    train_params = {**config['train_params'], 'mouth_reader': str(reader_checkpoint[0])}
    models = build_models(config)
    full = GeneratorFullModel(models.kp_detector, models.generator, models.discriminator, train_params,
                              perceptual_net=torch.nn.Identity())  # present, not run here
    assert full.mouth_reader is not None and full.cross_keypoints is None
    assert full.loss_weights['cross_mouth'] > 0 and config['dataset_params']['painting_style'] > 0
    assert full.cross_closed_first == (name.endswith('closed-first.yaml') or name == 'face-128-v6')
