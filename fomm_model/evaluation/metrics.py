"""Scores computed from landmarks: average keypoint distance (AKD) and how well a motion signal is transferred.

AKD (Siarohin et al. 2019, section 4) is the mean distance between landmarks of real and generated frames;
frames where either has no face are left out and counted instead (the paper's "missing keypoint rate" idea),
so a model cannot improve its AKD by producing faces the landmark model gives up on.

Transfer is judged per facial signal (mouth opening, eye opening) over a clip: the Pearson correlation says
whether the output moves *when* the driver moves, the amplitude ratio (std of output / std of driver) says
whether it moves *as much*. Correlation alone would pass an output that moves 1% as far; amplitude alone would
pass one that moves at random.

Both reward an output whose whole face stretches and folds, since its lips and lids part with it. The shape ratio
(mean non-rigid change of the output's face / the driver's) says how far the output's face changes shape against
how far the driver's did: about 1 when it turns and moves as the driver does, 0 when it is still, well above 1
when it distorts.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

MIN_CORRELATION = 0.5
AMPLITUDE_RANGE = (1 / 3, 3.0)   # output moves between a third and three times as far as the driver
MAX_NO_FACE_RATE = 0.25          # more output frames without a face than this fails a pair
MIN_FRAMES = 3                   # fewer frames with a face on both sides: no correlation is computed


def keypoint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance between corresponding points of two (N, 2) arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f'landmark arrays must have the same (N, 2) shape, got {a.shape} and {b.shape}')
    return float(np.linalg.norm(a - b, axis=1).mean())


@dataclass
class AKD:
    """AKD over the frames where both sides have a face; the frames left out are counted."""
    akd: float | None
    frames: int
    frames_scored: int
    no_face_real: int
    no_face_generated: int    # among frames where the real one has a face: the missing keypoint count

    def as_dict(self) -> dict:
        return asdict(self)


def average_keypoint_distance(real: Sequence[np.ndarray | None], generated: Sequence[np.ndarray | None]) -> AKD:
    """AKD between two equally long sequences of landmarks (None = no face found in that frame)."""
    if len(real) != len(generated):
        raise ValueError(f'real and generated clips differ in length ({len(real)} vs {len(generated)} frames)')
    distances = [keypoint_distance(r, g) for r, g in zip(real, generated) if r is not None and g is not None]
    no_face_real = sum(r is None for r in real)
    no_face_generated = sum(r is not None and g is None for r, g in zip(real, generated))
    return AKD(float(np.mean(distances)) if distances else None, len(real), len(distances), no_face_real,
               no_face_generated)


def _constant(x: np.ndarray) -> bool:
    # relative test: the mean of identical floats can differ from them in the last bit, so std is not exactly 0
    return float(np.std(x)) <= 1e-9 * max(float(np.abs(x).max(initial=0.0)), 1e-12)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation, or None when either side is constant (then it is undefined, not 0)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f'need two equally long series of at least 2 values, got {x.shape} and {y.shape}')
    if _constant(x) or _constant(y):
        return None
    return float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))


def amplitude_ratio(driver: Sequence[float], output: Sequence[float]) -> float | None:
    """std(output) / std(driver); None when the driver does not move at all."""
    d, o = np.asarray(driver, dtype=np.float64), np.asarray(output, dtype=np.float64)
    return None if _constant(d) else float(np.std(o)) / float(np.std(d))


@dataclass
class SignalScore:
    """One signal (mouth or eyes) of one (avatar, driving clip) pair.

    ``exercised``: the driver moved this feature enough (std >= the feature's threshold) for the scores to mean
    something; a clip without a blink says nothing about eye transfer and does not count for or against it.
    """
    r: float | None
    ratio: float | None
    driver_std: float | None
    output_std: float | None
    frames: int
    exercised: bool
    passed: bool | None

    def as_dict(self) -> dict:
        return asdict(self)


def _known_in_both(driver: Sequence[float], output: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The values of the frames where both series are known (NaN = no face that frame)."""
    d, o = np.asarray(driver, dtype=np.float64), np.asarray(output, dtype=np.float64)
    if d.shape != o.shape or d.ndim != 1:
        raise ValueError(f'driver and output series must be equally long and 1-D, got {d.shape} and {o.shape}')
    both = np.isfinite(d) & np.isfinite(o)
    return d[both], o[both]


def score_signal(driver: Sequence[float], output: Sequence[float], min_driver_std: float) -> SignalScore:
    """Correlation and amplitude ratio over frames where both values are known (NaN = no face that frame)."""
    d, o = _known_in_both(driver, output)
    n = d.size
    if n < MIN_FRAMES:
        return SignalScore(None, None, None, None, n, False, None)
    r, ratio = pearson(d, o), amplitude_ratio(d, o)
    exercised = float(np.std(d)) >= min_driver_std
    passed = None
    if exercised:
        passed = (r is not None and r >= MIN_CORRELATION and ratio is not None
                  and AMPLITUDE_RANGE[0] <= ratio <= AMPLITUDE_RANGE[1])
    return SignalScore(r, ratio, float(np.std(d)), float(np.std(o)), n, exercised, passed)


def similarity_residual(points: np.ndarray, reference: np.ndarray) -> float:
    """RMS distance between ``reference`` (N, 2) and ``points`` (N, 2) mapped onto it by the least-squares
    similarity (Umeyama: rotation, uniform scale, shift; no reflection): what no head pose in the image plane
    explains."""
    p, q = np.asarray(points, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f'point arrays must have the same (N, 2) shape, got {p.shape} and {q.shape}')
    p0, q0 = p - p.mean(0), q - q.mean(0)
    u, sv, vt = np.linalg.svd(q0.T @ p0)
    flip = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ flip @ vt
    scale = float((sv * np.diag(flip)).sum() / max((p0 ** 2).sum(), 1e-12))
    aligned = scale * p0 @ rotation.T
    return float(np.sqrt(((aligned - q0) ** 2).sum(1).mean()))


@dataclass
class ShapeScore:
    """How much the output's face changed shape against the driver's, over the frames both have a face.

    ``ratio`` = mean output change / mean driver change; ``exercised``: the driver's face changed shape enough
    (mean >= the threshold) for the ratio to mean something; landmark jitter alone stays below it.
    """
    ratio: float | None
    driver_mean: float | None
    output_mean: float | None
    frames: int
    exercised: bool

    def as_dict(self) -> dict:
        return asdict(self)


def score_shape(driver: Sequence[float], output: Sequence[float], min_driver_mean: float) -> ShapeScore:
    """Shape ratio over frames where both changes are known (NaN = no face that frame)."""
    d, o = _known_in_both(driver, output)
    n = d.size
    if n < MIN_FRAMES:
        return ShapeScore(None, None, None, n, False)
    d_mean, o_mean = float(d.mean()), float(o.mean())
    return ShapeScore(o_mean / d_mean if d_mean > 0 else None, d_mean, o_mean, n, d_mean >= min_driver_mean)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the known values (None when there are none)."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(known)) if known else None


INTERVAL_LEVEL = 0.95
INTERVAL_ROUNDS = 2000


def _tables(*series: Mapping[tuple[str, str], float | None]) -> list[np.ndarray]:
    """Each series as an (avatar x driving clip) table over the pairs known in every series (NaN elsewhere)."""
    known = [{k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)} for values in series]
    keys = set.intersection(*(set(k) for k in known)) if known else set()
    rows, cols = sorted({a for a, _ in keys}), sorted({d for _, d in keys})
    tables = []
    for values in known:
        table = np.full((len(rows), len(cols)), np.nan)
        for a, d in keys:
            table[rows.index(a), cols.index(d)] = values[a, d]
        tables.append(table)
    return tables


def _resampled_medians(tables: list[np.ndarray], rounds: int, seed: int) -> np.ndarray:
    """(rounds, len(tables)) medians over the pairs of avatars and driving clips drawn with replacement (the same
    draw for every table, so that tables of one set of pairs are compared pair for pair)."""
    n_rows, n_cols = tables[0].shape
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rounds):
        rows, cols = rng.integers(n_rows, size=n_rows), rng.integers(n_cols, size=n_cols)
        drawn = [t[np.ix_(rows, cols)] for t in tables]
        drawn = [d[np.isfinite(d)] for d in drawn]
        if drawn[0].size:
            out.append([float(np.median(d)) for d in drawn])
    return np.array(out)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def median_interval(values: Mapping[tuple[str, str], float | None], rounds: int = INTERVAL_ROUNDS,
                    level: float = INTERVAL_LEVEL, seed: int = 0) -> tuple[float, float] | None:
    """Percentile interval of the median of per-pair ``values`` keyed by (avatar, driving clip), resampling the
    avatars and the driving clips (two-way bootstrap: each round draws both with replacement and takes the median
    over every pair of the drawn ones that has a value).

    Why both: a pair shares its avatar with the other pairs of that avatar and its driver with the other pairs of
    that driver, so resampling pairs alone would treat 49 pairs of 7 portraits and 7 clips as 49 independent draws;
    the interval says how far the median could move with other portraits and other drivers like these. None when
    there are no values.
    """
    (table,) = _tables(values)
    if not np.isfinite(table).any():
        return None
    return _percentiles(_resampled_medians([table], rounds, seed)[:, 0], level)


def median_difference(before: Mapping[tuple[str, str], float | None], after: Mapping[tuple[str, str], float | None],
                      rounds: int = INTERVAL_ROUNDS, level: float = INTERVAL_LEVEL,
                      seed: int = 0) -> tuple[float, float, float] | None:
    """(median of ``after`` - median of ``before``, and its interval) over the pairs both score, avatars and driving
    clips resampled together for both, so that what the two runs share (the same hard portrait, the same still
    driver) cancels. None when they share no pair."""
    tables = _tables(before, after)
    if not np.isfinite(tables[0]).any():
        return None
    medians = _resampled_medians(tables, rounds, seed)
    low, high = _percentiles(medians[:, 1] - medians[:, 0], level)
    return float(np.nanmedian(tables[1]) - np.nanmedian(tables[0])), low, high
