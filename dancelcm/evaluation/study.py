"""The runs of a sweep (or any runs) side by side, from the local run folders alone (no W&B server).

The table has one row per run: the config values an ablation varies (K, motion weight, face injection, aux
head, ...), the last logged value of each training metric, and, when the run was evaluated, the headline
metrics of its samplers. Runs that differ only by ``seed=`` are also averaged: ``over_seeds.json``, a table
(mean ± the spread between seeds) and ``over_seeds.png`` (each metric against student steps, error bars = that
spread). ``compare=GROUP`` (e.g. ``variant=full``) adds each other group's difference from that one, paired by
seed and clip, with its noise (``deltas.json``, :func:`dancelcm.evaluation.deltas.paired_deltas`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dancelcm.cli import ConfigError, MissingPathError
from dancelcm.evaluation.deltas import paired_deltas
from dancelcm.evaluation.plots import plot_curves, plot_deltas, plot_study
from dancelcm.evaluation.runs import find_runs, over_seeds, read_run, sampler_order
from dancelcm.evaluation.tables import delta_matrix, delta_table, runs_table, seed_table, write_runs_csv

log = logging.getLogger(__name__)

DEFAULT_CURVES = ("train/loss_cd", "val/loss_cd", "train/loss_aux", "step")


def report(
    root: str | Path, out: str | Path | None = None, metrics: list[str] | None = None, compare: str | None = None
) -> dict:
    """Writes ``report.{md,csv,png}`` into ``out`` (default ``<root>/report``), and ``over_seeds.{json,png}`` /
    ``deltas.{json,png}`` when there are evaluated runs / a ``compare`` group; ``metrics``: the training curves
    (default :data:`DEFAULT_CURVES`). Returns the runs, the table and the statistics."""
    root = Path(root)
    if not root.exists():
        raise MissingPathError(f"runs={root}: no such folder (a run folder or a sweep folder under runs/)")
    runs = find_runs(root)
    if not runs:
        raise MissingPathError(f"runs={root}: no run folders here (none has csv/version_*/metrics.csv)")
    metrics = list(metrics or DEFAULT_CURVES)
    entries = [read_run(r, root) for r in runs]
    out = Path(out) if out else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = runs_table(entries, metrics)
    study = over_seeds(entries)
    if study:
        table += (
            "\n\nEvaluation over seeds: runs that differ only by `seed=` averaged; ± is the spread (sample std) "
            f"between seeds.\n\n{seed_table(study)}"
        )
    deltas = None
    if compare:
        if not study:
            raise MissingPathError(f"compare={compare}: no evaluated runs under {root} (<run>/eval/metrics.json)")
        try:
            deltas = paired_deltas(entries, compare)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        table += (
            f"\n\nEvery group minus `{compare}`, paired by seed and by clip: mean difference over seeds ± the "
            "noise (the larger of the per-seed standard error over clips and the spread between seeds); `*`: "
            "every seed agrees in sign, each seed's difference is over two standard errors, and the mean exceeds "
            f"the spread between seeds.\n\n{delta_table(deltas, compare)}"
        )
        samplers = sorted({s for g in deltas.values() for s in g}, key=sampler_order)
        table += "\n\nEvery metric `evaluate` writes, the same differences, one table per student sampler:"
        table += "".join(f"\n\n{delta_matrix(deltas, compare, s)}" for s in samplers)
        (out / "deltas.json").write_text(json.dumps(deltas, indent=1))
        plot_deltas(deltas, compare, out / "deltas.png")
    (out / "report.md").write_text(f"Runs under `{root}`.\n\n{table}\n")
    write_runs_csv(entries, out / "report.csv")
    png = plot_curves(entries, metrics, out / "report.png")
    if study:
        (out / "over_seeds.json").write_text(json.dumps(study, indent=1))
        plot_study(study, out / "over_seeds.png")
    log.info("%s\n\nwrote %s, %s%s", table, out / "report.md", out / "report.csv", f", {png}" if png else "")
    return {"runs": entries, "table": table, "out": str(out), "over_seeds": study, "deltas": deltas}
