"""Training health: a warning when the training loss starts to spike, the first sign of a diverging run.

A diverging consistency distillation stays finite (the non-finite guards in ``lit/common.py`` never fire) while its
samples decay into noise: in ``experiments/convergence/`` the VideoLCM baseline's loss, flat at ~0.007, began to jump
to 5-35x its running median after ~700 steps, while its samples collapsed by step 1500 (replayed on its logged losses,
every 10th step, the default rule scaled to them fires first at step 879: ``experiments/convergence/spikes.py``). This
callback counts such spikes and says so in the log (once per window) and as ``train/loss_spikes`` in every logger, so
an overnight sweep shows which runs went wrong without anyone reading loss curves. It only warns; it never stops a
run.

The rule (written for this project; Lightning has no such callback): a loss is a *spike* when it exceeds ``factor`` x
the median of the ``window`` losses before it; the run is flagged when at least ``min_spikes`` spikes fall within the
last ``window`` losses (reported at most once per window). A few spikes do not move the median, and a falling loss
(early training) never counts. Losses are read from the device (and averaged over the ranks) in batches of ``every``.

The default factor 10 is set above the healthy tails measured here: single-sample losses (batch 1, 300 batches) reach
8.8x their median for the shipped teacher's diffusion loss (the sampled timestep moves it) and 3.3x for a trained
DanceLCM student's; the teacher at batch 8, 2.7x. With factor 5 the batch-1 teacher was flagged once in 300 steps.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque

import lightning as L
import torch

log = logging.getLogger(__name__)


class SpikeTracker:
    """The rule above on a stream of losses, one :meth:`update` per loss (a training batch; under gradient
    accumulation each micro-batch counts), ``step`` only labels them in the message. Returns a warning or None."""

    def __init__(self, window: int = 100, factor: float = 10.0, min_spikes: int = 3):
        if int(window) < 2 or not factor > 1 or int(min_spikes) < 1:
            raise ValueError(
                f"loss spike monitor: window={window!r} (>= 2), factor={factor!r} (> 1), "
                f"min_spikes={min_spikes!r} (>= 1): set callbacks.loss_spikes.* so, or null (off)"
            )
        self.window, self.factor, self.min_spikes = int(window), float(factor), int(min_spikes)
        self.recent: deque[float] = deque(maxlen=self.window)
        self.spikes: deque[tuple[int, int, float]] = deque()  # (index, step, loss / median) in the last window
        self.count = 0  # losses seen
        self.warned_at: int | None = None  # the index of the last warning

    def update(self, step: int, loss: float) -> str | None:
        msg = None
        index, self.count = self.count, self.count + 1
        if len(self.recent) == self.window:
            median = statistics.median(self.recent)
            if median > 0 and loss > self.factor * median:
                self.spikes.append((index, int(step), loss / median))
            while self.spikes and self.spikes[0][0] <= index - self.window:
                self.spikes.popleft()
            due = self.warned_at is None or index - self.warned_at >= self.window
            if len(self.spikes) >= self.min_spikes and due:
                self.warned_at = index
                worst = max(r for _, _, r in self.spikes)
                msg = (
                    f"training loss spikes: {len(self.spikes)} of the last {self.window} losses (up to step {step}) "
                    f"exceeded {self.factor:g}x the running median {median:.4g} (worst {worst:.1f}x, at steps "
                    f"{', '.join(str(s) for _, s, _ in self.spikes)}). The run may be diverging: compare its "
                    "samples with an earlier export, and consider a lower learning rate or a slower EMA target "
                    "(method.target.decay closer to 1)."
                )
        self.recent.append(float(loss))
        return msg

    def state_dict(self) -> dict:
        return {
            "recent": list(self.recent),
            "spikes": [list(s) for s in self.spikes],
            "count": self.count,
            "warned_at": self.warned_at,
        }

    def load_state_dict(self, state: dict) -> None:
        self.recent.clear()
        self.recent.extend(state.get("recent", [])[-self.window :])
        self.spikes = deque(tuple(s) for s in state.get("spikes", []))
        self.count = int(state.get("count", 0))
        self.warned_at = state.get("warned_at")


class LossSpikes(L.Callback):
    """Warns (log + ``train/loss_spikes``, the spike count in the last ``window`` losses) when the training loss
    starts to spike; see the module docstring. Config: ``callbacks.loss_spikes``. The loss watched is the one
    ``training_step`` returns, averaged over the ranks (what ``train/loss`` logs): one collective per ``every``
    batches, on every rank (the non-finite policy skips batches jointly, so the ranks stay in step)."""

    def __init__(self, window: int = 100, factor: float = 10.0, min_spikes: int = 3, every: int = 10):
        self.tracker = SpikeTracker(window, factor, min_spikes)
        self.every = max(1, int(every))
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.warnings = 0
        self.step = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.step = trainer.global_step  # the step as training_step sees it (the end hook sees it advanced)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:  # a batch the non-finite policy skipped
            return
        self.pending.append((self.step, loss.detach().float().reshape(())))
        if len(self.pending) >= self.every:
            self._flush(trainer, pl_module)
        # every batch, so the loggers' own interval always finds a value
        pl_module.log("train/loss_spikes", float(len(self.tracker.spikes)), on_step=True, on_epoch=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.pending:
            self._flush(trainer, pl_module)

    def _flush(self, trainer, pl_module) -> None:
        steps = [s for s, _ in self.pending]
        values = torch.stack([v.to(pl_module.device) for _, v in self.pending])
        values = trainer.strategy.reduce(values, reduce_op="mean").cpu().tolist()
        self.pending.clear()
        for step, value in zip(steps, values, strict=True):
            msg = self.tracker.update(step, value)
            if msg and trainer.is_global_zero:
                self.warnings += 1
                log.warning(msg)

    def state_dict(self) -> dict:
        # the losses not yet read go along (this rank's, unreduced: a resumed run averages rank 0's)
        pending = [[s, float(v)] for s, v in self.pending]
        return {**self.tracker.state_dict(), "pending": pending}

    def load_state_dict(self, state_dict: dict) -> None:
        self.tracker.load_state_dict(state_dict)
        self.pending = [(int(s), torch.tensor(float(v))) for s, v in state_dict.get("pending", [])]
