"""The live engine's model thread count: --threads fixes it (headless and window flags), otherwise it starts at
the free cores and adapts to the frame times; what was chosen is in the stats; OpenMP waits passively."""
from __future__ import annotations

import pytest
import torch
from helpers import AVATAR, SHARED, load_bundled

import live
from fomm_model.inference import create_runner
from fomm_model.inference.threads import OMP_WAIT_ENV
from live.engine import Engine
from live.gui.launch import parse_gui_args
from live.headless import build_parser
from live.model_threads import ModelThreads
from live.options import CaptureOptions, ModelOptions, Settings


CLIP = SHARED / 'data' / 'faces' / 'test' / 'grid_lwbsza#grid_lipnet__lwbsza.mp4'


def test_threads_flag_in_headless_and_window():
    assert build_parser().parse_args(['--threads', '1']).threads == 1
    assert build_parser().parse_args([]).threads is None            # auto: from the free cores
    assert parse_gui_args(['--threads', '2']).threads == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(['--threads', '0'])


def test_live_sets_openmp_waiting_like_the_thread_policy():
    assert live.OMP_WAIT_ENV == OMP_WAIT_ENV


@pytest.mark.parametrize('threads', [1, None])
def test_engine_applies_and_reports_the_thread_count(threads):
    engine = Engine(ModelOptions(backend='torch', device='cpu', threads=threads),
                    CaptureOptions(input=str(CLIP), loop=True), Settings(paste_back=False))
    try:
        engine.set_avatar(AVATAR)
        on_engine_thread = engine.submit(torch.get_num_threads).result(60)
        stats = engine.stats()
    finally:
        engine.close()
    if threads:
        assert on_engine_thread == 1 and stats.threads.startswith('1 (fixed')
    else:
        chosen = int(stats.threads.split()[0])
        assert on_engine_thread == chosen and 1 <= chosen <= 2
        assert 'adaptive' in stats.threads and 'free' in stats.threads   # says why


def test_model_threads_follow_the_frame_times_on_a_real_runner():
    models = load_bundled()
    runner = create_runner(models, (128, 128), 'torch', 'cpu', verify=False).runner
    before = torch.get_num_threads()
    try:
        threads = ModelThreads()
        threads.start(runner, None)
        logic = threads.policy.logic
        logic.threads = threads.policy.threads = 2   # as if both cores were free at start
        torch.set_num_threads(2)
        for _ in range(logic.window):
            threads.record(20.0)                     # idle baseline
        decisions = [threads.record(60.0) for _ in range(logic.window)]   # a competitor takes a core
        tried = [d for d in decisions if d is not None]
        assert tried and tried[0].threads == 1 and torch.get_num_threads() == 1
        assert threads.text.startswith('1 (adaptive: trying 1 thread')
    finally:
        torch.set_num_threads(before)
