"""How many threads the model step uses, chosen from the cores that are actually free and adapted while it runs.

Why: on a 2-core laptop another program (a video call's encoder, a browser) often keeps a core busy. A
2-thread step then waits on its slower half every layer, and OpenMP's long spin-waiting makes it far worse
(measured with a training job on one of the two cores: a 2-thread PyTorch step took 1.7 s instead of 125 ms
at 1 thread). Sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) avoids that but halves the speed of an idle
machine, so OpenMP threads spin briefly and then sleep, and contention is answered with fewer threads.

* :data:`OMP_WAIT_ENV` / :func:`omp_wait_env`: how OpenMP threads wait (see the measurements there). Read
  once, when PyTorch's OpenMP runtime loads, so an entry point sets it before ``import torch``.
* :func:`initial_threads`: threads for the cores free over a short window at start (psutil).
* :class:`AdaptiveThreads`: the decision logic, fed frame times; it tries fewer threads when the median frame
  time jumps above the best seen, and more again later, keeping a change only when it measurably helps.
* :class:`ThreadPolicy`: applies the decisions on the calling (model) thread: ``torch.set_num_threads`` and,
  for runtimes with their own thread pools (ONNX Runtime, OpenVINO), ``runner.set_threads``.

Every decision carries its reason and is logged.
"""
from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# OpenMP threads spin for a short while (GNU OpenMP: 10,000 iterations, a few microseconds; Intel/LLVM OpenMP:
# 1 ms, not measured here) and then sleep. Bundled face-128, PyTorch float32, 2 threads, Intel Xeon (AVX512-BF16):
# idle machine 15 ms a step (OpenMP's default long spin 14 ms, PASSIVE 31 ms); one core busy with another process
# 78 ms (default spin 121 ms, PASSIVE 29 ms), where the adaptive policy below moves to 1 thread: 22 ms. The live
# engine with a core busy (bench_contention --engine --backend torch): model p99 88 ms with this, 233 ms with the
# default spin (its trials of 2 threads stall), idle median 20.1 vs 18.9 ms.
# OpenVINO's TBB workers and ONNX Runtime (spinning turned off by the runner) need nothing here.
OMP_WAIT_ENV = {'GOMP_SPINCOUNT': '10000', 'KMP_BLOCKTIME': '1'}

PSUTIL_HINT = 'pip install psutil (it comes with pip install "fomm-live[live]")'


def omp_wait_env(environ: dict | None = None) -> bool:
    """Set :data:`OMP_WAIT_ENV` in ``environ`` (default ``os.environ``) where not already set.

    Returns whether it can still take effect in this process: the OpenMP runtime reads it when PyTorch is
    first imported. For a child process pass its environment dict (then the answer is always True)."""
    target = os.environ if environ is None else environ
    for key, value in OMP_WAIT_ENV.items():
        target.setdefault(key, value)
    if environ is None and 'torch' in sys.modules:
        log.warning('OpenMP wait settings set after PyTorch was imported: it only applies to child processes; set it '
                    'before "import torch" (e.g. at the top of the entry point)')
        return False
    return True


def _psutil():
    try:
        import psutil
    except ImportError as exc:
        raise RuntimeError(f'measuring free CPU cores needs psutil: {PSUTIL_HINT}') from exc
    return psutil


def usable_cpus() -> list[int]:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, 'sched_getaffinity'):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def free_cores(window_s: float = 0.5) -> float:
    """Cores (possibly fractional) not used by other processes over ``window_s`` seconds, among
    :func:`usable_cpus`. This process's own use counts as free: it is the model that will use it."""
    psutil = _psutil()
    me = psutil.Process()
    me.cpu_percent(None)
    psutil.cpu_percent(None, percpu=True)
    time.sleep(window_s)
    own = me.cpu_percent(None) / 100.0
    busy = psutil.cpu_percent(None, percpu=True)
    cpus = [c for c in usable_cpus() if c < len(busy)] or list(range(len(busy)))
    idle = sum(100.0 - busy[c] for c in cpus) / 100.0
    return min(float(len(cpus)), idle + own)


def threads_for(free: float, max_threads: int) -> int:
    """Thread count for ``free`` cores: rounded, at least 1, at most ``max_threads``."""
    return max(1, min(int(max_threads), int(free + 0.5)))


@dataclass(frozen=True)
class ThreadDecision:
    """A thread count and why; ``frame`` is the frame index it was taken at (0 at start)."""

    threads: int
    reason: str
    frame: int = 0


def initial_threads(max_threads: int | None = None, window_s: float = 0.5) -> ThreadDecision:
    """Threads for the cores free now (measured over ``window_s``); ``max_threads`` defaults to the CPUs this
    process may use."""
    limit = max_threads or len(usable_cpus())
    free = free_cores(window_s)
    n = threads_for(free, limit)
    return ThreadDecision(n, f'{free:.1f} of {len(usable_cpus())} CPU cores free over {window_s:.1f} s at start '
                             f'-> {n} thread(s) (limit {limit})')


@dataclass
class AdaptiveThreads:
    """Thread-count decisions from frame times alone (no side effects; :class:`ThreadPolicy` applies them).

    It works in windows of ``window`` frames and compares window medians:

    * steady at n threads: when the median exceeds ``slowdown`` x the best median seen at n (the idle
      baseline), another process has probably taken a core: try n - 1 threads;
      every ``retry_after`` frames at fewer than ``max_threads``: try n + 1 (the competitor may be gone).
    * trying c threads: after ``settle`` frames (a switch costs a warm-up), the median of ``window`` frames is
      compared with the last steady median: kept if below ``keep_below`` x it, else back to n. A trial that
      loses doubles the wait before the next one in that direction (up to ``max_retry_after``), so a
      lasting condition costs few slow frames; a kept change resets the waits.
    """

    threads: int
    max_threads: int
    window: int = 15
    slowdown: float = 1.3
    keep_below: float = 0.92
    settle: int = 2
    retry_after: int = 150
    max_retry_after: int = 2400
    baseline: dict[int, float] = field(default_factory=dict)
    decisions: list[ThreadDecision] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.threads = max(1, min(self.threads, self.max_threads))
        self._frame = 0
        self._times: list[float] = []
        self._trial: int | None = None          # thread count on trial, None when steady
        self._before = 0.0                      # steady median just before the trial
        self._wait = {-1: 0, +1: self.retry_after}   # frames to wait before the next trial down / up
        self._since = {-1: 0, +1: 0}

    @property
    def trying(self) -> int | None:
        return self._trial

    def record(self, frame_ms: float) -> ThreadDecision | None:
        """Feed one frame's time; returns a decision when the thread count should change."""
        self._frame += 1
        self._since[-1] += 1
        self._since[+1] += 1
        self._times.append(float(frame_ms))
        need = self.window + (self.settle if self._trial is not None else 0)
        if len(self._times) < need:
            return None
        median = statistics.median(self._times[-self.window:])
        self._times = []
        if self._trial is not None:
            return self._end_trial(median)
        n = self.threads
        best = self.baseline[n] = min(self.baseline.get(n, median), median)
        if n > 1 and median > self.slowdown * best and self._since[-1] >= self._wait[-1]:
            return self._start_trial(n - 1, median, f'median frame {median:.1f} ms is {median / best:.2f}x the '
                                                    f'best {best:.1f} ms at {n} threads (another process busy?)')
        if n < self.max_threads and self._since[+1] >= self._wait[+1]:
            return self._start_trial(n + 1, median, f'{self._since[+1]} frames at {n} thread(s) (median '
                                                    f'{median:.1f} ms): checking whether more cores are free again')
        return None

    def _start_trial(self, threads: int, median: float, why: str) -> ThreadDecision:
        self._trial, self._before = threads, median
        return self._decide(threads, f'trying {threads} thread(s): {why}')

    def _end_trial(self, median: float) -> ThreadDecision | None:
        trial, n, before = self._trial, self.threads, self._before
        direction = 1 if trial > n else -1
        self._trial = None
        self._since[direction] = 0
        self.baseline[trial] = min(self.baseline.get(trial, median), median)
        if median < self.keep_below * before:
            self.threads = trial
            self._wait = {-1: 0, +1: self.retry_after}
            self._since = {-1: 0, +1: 0}
            return self._decide(trial, f'keeping {trial} thread(s): median {median:.1f} ms vs {before:.1f} ms at '
                                       f'{n}')
        self._wait[direction] = min(self.max_retry_after, max(self.retry_after, 2 * self._wait[direction]))
        return self._decide(n, f'back to {n} thread(s): {trial} gave median {median:.1f} ms vs {before:.1f} ms '
                               f'(next try in {self._wait[direction]} frames)')

    def _decide(self, threads: int, reason: str) -> ThreadDecision:
        decision = ThreadDecision(threads, reason, self._frame)
        self.decisions.append(decision)
        log.info('threads: %s (frame %d)', reason, self._frame)
        return decision


def owns_threads(runner: Any) -> bool:
    """Whether ``runner`` runs on its own thread pool (ONNX Runtime, OpenVINO): it has ``set_threads``."""
    return callable(getattr(runner, 'set_threads', None))


def apply_threads(threads: int, runner: Any = None) -> None:
    """Use ``threads`` for the model step on the calling thread.

    PyTorch runners: ``torch.set_num_threads`` (per calling thread under OpenMP). Runners with their own pool
    get ``runner.set_threads`` and PyTorch keeps 1 thread: per frame it only converts images, and a second
    spin-waiting OpenMP team beside OpenVINO's threads made a face-128 step 2.3x slower here."""
    import torch
    if owns_threads(runner):
        runner.set_threads(threads)
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(threads)


class ThreadPolicy:
    """Fixed or adaptive thread count for one runner, applied on the thread that calls it.

    ``threads`` given: fixed at that count. Otherwise the count starts at :func:`initial_threads` and, with
    ``adaptive``, follows :class:`AdaptiveThreads`. Call :meth:`start` on the model thread before the first
    frame and :meth:`record` after each frame with its model time in milliseconds."""

    def __init__(self, runner: Any = None, threads: int | None = None, max_threads: int | None = None,
                 adaptive: bool = True, window_s: float = 0.5, **tuning: Any):
        self.runner = runner
        self.fixed = threads
        self.max_threads = max_threads or len(usable_cpus())
        self.adaptive = adaptive and threads is None
        self.window_s = window_s
        self.tuning = tuning
        self.logic: AdaptiveThreads | None = None
        self.decisions: list[ThreadDecision] = []
        self.threads = threads or 0

    def start(self) -> ThreadDecision:
        """Choose and apply the first thread count; runners with their own pools build every count the
        policy may use now, so a later switch does not stall a frame."""
        if self.fixed:
            decision = ThreadDecision(self.fixed, f'fixed at {self.fixed} thread(s)')
        else:
            decision = initial_threads(self.max_threads, self.window_s)
        if owns_threads(self.runner) and self.adaptive:
            for n in range(1, self.max_threads + 1):
                self.runner.set_threads(n)
        if self.adaptive:
            self.logic = AdaptiveThreads(decision.threads, self.max_threads, **self.tuning)
        self._apply(decision)
        log.info('threads: %d (%s)', decision.threads, decision.reason)
        return decision

    def activate(self) -> None:
        """Apply the current count again (after something else changed the calling thread's or the runner's
        thread count, e.g. another policy sharing the runner)."""
        apply_threads(self.threads, self.runner)

    def record(self, frame_ms: float) -> ThreadDecision | None:
        """Feed one frame's model time; applies and returns a decision when the count changes."""
        if self.logic is None:
            return None
        decision = self.logic.record(frame_ms)
        if decision is not None:
            self._apply(decision)
        return decision

    def _apply(self, decision: ThreadDecision) -> None:
        apply_threads(decision.threads, self.runner)
        self.threads = decision.threads
        self.decisions.append(decision)
