"""``python -m dancelcm.report runs=DIR``: the runs of a sweep (or any runs) side by side, from the local run
folders alone (no W&B server): a markdown table, a CSV and a plot of the training curves.

A run is a folder with ``csv/version_*/metrics.csv`` (every launch of a resumed run is merged by step)
and, when Hydra wrote it, ``.hydra/config.yaml`` and ``.hydra/overrides.yaml``. The table has one row per
run: the config values an ablation varies (K, motion weight, face injection, aux head, ...), the last
logged value of each metric, and, when ``<run>/eval/metrics.json`` exists (``python -m dancelcm.evaluate
... out_dir=<run>/eval``), the evaluation's headline numbers for the run's students. Runs that differ only by
``seed=`` are also averaged: ``over_seeds.json``, a table (mean ± the spread between seeds) and
``over_seeds.png`` (each metric against student steps, error bars = that spread).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import statistics
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

# config keys an ablation compares: (column, dotted path in the composed config)
CONFIG_COLUMNS = (
    ("K", "method.segments.num_segments"),
    ("motion w", "method.loss.motion_weight"),
    ("aux w", "method.loss.aux_weight"),
    ("aux head", "method.aux_head"),
    ("face", "method.face.enabled"),
    ("target", "method.target.kind"),
    ("seed", "seed"),
)
DEFAULT_METRICS = ("train/loss_cd", "val/loss_cd", "train/loss_aux", "step")
EVAL_METRICS = ("psnr_vs_teacher", "psnr_figure", "psnr_face", "psnr_motion", "sharpness", "fd")


def find_runs(root: Path) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds Lightning CSV metrics."""
    runs = sorted({p.parent.parent.parent for p in root.glob("**/csv/version_*/metrics.csv")})
    return [r for r in runs if not any(part.startswith(".") for part in r.relative_to(root).parts)]


def read_metrics(run: Path) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] over every launch of the run (a later launch wins a repeated step)."""
    series: dict[str, dict[int, float]] = {}
    for f in sorted((run / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        with open(f) as fh:
            for row in csv.DictReader(fh):
                step = int(float(row.get("step") or 0))
                for k, v in row.items():
                    if k in ("step", "epoch") or v in ("", None):
                        continue
                    series.setdefault(k, {})[step] = float(v)
    return {k: sorted(v.items()) for k, v in series.items()}


def _select(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def read_run(run: Path, root: Path) -> dict:
    hydra_dir = run / ".hydra"
    cfg = yaml.safe_load((hydra_dir / "config.yaml").read_text()) if (hydra_dir / "config.yaml").exists() else {}
    overrides = (
        yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) if (hydra_dir / "overrides.yaml").exists() else []
    )
    metrics = read_metrics(run)
    entry = {
        "run": str(run.relative_to(root)) if run != root else run.name,
        "name": cfg.get("name", run.name),
        "ablation": cfg.get("ablation"),
        "overrides": overrides,
        "config": {col: _select(cfg, path) for col, path in CONFIG_COLUMNS},
        "last": {k: v[-1][1] for k, v in metrics.items()},
        "step": max((s for v in metrics.values() for s, _ in v), default=0),
        "series": metrics,
        "eval": {},
    }
    eval_file = run / "eval" / "metrics.json"
    if eval_file.exists():
        for sampler, values in json.loads(eval_file.read_text()).items():
            entry["eval"][sampler] = {
                k: (values[k]["mean"] if isinstance(values.get(k), dict) else values.get(k))
                for k in EVAL_METRICS
                if k in values
            }
    return entry


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown(entries: list[dict], metrics: list[str]) -> str:
    cols = [c for c, _ in CONFIG_COLUMNS if any(e["config"].get(c) is not None for e in entries)]
    present = [m for m in metrics if m == "step" or any(m in e["last"] for e in entries)]
    head = ["run", *cols, *present]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for e in entries:
        cells = [e["run"], *(_fmt(e["config"].get(c)) for c in cols)]
        cells += [_fmt(e["step"]) if m == "step" else _fmt(e["last"].get(m)) for m in present]
        lines.append("| " + " | ".join(cells) + " |")
    evals = [(e["run"], s, v) for e in entries for s, v in e["eval"].items()]
    if evals:
        keys = [k for k in EVAL_METRICS if any(k in v for _, _, v in evals)]
        lines += ["", "| run | sampler | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
        for run, sampler, v in evals:
            lines.append(f"| {run} | {sampler} | " + " | ".join(_fmt(v.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def group_key(entry: dict) -> str:
    """What a run is apart from its seed: its overrides without ``seed=...`` (its name when it has none)."""
    rest = [o for o in entry["overrides"] if not re.match(r"^\+*seed=", o)]
    return ",".join(rest) if rest else entry["name"]


def over_seeds(entries: list[dict]) -> dict[str, dict[str, dict[str, dict]]]:
    """``{group: {sampler: {metric: {mean, std, n, seeds}}}}``: the evaluation of runs that differ only by their
    seed, averaged over the seeds; ``std`` is the spread between seeds (NaN with one seed)."""
    groups: dict[str, list[dict]] = {}
    for e in entries:
        if e["eval"]:
            groups.setdefault(group_key(e), []).append(e)
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for g, runs in groups.items():
        samplers = sorted({s for e in runs for s in e["eval"]}, key=_sampler_order)
        for sampler in samplers:
            for k in EVAL_METRICS:
                vals = [e["eval"][sampler][k] for e in runs if k in e["eval"].get(sampler, {})]
                vals = [v for v in vals if v is not None and not math.isnan(v)]
                if vals:
                    mean = statistics.fmean(vals)
                    std = statistics.stdev(vals) if len(vals) > 1 else math.nan
                    seeds = sorted(str(e["config"].get("seed")) for e in runs if k in e["eval"].get(sampler, {}))
                    out.setdefault(g, {}).setdefault(sampler, {})[k] = {
                        "mean": mean,
                        "std": std,
                        "n": len(vals),
                        "seeds": seeds,
                    }
    return out


def _sampler_order(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)-step", name)
    return (int(m.group(1)) if m else 10**6, name)


def seed_table(study: dict) -> str:
    """Markdown: one row per (run group, sampler), each metric as mean ± spread over seeds (n seeds)."""
    keys = [k for k in EVAL_METRICS if any(k in m for g in study.values() for m in g.values())]
    lines = ["| runs | sampler | seeds | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    for g, samplers in study.items():
        for sampler, m in samplers.items():
            n = max(v["n"] for v in m.values())
            cells = []
            for k in keys:
                v = m.get(k)
                if v is None:
                    cells.append("")
                else:
                    fmt = ".3f" if k == "sharpness" else ".2f"
                    spread = "" if math.isnan(v["std"]) else f" ± {v['std']:{fmt}}"
                    cells.append(f"{v['mean']:{fmt}}{spread}")
            lines.append(f"| {g} | {sampler} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_study(study: dict, path: Path) -> Path | None:
    """One panel per evaluation metric: student steps on x, one line per run group, error bars = seed spread."""
    from dancelcm.plotting import colours, finish, panel_row

    keys = [k for k in EVAL_METRICS if any(k in m for g in study.values() for s, m in g.items() if "-step" in s)]
    if not keys:
        return None
    fig, axes = panel_row(len(keys), 4.2, 3.4)
    colour = colours(study)
    for ax, k in zip(axes, keys):
        for g, samplers in study.items():
            pts = [(_sampler_order(s)[0], m[k]) for s, m in samplers.items() if "-step" in s and k in m]
            if pts:
                pts.sort(key=lambda p: p[0])
                err = [0.0 if math.isnan(v["std"]) else v["std"] for _, v in pts]
                ax.errorbar(
                    [n for n, _ in pts],
                    [v["mean"] for _, v in pts],
                    yerr=err,
                    marker="o",
                    capsize=3,
                    label=g[:60],
                    color=colour[g],
                )
    return finish(fig, axes, path, "student steps", list(keys), xlog=True)


def plot(entries: list[dict], metrics: list[str], path: Path) -> Path | None:
    from dancelcm.plotting import colours, finish, panel_row

    curves = [m for m in metrics if m != "step" and any(len(e["series"].get(m, [])) > 0 for e in entries)]
    if not curves:
        return None
    fig, axes = panel_row(len(curves), 5.0, 3.6)
    colour = colours(e["run"] for e in entries)
    for ax, m in zip(axes, curves):
        for e in entries:
            pts = e["series"].get(m, [])
            if pts:
                ax.plot(
                    [s for s, _ in pts],
                    [v for _, v in pts],
                    marker="." if len(pts) < 30 else None,
                    label=e["run"],
                    color=colour[e["run"]],
                )
    return finish(fig, axes, path, "step", curves)


def report(root: str | Path, out: str | Path | None = None, metrics: list[str] | None = None) -> dict:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"runs={root}: no such folder (a run folder or a sweep folder under runs/)")
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"runs={root}: no run folders here (none has csv/version_*/metrics.csv)")
    metrics = list(metrics or DEFAULT_METRICS)
    entries = [read_run(r, root) for r in runs]
    out = Path(out) if out else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(entries, metrics)
    study = over_seeds(entries)
    if study:
        table += (
            "\n\nEvaluation over seeds: runs that differ only by `seed=` averaged; ± is the spread (sample std) "
            f"between seeds.\n\n{seed_table(study)}"
        )
    (out / "report.md").write_text(f"Runs under `{root}`.\n\n{table}\n")
    with open(out / "report.csv", "w", newline="") as fh:
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
    png = plot(entries, metrics, out / "report.png")
    if study:
        (out / "over_seeds.json").write_text(json.dumps(study, indent=1))
        plot_study(study, out / "over_seeds.png")
    log.info("%s\n\nwrote %s, %s%s", table, out / "report.md", out / "report.csv", f", {png}" if png else "")
    return {"runs": entries, "table": table, "out": str(out), "over_seeds": study}


def main() -> None:
    import sys

    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    unknown = set(args) - {"runs", "out", "metrics"}
    if unknown or "runs" not in args:
        raise SystemExit(
            "usage: python -m dancelcm.report runs=DIR [out=DIR] [metrics=[train/loss_cd,val/loss_cd,...]]"
            + (f" (unknown: {sorted(unknown)})" if unknown else "")
        )
    metrics = args.get("metrics")
    metrics = [m.strip() for m in metrics.strip("[]").split(",") if m.strip()] if metrics else None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report(args["runs"], args.get("out"), metrics)


if __name__ == "__main__":
    main()
