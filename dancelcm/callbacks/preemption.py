"""Preemption: SIGTERM / SIGUSR1 write ``last.ckpt`` at the next batch boundary, then the process exits.

Clusters announce the end of a job with a signal (SLURM: ``--signal=USR1@90`` or SIGTERM before the kill;
cloud spot instances: SIGTERM). The handler only sets a flag; the checkpoint is written when the next
step would start, after the running optimizer step, so it is a consistent state (weights, EMA target, optimizer,
LR schedule, loop counters and the data position) and resuming with ``ckpt_path=auto`` continues exactly.
Under DDP the ranks agree on the flag each step (one all-reduce of a boolean), so they stop together
and rank 0 writes the file. Writes are atomic (``dancelcm.callbacks.checkpoints.AtomicCheckpointIO``: a temporary
file beside the target, renamed into place), so a kill during the write leaves the previous ``last.ckpt`` intact.

``dancelcm.callbacks.diagnostics`` has fault injectors to check all this (the tests use them).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)

SIGNALS = ("SIGTERM", "SIGUSR1")


class Preempted(SystemExit):
    """Raised after the preemption checkpoint: ends the process with 128 + the signal number."""


class Preemption(L.Callback):
    def __init__(self, checkpoint_path: str | Path, signals: tuple[str, ...] | None = None):
        self.path = Path(checkpoint_path)
        if signals is None:  # under submitit (+launcher=slurm) also its requeue signal, then its handler
            signals = SIGNALS + (("SIGUSR2",) if os.environ.get("SUBMITIT_EXECUTOR") else ())
        self.signals = [getattr(signal, s) for s in signals if hasattr(signal, s)]
        self.received: int | None = None
        self._saved = False
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.received is None:
            log.warning("received %s: saving a checkpoint after the current step", signal.Signals(signum).name)
        self.received = signum

    def on_train_start(self, trainer, pl_module) -> None:
        # Installed after Lightning's own handlers (which would stop without saving) and in place of them.
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop or self._saved:
            return
        # After the optimizer step: the state a resumed run continues from exactly.
        trainer.save_checkpoint(str(self.path))
        self._saved = True
        if self.received is None:  # another rank got the signal
            self.received = signal.SIGTERM
        log.warning(
            "preempted: checkpoint at step %d written to %s; resume with ckpt_path=auto",
            trainer.global_step,
            self.path,
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Exit before the next step: by now the saved step's metrics are logged. (Not `trainer.should_stop`:
        # it would first run a validation with sample videos, which can outlast a scheduler's grace period.)
        if not self._saved:
            return
        for lg in trainer.loggers:
            lg.save()
        previous = self._previous.get(self.received)
        if callable(previous) and not type(previous).__module__.startswith("lightning"):
            previous(self.received, None)  # e.g. submitit's requeue, now that the checkpoint is on disk
        raise Preempted(self.exit_code)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    @property
    def exit_code(self) -> int:
        """128 + the signal number when preempted (the shell convention for 'ended by a signal'), else 0."""
        return 128 + int(self.received) if self.received is not None else 0
