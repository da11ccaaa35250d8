"""Diagnostics: fault injectors that check preemption, resume and non-finite handling, and a cross-rank
weight checksum for DDP (the tests use them; so can you, on a cluster, before trusting a setup). Add them
from the command line, e.g.
``'+callbacks.extra=[{_target_: dancelcm.callbacks.diagnostics.KillAt, step: 3, signal: KILL}]'``."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import lightning as L
import torch

log = logging.getLogger(__name__)


class KillAt(L.Callback):
    """Sends ``signal`` (a name: KILL, TERM, USR1) to this process when optimizer step ``step`` is about
    to start, i.e. after step ``step``'s checkpoints were written. Add it from the command line:
    ``'+callbacks.extra=[{_target_: dancelcm.callbacks.diagnostics.KillAt, step: 3, signal: KILL}]'``."""

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


class RankChecksum(L.Callback):
    """At the end of training each rank writes ``<dir>/rank<r>.json``: float64 sums of every parameter
    and buffer (student, EMA target, ...). DDP ranks must agree exactly."""

    def __init__(self, dir: str):
        self.dir = Path(dir)

    def on_train_end(self, trainer, pl_module) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        sums = {k: float(v.double().sum()) for k, v in pl_module.state_dict().items() if v.is_floating_point()}
        (self.dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(sums))
