"""Would the loss-spike monitor (dancelcm/callbacks/health.py, on by default since these runs were made) have
flagged them? Replays each job's logged training losses through its rule:

    PYTHONPATH=. python experiments/convergence/spikes.py

The CSV logs hold every ``log_every`` th step's loss (10 here), so the window and spike count are scaled to match
the monitor's defaults over the same span of steps: a window of 100 steps is 10 logged values, and the default of
3 spikes in 100 steps is about 0.3 of a logged one, so 1 logged spike counts. Prints a Markdown table.
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
        for row in csv.DictReader(path.open()):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


def main(log_every: int = 10, window_steps: int = 100, factor: float = 5.0) -> None:
    print(
        f"| job | logged steps | first warning at step | warnings | (window {window_steps} steps, factor {factor:g}) |"
    )
    print("|---|---|---|---|---|")
    for job in sorted(p for p in (HERE / "jobs").iterdir() if p.is_dir()):
        losses = logged_losses(job)
        if not losses:
            continue
        tracker = SpikeTracker(window=window_steps // log_every, factor=factor, min_spikes=1)
        steps = sorted(losses)  # the tracker counts in logged values (its steps), reported here as training steps
        warned = [steps[i] for i, step in enumerate(steps) if tracker.update(i, losses[step])]
        first = warned[0] if warned else "none"
        print(f"| {job.name} | {min(losses)}-{max(losses)} | {first} | {len(warned)} | |")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
