"""Paste-back of an animated face crop into the full avatar, on a real avatar image from ../shared."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import SHARED

from fomm_model.paste_back import PasteBack
from fomm_model.video_io import read_image

CROP = (128, 128)
BOX = (96, 64, 416, 384)    # a 320 px face box in the 512 px portrait


@pytest.fixture(scope='module')
def image() -> np.ndarray:
    return read_image(SHARED / 'data/avatars/mona_lisa.png')


@pytest.fixture(scope='module')
def paste(image) -> PasteBack:
    return PasteBack(image, BOX, CROP)


def _outside(a: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = BOX
    keep = np.ones(a.shape[:2], bool)
    keep[y0:y1, x0:x1] = False
    return a[keep]


def _inside(a: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = BOX
    return a[y0:y1, x0:x1].astype(np.int16)


def test_pasting_the_unmodified_crop_gives_the_image_back(image, paste):
    out = paste(paste.crop)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(np.int16) - image).max() <= 1     # inside too: the detail is kept where unchanged
    assert paste.crop.shape == (*CROP, 3)


def test_pixels_outside_the_box_are_never_touched(image, paste):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (*CROP, 3), dtype=np.uint8)
    out = paste(noise)
    assert np.array_equal(_outside(out), _outside(image))
    assert np.abs(_inside(out) - _inside(image)).mean() > 30     # the noise did get in
    # into a reused buffer: the same, and the buffer is what comes back
    buffer = paste(paste.crop)
    assert paste(noise, out=buffer) is buffer and np.array_equal(buffer, out)


def test_the_animated_content_shows_inside_the_box(image, paste):
    crop = paste.crop.copy()
    crop[48:80, 48:80] = 0                                      # a black square in the middle of the crop
    out = paste(crop)
    x0, y0, x1, y1 = BOX
    scale = (x1 - x0) / CROP[1]
    centre = out[y0 + int(52 * scale):y0 + int(76 * scale), x0 + int(52 * scale):x0 + int(76 * scale)]
    assert centre.mean() < 8
    assert np.abs(_inside(out) - _inside(image))[:int(40 * scale)].max() <= 1   # far from it: unchanged


def test_a_colour_shifted_crop_is_matched_at_the_seam(image, paste):
    shifted = np.clip(paste.crop.astype(np.int16) + [25, -15, 20], 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(paste.colour_offset(shifted), [25, -15, 20])
    out = paste(shifted)
    unsaturated = (paste.crop > 20).all(axis=2) & (paste.crop < 230).all(axis=2)
    assert unsaturated.mean() > 0.9
    assert np.abs(out.astype(np.int16) - image).max() <= 8     # a uniform drift is taken out entirely
    assert np.abs(out.astype(np.int16) - image).mean() < 0.5


def test_no_step_at_the_mask_border_when_colours_differ(image):
    """Colour matching off, a crop 30 levels brighter: the change fades in from 0 at the box edge."""
    x0, y0, x1, y1 = BOX
    paste = PasteBack(image, BOX, CROP, match_colour=False)
    shifted = np.clip(paste.crop.astype(np.int16) + 30, 0, 255).astype(np.uint8)
    added = paste(shifted).astype(np.int16) - image                  # what the paste changed, per pixel
    edge = np.concatenate([added[y0:y0 + 2, x0:x1], added[y1 - 2:y1, x0:x1],
                           added[y0:y1, x0:x0 + 2].transpose(1, 0, 2), added[y0:y1, x1 - 2:x1].transpose(1, 0, 2)],
                          axis=1)
    assert np.abs(edge).max() <= 1                                   # nothing at the box edge, all around
    # the mask alone (the detail gate kept out of it): a smooth ramp from the edge to the full shift
    paste = PasteBack(image, BOX, CROP, match_colour=False, detail_range=(200, 255))
    added = paste(shifted).astype(np.int16) - image
    row = added[(y0 + y1) // 2, x0 - 4:(x0 + x1) // 2].mean(axis=1)   # from outside the box to its centre
    assert np.abs(row[:5]).max() <= 1
    assert np.abs(np.diff(row)).max() <= 2                           # 30 levels over ~48 px, no step
    assert abs(np.median(row[-40:]) - 30) <= 1                        # the full shift in the middle


def test_bad_input_is_a_clear_error(image, paste):
    with pytest.raises(ValueError, match='expected 128x128'):
        paste(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match='uint8'):
        paste(paste.crop.astype(np.float32))
    with pytest.raises(ValueError, match='image shape'):
        paste(paste.crop, out=np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match='inside the 512x512 image'):
        PasteBack(image, (400, 0, 600, 200), CROP)
    with pytest.raises(ValueError, match='inside'):
        PasteBack(image, (100, 100, 100, 200), CROP)
    with pytest.raises(ValueError, match='HxWx3 uint8'):
        PasteBack(image[..., 0], BOX, CROP)
    with pytest.raises(ValueError, match='feather'):
        PasteBack(image, BOX, CROP, feather=0)
    with pytest.raises(ValueError, match='crop_size'):
        PasteBack(image, BOX, (2, 2))


def test_the_caller_changing_its_array_does_not_change_the_result(image):
    mine = image.copy()
    paste = PasteBack(mine, BOX, CROP)
    mine[:] = 0
    assert np.array_equal(_outside(paste(paste.crop)), _outside(image))
