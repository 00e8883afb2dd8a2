"""Growing a trained model to more keypoints starts from the same function (fomm train --init_from)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import bundled_num_kp, load_bundled

from fomm_model import build_models, load_config
from fomm_model.defaults import DEFAULT_CONFIG, default_checkpoint_path
from fomm_model.training.video_frames import read_frames
from fomm_model.training.warm_start import WarmStartError, warm_start


@pytest.fixture(scope='module')
def frames(shared_dir):
    clips = sorted((shared_dir / 'data/faces/train').glob('*.mp4'))[::30][:4]
    x = np.stack([read_frames(c, (128, 128))[0] for c in clips])
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255


def predict(models, frames):
    models.eval()
    with torch.no_grad():
        kp_s, kp_d = models.kp_detector(frames[:1]), models.kp_detector(frames[1:2])
        return models.generator(frames[:1], kp_driving=kp_d, kp_source=kp_s)['prediction']


def bundled_config(extra_keypoints: int = 0, **dense_motion) -> dict:
    """The bundled model's config with ``extra_keypoints`` more keypoints and these dense-motion parameters."""
    config = load_config(DEFAULT_CONFIG)
    params = config['model_params']
    params['common_params']['num_kp'] += extra_keypoints
    params['generator_params']['dense_motion_params'].update(dense_motion)
    return config


def test_grown_model_computes_what_the_old_one_did(frames):
    torch.manual_seed(0)
    bundled = default_checkpoint_path()
    old = load_bundled(with_discriminator=False)
    n = bundled_num_kp()
    new = build_models(bundled_config(extra_keypoints=5), with_discriminator=False)
    summary = warm_start(new, bundled, frames, noise=0.0)
    assert summary['keypoints'] == f'{n} -> {n + 5}' and len(summary['copied_keypoints']) == 5
    kp_old, kp_new = old.kp_detector(frames), new.eval().kp_detector(frames)
    torch.testing.assert_close(kp_new['value'][:, :n], kp_old['value'])
    copies = summary['copied_keypoints']
    torch.testing.assert_close(kp_new['value'][:, n:], kp_old['value'][:, copies])
    # copies are the lowest keypoints (mouth, jaw): nothing left out sits lower on average
    mean_y = kp_old['value'][..., 1].mean(0)
    assert mean_y[copies].min() >= max(mean_y[i] for i in range(n) if i not in copies)
    assert (predict(new, frames) - predict(old, frames)).abs().max() < 1e-3
    # with the default noise the copies move apart a little, and the output barely changes
    noisy = build_models(bundled_config(extra_keypoints=5), with_discriminator=False)
    warm_start(noisy, bundled, frames)
    moved = (noisy.eval().kp_detector(frames)['value'][:, n:] - kp_old['value'][:, copies]).abs().max()
    assert 0 < moved < 0.05
    assert (predict(noisy, frames) - predict(old, frames)).abs().max() < 0.1


def test_shrinking_or_other_widths_are_refused(frames, reference_dir):
    small = build_models(load_config('face-128'), with_discriminator=False)
    with pytest.raises(WarmStartError, match='only the keypoint count and scale factors may differ, and the '
                                             'generator may have fewer bottleneck blocks'):
        warm_start(small, reference_dir / 'tiny-128-checkpoint.pth.tar', frames)


def test_a_finer_dense_motion_grid_starts_from_the_same_weights(frames):
    """scale_factor 0.25 -> 0.5: every learnt weight is copied, only the fixed anti-aliasing kernel differs."""
    from fomm_model.modules.util import AntiAliasInterpolation2d
    old = load_bundled(with_discriminator=False)
    new = build_models(bundled_config(scale_factor=0.5), with_discriminator=False)
    summary = warm_start(new, default_checkpoint_path(), frames)
    assert summary['rescaled'] == ['generator.dense_motion_network.down.weight']
    old_state, new_state = old.generator.state_dict(), new.generator.state_dict()
    for k, v in old_state.items():
        if k != 'dense_motion_network.down.weight':
            torch.testing.assert_close(new_state[k], v.to(new_state[k].dtype), msg=k)
    fresh = AntiAliasInterpolation2d(3, 0.5).weight
    torch.testing.assert_close(new_state['dense_motion_network.down.weight'], fresh)
    # the same function seen through a finer grid: close to the old output, not equal (bundled face-128-v5: 0.056,
    # face-128-v4: 0.051; the same networks untrained: 0.12)
    diff = (predict(new, frames) - predict(old, frames)).abs().mean()
    assert 0 < diff < 0.07


def test_a_shallower_generator_keeps_the_first_bottleneck_blocks(frames):
    """6 -> 3 bottleneck blocks (a faster model to fine-tune): blocks r0-r2 and every other weight are the
    checkpoint's; a deeper generator than the checkpoint's is refused (its extra blocks would start untrained)."""
    old = load_bundled(with_discriminator=False)
    config = bundled_config()
    config['model_params']['generator_params']['num_bottleneck_blocks'] = 3
    new = build_models(config, with_discriminator=False)
    summary = warm_start(new, default_checkpoint_path(), frames)
    assert summary['dropped_bottleneck_blocks'] == ['r3', 'r4', 'r5']
    old_state, new_state = old.generator.state_dict(), new.generator.state_dict()
    assert set(new_state) == {k for k in old_state if not k.startswith(('bottleneck.r3', 'bottleneck.r4',
                                                                       'bottleneck.r5'))}
    for k, v in new_state.items():
        torch.testing.assert_close(v, old_state[k].to(v.dtype), msg=k)
    out = predict(new, frames)
    assert torch.isfinite(out).all() and 0 < (out - predict(old, frames)).abs().mean() < 0.5
    config['model_params']['generator_params']['num_bottleneck_blocks'] = 8
    with pytest.raises(WarmStartError, match='bottleneck.r6'):
        warm_start(build_models(config, with_discriminator=False), default_checkpoint_path(), frames)
