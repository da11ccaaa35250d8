"""Fault injectors: check preemption, resume and non-finite handling (the tests use them; so can you, on a
cluster, before trusting a setup). Add them from the command line, e.g.
``'+callbacks.extra=[{_target_: dancelcm.callbacks.faults.KillAt, step: 3, signal: KILL}]'``."""

from __future__ import annotations

import logging
import os
import signal

import lightning as L
import torch

log = logging.getLogger(__name__)


class KillAt(L.Callback):
    """Sends ``signal`` (a name: KILL, TERM, USR1) to this process when optimizer step ``step`` is about
    to start, i.e. after step ``step``'s checkpoints were written. Add it from the command line:
    ``'+callbacks.extra=[{_target_: dancelcm.callbacks.faults.KillAt, step: 3, signal: KILL}]'``."""

    def __init__(self, step: int, signal: str = "KILL"):
        self.step, self.signal = int(step), str(signal).upper().removeprefix("SIG")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            sig = getattr(signal, f"SIG{self.signal}")
            log.warning("KillAt: sending SIG%s to this process at step %d", self.signal, self.step)
            os.kill(os.getpid(), sig)


class PoisonBatch(L.Callback):
    """Replaces the video of the batch that starts optimizer step ``step`` with NaN (a corrupt input)."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            log.warning("PoisonBatch: NaN video at step %d", self.step)
            batch["video"] = torch.full_like(batch["video"], float("nan"))
