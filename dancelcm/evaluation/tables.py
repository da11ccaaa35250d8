"""Markdown tables and the files evaluate and report write; metric columns, headers, directions and rounding come
from the registry (:mod:`dancelcm.evaluation.metrics`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from dancelcm.evaluation.deltas import seed_delta, summarise_deltas
from dancelcm.evaluation.metrics import (
    BY_KEY,
    COMPARED,
    HEADLINE,
    PAIRED_CLIP_DECIMALS,
    PER_CLIP_DECIMALS,
    TABLE_COLUMNS,
    format_delta,
    format_run_value,
    format_spread,
    format_value,
)
from dancelcm.evaluation.plots import plot_quality_vs_nfe
from dancelcm.evaluation.runs import CONFIG_COLUMNS, shared_rows


def markdown_table(summary: dict) -> str:
    """evaluate's table: one row per sampler; mean (and the std over clips for per-clip metrics)."""
    present = [m for m in TABLE_COLUMNS if any(m.key in v for v in summary.values())]
    lines = ["| sampler | " + " | ".join(m.header for m in present) + " |", "|---" * (len(present) + 1) + "|"]
    for name, v in summary.items():
        lines.append(f"| {name} | " + " | ".join(format_value(m.key, v.get(m.key)) for m in present) + " |")
    return "\n".join(lines)


def write_outputs(result: dict, out_dir: Path, header: str = "") -> list[str]:
    """evaluate's files: ``metrics.json``, ``table.md`` (``header`` above the table), ``per_clip.csv``,
    ``quality_vs_nfe.png`` and, when clips were kept, ``samples.{png,mp4}``; returns the names written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_quality_vs_nfe(result["samplers"], out_dir / "quality_vs_nfe.png")
    (out_dir / "metrics.json").write_text(json.dumps(result["samplers"], indent=1))
    table = markdown_table(result["samplers"])
    if result.get("kept"):
        from dancelcm.media import write_samples

        kept = result["kept"]
        write_samples(out_dir, "samples", kept["batch"], kept["samples"])
        rows = " | ".join(["pose", "ground truth", *kept["samples"]])
        table += f"\n\n`samples.png` / `samples.mp4`, per clip, the reference frame then one row each: {rows}."
    (out_dir / "table.md").write_text((header + "\n\n" if header else "") + table + "\n")
    write_per_clip(result, out_dir / "per_clip.csv")
    names = ["metrics.json", "table.md", "per_clip.csv", "quality_vs_nfe.png"]
    if result.get("kept"):  # (a samples.png of an earlier run in the folder is not this run's)
        names += [n for n in ("samples.png", "samples.mp4") if (out_dir / n).is_file()]
    return names


def write_per_clip(result: dict, path: Path) -> None:
    """One row per (sampler, clip): its video id and every per-clip metric (columns in name order)."""
    with open(path, "w") as f:
        keys = sorted({k for v in result["per_clip"].values() for k in v})
        f.write("sampler,clip,video_id," + ",".join(keys) + "\n")
        for name, per in result["per_clip"].items():
            ids = result.get("video_ids", {}).get(name, [])
            n = len(next(iter(per.values())))
            for i in range(n):
                vid = ids[i] if i < len(ids) else ""
                values = ",".join(f"{per[k][i]:.{PER_CLIP_DECIMALS}f}" if k in per else "" for k in keys)
                f.write(f'"{name}",{i},{vid},{values}\n')


def runs_table(entries: list[dict], metrics: list[str]) -> str:
    """The report's tables per run: the config columns and last value of each of ``metrics`` (training curves),
    then, for the evaluated runs, the headline metrics of every sampler."""
    cols = [c for c, _ in CONFIG_COLUMNS if any(e["config"].get(c) is not None for e in entries)]
    present = [m for m in metrics if m == "step" or any(m in e["last"] for e in entries)]
    head = ["run", *cols, *present]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for e in entries:
        cells = [e["run"], *(format_run_value(e["config"].get(c)) for c in cols)]
        cells += [format_run_value(e["step"]) if m == "step" else format_run_value(e["last"].get(m)) for m in present]
        lines.append("| " + " | ".join(cells) + " |")
    evals = [(e["run"], s, v) for e in entries for s, v in e["eval"].items()]
    if evals:
        keys = [k for k in HEADLINE if any(k in v for _, _, v in evals)]
        lines += ["", "| run | sampler | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
        for run, sampler, v in evals:
            lines.append(f"| {run} | {sampler} | " + " | ".join(format_run_value(v.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def write_runs_csv(entries: list[dict], path: Path) -> None:
    """``report.csv``: one row per run, its step, config columns and the last value of every logged metric."""
    with open(path, "w", newline="") as fh:
        keys = sorted({k for e in entries for k in e["last"]})
        w = csv.writer(fh)
        w.writerow(["run", "step", *(c for c, _ in CONFIG_COLUMNS), *keys])
        for e in entries:
            w.writerow(
                [
                    e["run"],
                    e["step"],
                    *(e["config"].get(c) for c, _ in CONFIG_COLUMNS),
                    *(e["last"].get(k) for k in keys),
                ]
            )


def seed_table(study: dict) -> str:
    """Markdown: one row per (run group, sampler), each metric as mean ± spread over seeds (n seeds); a sampler
    that is the same in every group (the teacher reference) once, first, as ``all runs``."""
    keys = [k for k in HEADLINE if any(k in m for g in study.values() for m in g.values())]
    lines = ["| runs | sampler | seeds | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    shared = shared_rows(study)
    rows = [("all runs", s, m) for s, m in shared.items()]
    rows += [(g, s, m) for g, samplers in study.items() for s, m in samplers.items() if s not in shared]
    for g, sampler, m in rows:
        n = max(v["n"] for v in m.values())
        cells = ["" if k not in m else format_spread(k, m[k]["mean"], m[k]["std"]) for k in keys]
        lines.append(f"| {g} | {sampler} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def delta_table(deltas: dict, reference: str) -> str:
    """Markdown: one row per (group, student sampler); each cell ``mean delta ± noise``, ``*`` above noise."""
    keys = [k for k in HEADLINE if any(k in m for g in deltas.values() for m in g.values())]
    lines = [
        f"| runs - {reference} | sampler | seeds | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 3) + "|",
    ]
    for g, samplers in deltas.items():
        for sampler, m in samplers.items():
            n = max(len(v["seeds"]) for v in m.values())
            cells = ["" if k not in m else format_delta(m[k], BY_KEY[k].delta_places) for k in keys]
            lines.append(f"| {g} | {sampler} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def delta_matrix(deltas: dict, reference: str, sampler: str) -> str:
    """Markdown for one student sampler: every metric (a row) against every group (a column), each cell the
    group's paired difference from ``reference`` as in :func:`delta_table`, with which direction is better."""
    groups = [g for g, samplers in deltas.items() if sampler in samplers]
    keys = [k for k in COMPARED if any(k in deltas[g][sampler] for g in groups)]
    lines = [
        f"| {sampler}: metric | better | " + " | ".join(f"{g} - {reference}" for g in groups) + " |",
        "|---" * (len(groups) + 2) + "|",
    ]
    for k in keys:
        cells = []
        for g in groups:
            v = deltas[g][sampler].get(k)
            cells.append("" if v is None else format_delta(v, BY_KEY[k].delta_places))
        lines.append(f"| {k} | {BY_KEY[k].better} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_students(
    per_clip: dict, new: str, reference: str, steps: tuple[int, ...] = (1, 2, 4), label: str | None = None
) -> str:
    """Markdown: student ``new`` minus student ``reference`` of one evaluation (``read_per_clip`` of its
    ``per_clip.csv``), paired by clip, one row per metric and a column per step count; ``*`` beyond 2 standard
    errors (one run each, so the clips are the only noise). ``label`` names the reference in the title."""
    lines = [f"{new} minus {label or reference}, paired by clip: mean ± standard error over clips; * beyond 2 SE.", ""]
    lines += [
        "| metric | " + " | ".join(f"{n} step{'s' * (n > 1)}" for n in steps) + " |",
        "|---" * (len(steps) + 1) + "|",
    ]
    for k in COMPARED:
        cells = []
        for n in steps:
            sampler = f"{n}-step"
            a = {"per_clip": {sampler: per_clip.get(f"{new} {sampler}", {})}, "eval": {}}
            b = {"per_clip": {sampler: per_clip.get(f"{reference} {sampler}", {})}, "eval": {}}
            d = seed_delta("", a, b, sampler, k)
            cells.append("" if d is None else format_delta(summarise_deltas([d]), PAIRED_CLIP_DECIMALS))
        if any(cells):
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
