"""Training health: a warning when the training loss starts to spike, the first sign of a diverging run.

A diverging consistency distillation stays finite (the non-finite guards in ``lit/common.py`` never fire) while its
samples decay into noise: in ``experiments/convergence/`` the VideoLCM baseline's loss, flat at ~0.007, began to
jump above 5x its running median after ~700 steps (the rule below fires first at step 749 on its logged losses,
``experiments/convergence/spikes.py``), hundreds of steps before its samples had collapsed at 1500. This callback
counts such spikes and says so in the log (once per window) and as ``train/loss_spikes`` in every logger, so an
overnight sweep shows which runs went wrong without anyone reading loss curves. It only warns; it never stops a run.

The rule (written for this project; Lightning has no such callback): a step's loss is a *spike* when it exceeds
``factor`` x the median of the ``window`` steps before it; the run is flagged when at least ``min_spikes`` spikes fall
within the last ``window`` steps (reported at most once per window). A few spikes do not move the median, and a
falling loss (early training) never counts. Losses are read from the device in batches of ``every`` steps (no sync per
step).
"""

from __future__ import annotations

import logging
import statistics
from collections import deque

import lightning as L
import torch

log = logging.getLogger(__name__)


class SpikeTracker:
    """The rule above on a stream of (step, loss) pairs; :meth:`update` returns a warning message or None."""

    def __init__(self, window: int = 100, factor: float = 5.0, min_spikes: int = 3):
        if int(window) < 2 or not factor > 1 or int(min_spikes) < 1:
            raise ValueError(
                f"loss spike monitor: window={window!r} (>= 2), factor={factor!r} (> 1), "
                f"min_spikes={min_spikes!r} (>= 1): set callbacks.loss_spikes.* so, or null (off)"
            )
        self.window, self.factor, self.min_spikes = int(window), float(factor), int(min_spikes)
        self.recent: deque[float] = deque(maxlen=self.window)
        self.spikes: deque[tuple[int, float]] = deque()  # (step, loss / median) within the last window
        self.warned_at: int | None = None

    def update(self, step: int, loss: float) -> str | None:
        msg = None
        if len(self.recent) == self.window:
            median = statistics.median(self.recent)
            if median > 0 and loss > self.factor * median:
                self.spikes.append((step, loss / median))
            while self.spikes and self.spikes[0][0] <= step - self.window:
                self.spikes.popleft()
            due = self.warned_at is None or step - self.warned_at >= self.window
            if len(self.spikes) >= self.min_spikes and due:
                self.warned_at = step
                worst = max(r for _, r in self.spikes)
                msg = (
                    f"training loss spikes: {len(self.spikes)} of the last {self.window} steps (up to step {step}) "
                    f"exceeded {self.factor:g}x the running median {median:.4g} (worst {worst:.1f}x, at steps "
                    f"{', '.join(str(s) for s, _ in self.spikes)}). The run may be diverging: compare its samples "
                    "with an earlier export, and consider a lower learning rate or a slower EMA target "
                    "(method.target.decay closer to 1)."
                )
        self.recent.append(float(loss))
        return msg

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "spikes": list(self.spikes), "warned_at": self.warned_at}

    def load_state_dict(self, state: dict) -> None:
        self.recent.clear()
        self.recent.extend(state.get("recent", [])[-self.window :])
        self.spikes = deque(tuple(s) for s in state.get("spikes", []))
        self.warned_at = state.get("warned_at")


class LossSpikes(L.Callback):
    """Warns (log + ``train/loss_spikes``, the spike count in the last ``window`` steps) when the training loss
    the LightningModule returns starts to spike; see the module docstring. Config: ``callbacks.loss_spikes``."""

    def __init__(self, window: int = 100, factor: float = 5.0, min_spikes: int = 3, every: int = 10):
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
            steps = [s for s, _ in self.pending]
            values = torch.stack([v for _, v in self.pending]).cpu().tolist()
            self.pending.clear()
            for step, value in zip(steps, values, strict=True):
                msg = self.tracker.update(step, value)
                if msg and trainer.is_global_zero:
                    self.warnings += 1
                    log.warning(msg)
        # every batch (a Python float, no sync), so the loggers' own interval always finds a value
        pl_module.log("train/loss_spikes", float(len(self.tracker.spikes)), on_step=True, on_epoch=False)

    def state_dict(self) -> dict:
        return self.tracker.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.tracker.load_state_dict(state_dict)
