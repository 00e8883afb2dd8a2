"""Intervals of the transfer medians (avatars and driving clips resampled) and the pair-for-pair comparison of two
``fomm evaluate`` runs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fomm_model.evaluation.compare import compare
from fomm_model.evaluation.metrics import median_difference, median_interval

RNG = np.random.default_rng(0)


def table(avatars: int, drivers: int, values: np.ndarray | None = None) -> dict[tuple[str, str], float]:
    values = RNG.normal(0.6, 0.15, (avatars, drivers)) if values is None else values
    return {(f'avatar{a}', f'clip{d}'): float(values[a, d]) for a in range(avatars) for d in range(drivers)}


def pair_bootstrap(values: dict, rounds: int = 2000) -> tuple[float, float]:
    """The naive interval: pairs resampled as if independent (what the two-way interval must not be)."""
    v = np.array(list(values.values()))
    rng = np.random.default_rng(1)
    medians = [np.median(v[rng.integers(len(v), size=len(v))]) for _ in range(rounds)]
    return tuple(np.percentile(medians, [2.5, 97.5]))


def test_the_interval_holds_the_median_and_narrows_with_more_avatars_and_drivers():
    small, large = table(7, 7), table(40, 40)
    for values in (small, large):
        low, high = median_interval(values)
        assert low <= np.median(list(values.values())) <= high
    assert np.diff(median_interval(large))[0] < 0.5 * np.diff(median_interval(small))[0]
    assert median_interval({k: 0.7 for k in small}) == pytest.approx((0.7, 0.7))
    assert median_interval({}) is None and median_interval({('a', 'b'): None}) is None
    assert median_interval(small) == median_interval(small)   # seeded: the same run prints the same interval


def test_the_interval_counts_avatars_not_pairs():
    # most of the spread is between avatars (a portrait that never opens its mouth, one that always does)
    effect = np.linspace(0.2, 1.0, 7)[:, None] + RNG.normal(0, 0.02, (7, 7))
    values = table(7, 7, effect)
    two_way, naive = median_interval(values), pair_bootstrap(values)
    assert np.diff(two_way)[0] > 1.5 * np.diff(naive)[0]


def test_a_shift_of_every_pair_is_found_exactly_and_noise_is_within_chance():
    before = table(7, 7)
    shifted = {k: v + 0.1 for k, v in before.items()}
    difference, low, high = median_difference(before, shifted)
    assert difference == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    noisy = {k: v + float(RNG.normal(0, 0.2)) for k, v in before.items()}
    difference, low, high = median_difference(before, noisy)
    assert low < difference < high and low < 0 < high
    assert median_difference(before, {('someone', 'else'): 0.5}) is None


def evaluate_json(r: dict[tuple[str, str], float]) -> dict:
    """A ``fomm evaluate --json`` transfer section with these mouth r (ratio = r / 2, eyes not exercised)."""
    def signal(value, exercised=True):
        return {'r': value, 'ratio': None if value is None else value / 2, 'exercised': exercised}
    pairs = [{'avatar': a, 'video': v, 'mouth': signal(x), 'eyes': signal(None, False)} for (a, v), x in r.items()]
    known = [x for x in r.values()]
    return {'transfer': {'pair_scores': pairs,
                         'mouth': {'r_median': float(np.median(known)), 'ratio_median': float(np.median(known)) / 2},
                         'eyes': {'r_median': None, 'ratio_median': None}}}


def test_compare_finds_a_real_change_and_calls_noise_chance(tmp_path):
    before = table(7, 7)
    after = {k: v + 0.15 for k, v in before.items()}
    result = compare(evaluate_json(before), evaluate_json(after))
    mouth = result['transfer']['mouth']
    assert mouth['r']['difference'] == pytest.approx(0.15) and mouth['r']['pairs'] == 49
    assert mouth['ratio']['difference'] == pytest.approx(0.075) and 'eyes' not in result['transfer']
    paths = [tmp_path / 'before.json', tmp_path / 'after.json']
    for path, run in zip(paths, (before, after)):
        path.write_text(json.dumps(evaluate_json(run)))
    out = tmp_path / 'cmp.json'
    proc = subprocess.run([sys.executable, '-m', 'fomm_model.evaluation.compare', *map(str, paths), '--json', str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'portraits, mouth over 49 pairs' in proc.stdout and 'more than chance' in proc.stdout
    assert json.loads(out.read_text())['transfer']['mouth']['r']['difference'] == pytest.approx(0.15)
    same = subprocess.run([sys.executable, '-m', 'fomm_model.evaluation.compare', str(paths[0]), str(paths[0])],
                          capture_output=True, text=True)
    assert same.returncode == 0 and '+0.00' in same.stdout and 'within chance' in same.stdout


def test_compare_says_what_is_wrong_with_its_files(tmp_path):
    broken, empty, other = tmp_path / 'broken.json', tmp_path / 'empty.json', tmp_path / 'other.json'
    broken.write_text('{not json')
    empty.write_text(json.dumps({'reconstruction': {}}))
    other.write_text(json.dumps(evaluate_json({('x', 'y'): 0.5})))
    good = tmp_path / 'good.json'
    good.write_text(json.dumps(evaluate_json(table(3, 3))))
    for args, message in (([broken, good], 'not a readable fomm evaluate --json file'),
                          ([tmp_path / 'missing.json', good], 'not a readable'),
                          ([empty, good], 'no transfer pair scores'),
                          ([other, good], 'share no scored pair')):
        proc = subprocess.run([sys.executable, '-m', 'fomm_model.evaluation.compare', *map(str, args)],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
