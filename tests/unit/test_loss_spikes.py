"""The loss-spike monitor (dancelcm/callbacks/health.py): the rule on synthetic loss streams, and the callback in
a real Lightning fit (warning logged, metric logged, state carried by the checkpoint)."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from dancelcm.callbacks.health import LossSpikes, SpikeTracker


def _noisy(n: int, level: float = 0.05, seed: int = 0) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return (level * torch.exp(0.3 * torch.randn(n, generator=g))).tolist()  # log-normal, +-35 %


def _run(tracker: SpikeTracker, losses) -> list[tuple[int, str]]:
    out = []
    for step, loss in enumerate(losses):
        msg = tracker.update(step, loss)
        if msg:
            out.append((step, msg))
    return out


def test_a_healthy_noisy_or_falling_loss_never_warns():
    assert _run(SpikeTracker(), _noisy(3000)) == []
    falling = [1.0 * math.exp(-s / 200) + 0.01 for s in range(2000)]  # early training: steep fall, no spikes
    assert _run(SpikeTracker(), falling) == []
    # isolated outliers (one per window, 8x) stay under min_spikes
    losses = _noisy(1000)
    for s in range(150, 1000, 120):
        losses[s] *= 8
    assert _run(SpikeTracker(), losses) == []


def test_spikes_warn_once_per_window_naming_the_steps():
    losses = _noisy(1000)
    for s in (400, 430, 470):  # three 10x spikes within 100 steps
        losses[s] *= 10
    warnings = _run(SpikeTracker(window=100, factor=5, min_spikes=3), losses)
    assert [s for s, _ in warnings] == [470]
    msg = warnings[0][1]
    assert "3 of the last 100 losses" in msg and "400, 430, 470" in msg and "diverging" in msg
    # a run that keeps spiking is reported again, but at most once per window
    losses = _noisy(1000)
    for s in range(300, 1000, 10):
        losses[s] *= 20
    steps = [s for s, _ in _run(SpikeTracker(window=100, factor=5, min_spikes=3), losses)]
    assert steps[0] == 320 and len(steps) >= 5
    assert all(b - a >= 100 for a, b in zip(steps, steps[1:], strict=False))


def test_the_window_counts_losses_not_optimizer_steps():
    """Under gradient accumulation (4 micro-batches a step) three spikes 120 losses apart (30 steps) are not three
    within a window of 100 losses; 40 apart they are, and the message names their optimizer steps."""
    for gap, expected in ((60, []), (40, [280])):
        losses = _noisy(800)
        for i in (200, 200 + gap, 200 + 2 * gap):
            losses[i] *= 10
        tracker = SpikeTracker(window=100, factor=5, min_spikes=3)
        warned = [(i, tracker.update(i // 4, v)) for i, v in enumerate(losses)]
        assert [i for i, m in warned if m] == expected
    assert "at steps 50, 60, 70" in next(m for _, m in warned if m)


def test_the_median_resists_the_spikes_it_counts():
    """A sustained jump to 10x is reported at once, then (after half a window) it is the median's new level and
    the reports stop."""
    losses = [0.01] * 300 + [0.1] * 500
    steps = [s for s, _ in _run(SpikeTracker(window=100, factor=5, min_spikes=3), losses)]
    assert steps[0] == 302 and max(steps) < 450


def test_state_round_trip_continues_identically():
    losses = _noisy(600)
    for s in range(350, 600, 15):
        losses[s] *= 10
    whole = _run(SpikeTracker(factor=5), losses)
    first = SpikeTracker(factor=5)
    _run(first, losses[:380])
    second = SpikeTracker(factor=5)
    second.load_state_dict(first.state_dict())
    rest = [(s, m) for s, m in ((s, second.update(s, v)) for s, v in enumerate(losses) if s >= 380) if m]
    assert [s for s, _ in whole if s >= 380] == [s for s, _ in rest] and rest


@pytest.mark.parametrize("kwargs", [{"window": 1}, {"factor": 1.0}, {"min_spikes": 0}])
def test_bad_settings_name_the_option(kwargs):
    with pytest.raises(ValueError, match="callbacks.loss_spikes"):
        SpikeTracker(**kwargs)


class _Spiky(L.LightningModule):
    """Least squares on a fixed batch; the loss is multiplied by 50 at the given steps."""

    def __init__(self, spikes=()):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.spikes = set(spikes)
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.layer(self.x), self.y)
        return loss * 50 if self.global_step in self.spikes else loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(200, 1), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _fit(tmp_path, spikes, steps=80, ckpt=None, logger=False):
    monitor = LossSpikes(window=20, factor=5, min_spikes=2, every=5)
    trainer = L.Trainer(
        max_steps=steps,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
        default_root_dir=tmp_path,
        log_every_n_steps=7,
    )
    trainer.fit(_Spiky(spikes), ckpt_path=ckpt)
    return trainer, monitor


def test_the_callback_warns_in_a_fit_and_logs_the_count(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dancelcm.callbacks.health"):
        trainer, monitor = _fit(tmp_path, spikes=(50, 55), steps=60, logger=CSVLogger(tmp_path, name="csv"))
    assert monitor.warnings == 1
    assert "2 of the last 20 losses" in caplog.text and "50, 55" in caplog.text
    assert trainer.callback_metrics["train/loss_spikes"].item() == 2.0
    # the logger's interval (7) is not the monitor's (5): the count still reaches the CSV at each of its 8 rows;
    # at its last (step 55) the spike at 50 is counted, the one at 55 waits for the batch of five ending at 59
    rows = list(csv.DictReader(next(tmp_path.glob("csv/version_0/metrics.csv")).read_text().splitlines()))
    counts = [float(r["train/loss_spikes"]) for r in rows if r.get("train/loss_spikes")]
    assert len(counts) == 8 and counts[-1] == 1.0 and counts[:-1] == [0.0] * 7
    with caplog.at_level(logging.WARNING, logger="dancelcm.callbacks.health"):
        caplog.clear()
        _, quiet = _fit(tmp_path, spikes=())
    assert quiet.warnings == 0 and "spikes" not in caplog.text


def test_the_callback_state_travels_in_the_checkpoint(tmp_path):
    trainer, monitor = _fit(tmp_path, spikes=(50,), steps=60)
    path = tmp_path / "at60.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["callbacks"]  # the project loads checkpoints weights_only
    assert len(next(v for k, v in saved.items() if "LossSpikes" in k)["recent"]) == 20
    resumed, again = _fit(tmp_path, spikes=(50, 65), steps=80, ckpt=str(path))
    assert again.tracker.recent and again.warnings == 1  # the spike at 50 counted from before the resume


def test_on_by_default_and_off_with_null(tmp_path):
    from dancelcm.train import build_callbacks

    cfg = OmegaConf.create({"callbacks": OmegaConf.load(Path(__file__).parents[2] / "conf/callbacks/default.yaml")})
    assert any(isinstance(c, LossSpikes) for c in build_callbacks(cfg, tmp_path))
    cfg.callbacks.loss_spikes = None
    assert not any(isinstance(c, LossSpikes) for c in build_callbacks(cfg, tmp_path))


def test_losses_not_yet_read_travel_in_the_state():
    monitor = LossSpikes(window=20, every=10)
    monitor.tracker.update(0, 0.5)
    monitor.pending = [(7, torch.tensor(0.25)), (8, torch.tensor(0.75))]
    again = LossSpikes(window=20, every=10)
    again.load_state_dict(torch.load(_saved(monitor.state_dict()), weights_only=True))
    assert [(s, float(v)) for s, v in again.pending] == [(7, 0.25), (8, 0.75)]
    assert again.tracker.count == 1 and list(again.tracker.recent) == [0.5]


def _saved(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf
