"""Helper threads yield the CPU to the model.

On a 2-core machine the model step uses both cores, and every millisecond the capture thread's decoder or the
face detector (mediapipe runs BlazeFace on two threads of its own) spends while the model runs is a
millisecond taken from the model's critical path: OpenMP and OpenVINO split each layer across the cores, so a
layer waits for its slowest part. Those helpers do not need to run at that moment: the engine has gaps between
model steps (its own crop and conversions on one core, waiting for the camera) that they can fill.

So they run at a lower scheduling priority (a higher nice value): the kernel gives a core to them only when no
normal-priority thread of this process (the model's) or of another program wants it, and a model thread that
wakes up takes the core back at once. Nothing is skipped or delayed by design: every camera frame is still
decoded and detection still runs when it is due; only when the CPU is saturated do they get less of it (the
crop then follows the face a few frames later; a live camera's frame waits in its one-frame slot).

Linux only: there a nice value belongs to one thread and the threads it starts inherit it. Elsewhere (macOS's
``setpriority`` would lower the whole process, Windows has none) nothing changes.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar('T')

BACKGROUND_NICE = 19   # the lowest priority short of SCHED_IDLE; raised nice values cannot be lowered again


def supported() -> bool:
    return sys.platform.startswith('linux') and hasattr(os, 'setpriority')


def lower_current_thread(nice: int | None = None) -> bool:
    """Give the calling thread (and the threads it starts from now on) nice value ``nice`` (default
    :data:`BACKGROUND_NICE`) if that is lower priority than it has; True when it runs at ``nice`` or lower
    afterwards."""
    nice = BACKGROUND_NICE if nice is None else nice
    if not supported():
        return False
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        return True
    except OSError as exc:   # e.g. a sandbox that forbids it: run at normal priority
        log.debug('could not lower the priority of thread %s: %s', threading.current_thread().name, exc)
        return False


def create_in_background(factory: Callable[[], T], nice: int | None = None) -> T:
    """``factory()`` called on a short-lived thread of lower priority, so that the worker threads the object
    starts (mediapipe's graph and inference threads) inherit it; its exception is raised here."""
    if not supported():
        return factory()
    out: dict[str, object] = {}

    def run() -> None:
        lower_current_thread(nice)
        try:
            out['value'] = factory()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            out['error'] = exc
    thread = threading.Thread(target=run, name='fomm-background-init', daemon=True)
    thread.start()
    thread.join()
    if 'error' in out:
        raise out['error']
    return out['value']  # type: ignore[return-value]
