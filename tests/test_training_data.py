"""Training data: every video layout loads, corrupt files are skipped, sampling and augmentation are seeded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fomm_model.training.augmentation import (
    Augmentation,
    color_jitter,
    hsv_to_rgb,
    random_flip,
    rgb_to_hsv,
)
from fomm_model.training.dataset import EpochSampler, FramesDataset, PairedDataset
from fomm_model.training.painting_style import draw_style
from fomm_model.training.synthetic import FORMATS, blob_clip, make_dataset, write_clip
from fomm_model.training.video_frames import VideoReadError, read_frames

torch.set_num_threads(1)


@pytest.mark.parametrize('fmt', FORMATS)
def test_every_layout_reads_sorted_resized_frames(tmp_path, fmt):
    clip = blob_clip(6, 128, seed=3)
    path = write_clip(clip, tmp_path / 'a#b__0', fmt)
    frames = read_frames(path, (128, 128))
    assert frames.shape == (6, 128, 128, 3) and frames.dtype == np.uint8
    tol = 12 if fmt == 'mp4' else (3 if fmt == 'gif' else 0)  # lossy codecs / GIF palette
    assert np.abs(frames.astype(int) - clip.astype(int)).mean() <= tol
    size = (64, 64) if fmt == 'strip' else (64, 96)  # strip frames are cut with frame_shape's aspect
    assert read_frames(path, size).shape == (6,) + size + (3,)


def test_frame_folder_is_sorted_by_name(tmp_path):
    clip = blob_clip(12, 128, seed=1)
    folder = write_clip(clip, tmp_path / 'x', 'folder')  # 0000.png ... 0011.png; listdir order is arbitrary
    frames = read_frames(folder, (128, 128))
    assert np.array_equal(frames, clip)


def test_bad_strip_width_and_corrupt_file_raise_naming_the_file(tmp_path):
    bad = tmp_path / 'broken.mp4'
    bad.write_bytes(b'\x00not a video' * 100)
    with pytest.raises(VideoReadError, match='broken.mp4'):
        read_frames(bad, (128, 128))
    strip = write_clip(np.zeros((1, 128, 200, 3), np.uint8), tmp_path / 'strip', 'strip')
    with pytest.raises(VideoReadError, match='not a whole number'):
        read_frames(strip, (128, 128))


def test_dataset_skips_corrupt_video_with_warning(tmp_path):
    root = make_dataset(tmp_path / 'd', identities=2, clips_per_identity=1, num_frames=4)
    (root / 'train' / 'aaa#corrupt__0.mp4').write_bytes(b'garbage' * 50)
    ds = FramesDataset(root, frame_shape=(128, 128, 3), id_sampling=False)
    assert ds.videos[0].name == 'aaa#corrupt__0.mp4'
    with pytest.warns(RuntimeWarning, match='aaa#corrupt__0.mp4'):
        sample = ds.get(0)
    assert sample['name'] != 'aaa#corrupt__0.mp4'
    assert sample['source'].shape == (3, 128, 128) and 0 <= float(sample['source'].min())


def test_id_sampling_groups_by_prefix_and_any_extension(tmp_path):
    root = make_dataset(tmp_path / 'd', identities=3, clips_per_identity=2, num_frames=4)
    ds = FramesDataset(root, frame_shape=(128, 128, 3), id_sampling=True)
    assert len(ds) == 3 and ds.identities == ['id0', 'id1', 'id2']
    assert all(len(v) == 2 for v in ds.by_identity.values())  # mp4/gif/png-strip/folder all count
    names = {ds.get(0, epoch=e)['name'] for e in range(12)}
    assert names <= {p.name for p in ds.by_identity['id0']} and len(names) == 2


def test_samples_are_deterministic_and_test_split_returns_videos(tmp_path):
    root = make_dataset(tmp_path / 'd', identities=2, clips_per_identity=1, num_frames=6)
    aug = {'flip_param': {'horizontal_flip': True, 'time_flip': True},
           'jitter_param': {'brightness': .1, 'contrast': .1, 'saturation': .1, 'hue': .1}}
    a = FramesDataset(root, (128, 128, 3), augmentation_params=aug, random_seed=5)
    b = FramesDataset(root, (128, 128, 3), augmentation_params=aug, random_seed=5)
    for e in range(3):
        assert torch.equal(a.get(1, epoch=e)['driving'], b.get(1, epoch=e)['driving'])
    assert not torch.equal(a.get(1, epoch=0)['driving'], a.get(1, epoch=1)['driving'])
    test = FramesDataset(root, (128, 128, 3), is_train=False)
    video = test.get(0)['video']
    assert video.shape == (3, 6, 128, 128)
    pairs = PairedDataset(test, number_of_pairs=5)
    assert len(pairs) == 1 and pairs[0]['driving_video'].shape == (3, 6, 128, 128)


def test_pairs_list_csv(tmp_path):
    root = make_dataset(tmp_path / 'd', identities=1, clips_per_identity=1, num_frames=3, test_clips=2)
    test = FramesDataset(root, (128, 128, 3), is_train=False)
    names = [v.name for v in test.videos]
    csv = tmp_path / 'pairs.csv'
    csv.write_text(f'source,driving\n{names[1]},{names[0]}\nmissing.mp4,{names[0]}\n')
    pairs = PairedDataset(test, pairs_list=csv)
    assert len(pairs) == 1 and pairs[0]['source_name'] == names[1]
    csv.write_text('a,b\nx,y\n')
    with pytest.raises(ValueError, match="columns 'source' and 'driving'"):
        PairedDataset(test, pairs_list=csv)


def test_sampler_covers_repeats_and_splits_ranks():
    s = EpochSampler(5, num_repeats=3, seed=1)
    s.set_epoch(2)
    idx = list(s)
    assert sorted(i - 2 * 15 for i in idx) == list(range(15))
    s.set_epoch(2, start=4)
    assert list(s) == idx[4:] and len(s) == 11
    r0, r1 = EpochSampler(5, 3, seed=1, rank=0, world_size=2), EpochSampler(5, 3, seed=1, rank=1, world_size=2)
    assert len(r0) == len(r1) == 7 and not set(r0) & set(r1)


def test_flip_semantics_time_flip_returns_before_hflip():
    frames = blob_clip(2, 128, seed=0)
    seen = set()
    for seed in range(40):
        out = random_flip(frames, np.random.default_rng(seed), time_flip=True, horizontal_flip=True)
        if np.array_equal(out, frames[::-1]):
            seen.add('time')
        elif np.array_equal(out, frames[:, :, ::-1]):
            seen.add('h')
        else:
            assert np.array_equal(out, frames)
            seen.add('none')
    assert seen == {'time', 'h', 'none'}


def test_color_jitter_same_params_for_both_frames_and_hsv_roundtrip():
    x = np.random.default_rng(0).uniform(0, 1, (4, 5, 3))
    assert np.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6)
    frame = blob_clip(1, 128, seed=2)[0]
    pair = np.stack([frame, frame])
    out = color_jitter(pair, np.random.default_rng(3), .4, .4, .4, .2)
    assert np.array_equal(out[0], out[1]) and not np.array_equal(out[0], frame)
    aug = Augmentation(resize_param={'ratio': [0.9, 1.1]}, crop_param={'size': [128, 128]})
    assert aug(pair, np.random.default_rng(0)).shape == (2, 128, 128, 3)
    with pytest.raises(ValueError, match='rotation_param'):
        Augmentation(rotation_param={'degrees': 5})


def test_painting_style_is_one_look_for_both_frames_and_keeps_the_face_in_place():
    frames = blob_clip(2, 128)
    frames[1] = frames[0]  # two equal frames must come out equal: one drawn look, applied alike
    changed = 0
    for seed in range(12):
        style = draw_style(np.random.default_rng(seed), (128, 128))
        a, b = style(frames[0]), style(frames[1])
        assert a.shape == frames[0].shape and a.dtype == np.uint8 and np.array_equal(a, b)
        again = draw_style(np.random.default_rng(seed), (128, 128))(frames[0])
        assert np.array_equal(a, again)  # seeded
        grey_in, grey_out = frames[0].astype(float).mean(-1), a.astype(float).mean(-1)
        assert np.corrcoef(grey_in.ravel(), grey_out.ravel())[0, 1] > 0.8  # a restyled image, not another one
        changed += np.abs(a.astype(int) - frames[0]).mean() > 3
    assert changed >= 10


def test_painting_style_restyles_source_and_target_but_not_the_driving_frame(tmp_path):
    root = make_dataset(tmp_path / 'd', identities=2, clips_per_identity=1, num_frames=6)
    plain = FramesDataset(root, (128, 128, 3), random_seed=3)
    painted = FramesDataset(root, (128, 128, 3), random_seed=3, painting_style=1.0)
    for epoch in range(3):
        p, q = plain.get(0, epoch=epoch), painted.get(0, epoch=epoch)
        assert 'driving_target' not in p
        assert torch.equal(p['driving'], q['driving'])  # the keypoints' frame stays a camera frame
        assert not torch.equal(p['source'], q['source'])
        assert not torch.equal(q['driving_target'], q['driving'])
    never = FramesDataset(root, (128, 128, 3), random_seed=3, painting_style=1e-9).get(0)
    assert torch.equal(never['driving_target'], never['driving'])  # key always there, so batches collate
    with pytest.raises(ValueError, match='painting_style must be in'):
        FramesDataset(root, (128, 128, 3), painting_style=1.5)
