"""Would the loss-spike monitor (dancelcm/callbacks/health.py, on by default since these runs were made) have
flagged them? Replays each job's logged training losses through its rule:

    PYTHONPATH=. python experiments/convergence/spikes.py

The CSV logs hold only every 10th step's loss, so the monitor's default (3 spikes, each > 10x the median of the 100
losses before it, within 100 losses) cannot be replayed exactly: the window is scaled to 10 logged values (100
steps) and the spike count is shown for 1, 2 and 3 logged spikes in it (the real monitor sees ten times as many
losses, so its first warning is likely near the 1-spike column). Prints a Markdown table.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from dancelcm.callbacks.health import SpikeTracker

HERE = Path(__file__).parent


def logged_losses(job: Path) -> dict[int, float]:
    losses: dict[int, float] = {}
    for path in sorted(job.glob("csv/version_*/metrics.csv")):  # version_1 after a resume overrides overlaps
        for row in csv.DictReader(path.read_text().splitlines()):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


def main(log_every: int = 10, window_steps: int = 100, factor: float = 10.0) -> None:
    counts = (1, 2, 3)
    head = " | ".join(f"first warning, {n} logged spike{'s' if n > 1 else ''}" for n in counts)
    print(f"| job | logged steps | {head} |")
    print("|---|---|" + "---|" * len(counts))
    for job in sorted(p for p in (HERE / "jobs").iterdir() if p.is_dir()):
        losses = logged_losses(job)
        if not losses:
            continue
        cells = []
        for n in counts:
            tracker = SpikeTracker(window=window_steps // log_every, factor=factor, min_spikes=n)
            warned = [step for step in sorted(losses) if tracker.update(step, losses[step])]
            cells.append(f"step {warned[0]} ({len(warned)} warnings)" if warned else "none")
        print(f"| {job.name} | {min(losses)}-{max(losses)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
