"""Loss logging: the original's one-line-per-epoch ``log.txt`` plus TensorBoard scalars when available."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


LOG_NAME = 'log.txt'
TENSORBOARD_DIR = 'tensorboard'


def remove_logs(log_dir: str | Path) -> list[Path]:
    """Delete the loss logs a LossLogger wrote into ``log_dir`` (log.txt, TensorBoard event files), so a run
    started over there (``fomm train --overwrite``) does not append to the previous run's curves."""
    log_dir = Path(log_dir)
    found = [log_dir / LOG_NAME] + sorted((log_dir / TENSORBOARD_DIR).glob('events.out.tfevents.*'))
    removed = []
    for path in found:
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def format_epoch_line(epoch: int, losses: dict[str, float]) -> str:
    """``00000003) perceptual - 1.23456; equivariance_value - 0.12345`` as the original Logger.log_scores."""
    return str(epoch).zfill(8) + ") " + "; ".join("%s - %.5f" % (k, v) for k, v in losses.items())


class LossLogger:
    """Accumulates per-step losses, writes epoch means to log.txt and steps to TensorBoard."""

    def __init__(self, log_dir: str | Path, tensorboard: bool = True):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / LOG_NAME
        self.steps: list[dict[str, float]] = []
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.log_dir / TENSORBOARD_DIR))
            except Exception as exc:  # tensorboard not installed or broken: log.txt still works
                log.info("TensorBoard logging disabled (%s)", exc)

    def log_step(self, step: int, losses: dict[str, float], lr: float | None = None) -> None:
        self.steps.append(dict(losses))
        if self.writer is not None:
            for k, v in losses.items():
                self.writer.add_scalar(f'loss/{k}', v, step)
            self.writer.add_scalar('loss/total', sum(losses.values()), step)
            if lr is not None:
                self.writer.add_scalar('lr/generator', lr, step)

    def epoch_means(self) -> dict[str, float]:
        if not self.steps:
            return {}
        keys = list(self.steps[0])
        return {k: float(np.mean([s[k] for s in self.steps if k in s])) for k in keys}

    def log_epoch(self, epoch: int) -> dict[str, float]:
        means = self.epoch_means()
        if means:
            with open(self.path, 'a') as f:
                print(format_epoch_line(epoch, means), file=f)
        self.steps = []
        if self.writer is not None:
            self.writer.flush()
        return means

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
