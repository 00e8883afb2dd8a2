"""One process-wide thread for all of the app's PyTorch work.

libgomp gives every thread that opens a parallel region its own OpenMP team. On this 2-core machine a
2-thread face-128 step measured 12.5 ms on the thread that first used torch, 22 ms on a second thread (slower
than single-threaded, 19 ms), and 15 ms on a second thread when the first never ran a parallel region. So
the engine runs model loading, avatar preparation and every frame on this one thread, and nothing else in
the app calls torch.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar('T')
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_ident: int | None = None


def _initialise(num_threads: int) -> None:
    global _ident
    import torch
    torch.set_num_threads(num_threads)  # OpenMP's thread count is a per-thread setting
    _ident = threading.get_ident()


def run_on_torch_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn`` on the torch thread and return its result (exceptions propagate); re-entrant."""
    global _executor
    if threading.get_ident() == _ident:
        return fn(*args, **kwargs)
    with _lock:
        if _executor is None:
            import torch
            _executor = ThreadPoolExecutor(1, thread_name_prefix='fomm-torch', initializer=_initialise,
                                           initargs=(torch.get_num_threads(),))
    return _executor.submit(fn, *args, **kwargs).result()
