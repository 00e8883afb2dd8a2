"""The speed benchmark's comparisons are fair: every fast path it times computes what the original computes.

Why: the benchmark decides issue 15's goals by the fastest variant within 0.02 of the float32 original. When the
bundled model gained a default mouth gain (1.5), every Animator variant moved the lips further than the original
and the benchmark reported a 0.048 difference that was the setting, not the runtime. Timings are not checked here
(benchmarks measure speed, tests measure results).
"""
from __future__ import annotations

import pytest

from benchmarks import bench_animator


@pytest.mark.usefixtures('shared_dir')
def test_bundled_model_variants_agree_with_the_original():
    config, _ = bench_animator.bundled()
    rows = bench_animator.bench_config(config, rounds=1, frames_per_round=2, threads=1)
    by_variant = {row['variant']: row for row in rows}
    assert by_variant['original (per frame, uncached)']['max_abs_diff'] == 0.0
    assert by_variant["avatarify's path"]['max_abs_diff'] < 1e-4
    float32 = [row for row in rows if row['variant'].startswith('Animator') and 'bf16' not in row['variant']]
    assert {'Animator torch fp32', 'Animator ONNX Runtime', 'Animator OpenVINO'} <= {r['variant'] for r in float32}
    for row in float32:
        assert row['max_abs_diff'] < 1e-3, row
    line = bench_animator.goal_line(config, rows)
    assert 'max diff' in line and 'goal <= 0.02: met' in line, line
