"""The engine's model thread count: :class:`fomm_model.inference.threads.ThreadPolicy` applied on the engine
thread, fed with each animated frame's model time, and what it chose, for the stats and the log.

``--threads N`` fixes the count. Without it, a CPU model starts at the cores free at start and adapts: when
another program (a video call's encoder, a browser) takes a core, the frame time jumps and the policy tries
fewer threads, keeping them only when that is faster, and tries more again later. GPU and remote models run
their CPU side at the given count (or PyTorch's default) without adapting.
"""
from __future__ import annotations

import logging
from typing import Any

from fomm_model.inference.threads import ThreadDecision, ThreadPolicy

log = logging.getLogger(__name__)


class ModelThreads:
    """Thread policy of the engine's current model; call everything on the engine thread."""

    def __init__(self) -> None:
        self.policy: ThreadPolicy | None = None
        self.text = ''

    def start(self, runner: Any, threads: int | None, adaptive: bool = True) -> ThreadDecision:
        """Choose and apply the count for a newly built ``runner`` (``threads``: ``--threads``, None = auto)."""
        if runner.device.type != 'cpu' or not adaptive:
            import torch
            threads = threads or torch.get_num_threads()
        self.policy = ThreadPolicy(runner, threads=threads, adaptive=adaptive and runner.device.type == 'cpu')
        decision = self.policy.start()
        self._describe(decision)
        return decision

    def record(self, model_ms: float) -> ThreadDecision | None:
        """One animated frame's model time; a change of thread count is applied, logged and returned."""
        if self.policy is None:
            return None
        decision = self.policy.record(model_ms)
        if decision is not None:
            self._describe(decision)
        return decision

    def _describe(self, decision: ThreadDecision) -> None:
        mode = 'adaptive' if self.policy is not None and self.policy.adaptive else 'fixed'
        self.text = f'{self.policy.threads} ({mode}: {decision.reason})'
        log.info('model threads: %s', self.text)
