"""The bundled default model meets its quality target on the held-out clips, and its model card says so truly."""
from __future__ import annotations

import json
import re

import pytest
from helpers import REPO, SHARED, fomm

from fomm_model.checkpoint import read_checkpoint
from fomm_model.defaults import DEFAULT_CONFIG, default_checkpoint_path

CARD = REPO / 'assets' / 'models' / 'MODEL_CARD.md'
pytestmark = pytest.mark.slow   # 1,535 frames: about a minute on 2 cores (CI runs slow tests too)


@pytest.fixture(scope='module')
def scores(tmp_path_factory) -> dict:
    if not default_checkpoint_path().is_file():
        pytest.fail(f'the bundled model {default_checkpoint_path()} is missing')
    out = tmp_path_factory.mktemp('rec') / 'scores.json'
    proc = fomm('reconstruct', '--config', DEFAULT_CONFIG, '--data', SHARED / 'data/faces/test', '--json', out,
                '--cpu', timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_bundled_model_beats_static_baseline_by_30_percent(scores):
    assert scores['num_videos'] == 7 and scores['num_frames'] == 1535
    assert scores['improvement'] >= 0.30, scores['improvement']
    moving = [v for v in scores['videos'] if v['l1_static'] > 0.05]  # clips where the head really moves
    assert moving and all(v['improvement'] > 0.15 for v in moving), moving


def test_model_card_reports_the_shipped_weights(scores):
    card = CARD.read_text()
    row = re.search(r'\| this model \| \*\*([0-9.]+)\*\* \| ([0-9.]+) \|', card)
    static = re.search(r'\| static baseline[^|]*\| ([0-9.]+) \| ([0-9.]+) \|', card)
    assert row and static, 'evaluation table not found in MODEL_CARD.md'
    assert float(row.group(1)) == pytest.approx(scores['l1'], abs=6e-5)
    assert float(row.group(2)) == pytest.approx(scores['l1_video_mean'], abs=6e-5)
    assert float(static.group(1)) == pytest.approx(scores['l1_static'], abs=6e-5)
    ckpt = read_checkpoint(default_checkpoint_path())
    assert f"{ckpt['step']:,} optimiser steps" in card and f"epoch {ckpt['epoch']}" in card
