"""``python -m dancelcm.report runs=DIR [compare=GROUP]``: the runs of a sweep (or any runs) side by side, from
the local run folders alone (no W&B server): a markdown table, a CSV and a plot of the training curves.

A run is a folder with ``csv/version_*/metrics.csv`` (every launch of a resumed run is merged by step)
and, when Hydra wrote it, ``.hydra/config.yaml`` and ``.hydra/overrides.yaml``. The table has one row per
run: the config values an ablation varies (K, motion weight, face injection, aux head, ...), the last
logged value of each metric, and, when ``<run>/eval/metrics.json`` exists (``python -m dancelcm.evaluate
... out_dir=<run>/eval``), the evaluation's headline numbers for the run's students. Runs that differ only by
``seed=`` are also averaged: ``over_seeds.json``, a table (mean ± the spread between seeds) and
``over_seeds.png`` (each metric against student steps, error bars = that spread). ``compare=GROUP`` (e.g.
``variant=full``) adds each other group's difference from that one, paired by seed and clip, with its noise
(``deltas.json``, :func:`paired_deltas`)."""

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
TITLES = {  # panel titles of the study plots
    "psnr_vs_teacher": "PSNR vs teacher (dB)",
    "psnr_vs_teacher_figure": "PSNR vs teacher, figure",
    "psnr_vs_teacher_face": "PSNR vs teacher, face",
    "psnr_vs_teacher_motion": "PSNR vs teacher, motion",
    "psnr_figure": "PSNR vs GT, figure",
    "psnr_face": "PSNR vs GT, face",
    "psnr_motion": "PSNR vs GT, motion",
    "sharpness": "sharpness (1 = GT)",
    "fd": "Frechet distance",
}
DEFAULT_METRICS = ("train/loss_cd", "val/loss_cd", "train/loss_aux", "step")
EVAL_METRICS = (
    "psnr_vs_teacher",
    "psnr_vs_teacher_figure",
    "psnr_vs_teacher_face",
    "psnr_vs_teacher_motion",
    "psnr_figure",
    "psnr_face",
    "psnr_motion",
    "sharpness",
    "fd",
)
# every quality metric `evaluate` writes (EVAL_METRICS are the headline columns of the tables and plots; the
# JSON outputs and the "every metric" tables of a comparison cover all of these)
ALL_EVAL_METRICS = (
    *EVAL_METRICS,
    "psnr",
    "ssim",
    "l1",
    "ssim_figure",
    "ssim_face",
    "ssim_motion",
    "psnr_turned",
    "ssim_turned",
    "psnr_turned_figure",
    "ssim_turned_figure",
)
LOWER_IS_BETTER = {"l1", "fd"}  # sharpness: 1 is the ground truth's; every other metric: higher is better


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
        "per_clip": read_per_clip(run / "eval" / "per_clip.csv"),
    }
    eval_file = run / "eval" / "metrics.json"
    if eval_file.exists():
        for sampler, values in json.loads(eval_file.read_text()).items():
            entry["eval"][sampler] = {
                k: (values[k]["mean"] if isinstance(values.get(k), dict) else values.get(k))
                for k in ALL_EVAL_METRICS
                if k in values
            }
    return entry


def read_per_clip(path: Path) -> dict[str, dict[str, dict[int, float]]]:
    """``{sampler: {metric: {clip: value}}}`` from an evaluation's ``per_clip.csv`` (the ALL_EVAL_METRICS columns;
    empty when the file is missing). Every run of a sweep is evaluated on the same clips from the same noise,
    so the clip index pairs two runs' values."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    if not path.exists():
        return out
    with open(path) as fh:
        for row in csv.DictReader(fh):
            per = out.setdefault(row["sampler"], {})
            for k in ALL_EVAL_METRICS:
                if row.get(k) not in (None, ""):
                    per.setdefault(k, {})[int(row["clip"])] = float(row[k])
    return out


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


def seed_groups(entries: list[dict]) -> dict[str, list[dict]]:
    """The evaluated runs grouped by everything but their seed. A group's label is its overrides that some other
    group does not share (``+variant=full``, not the sweep's common budget too); the whole key when alone."""
    keyed: dict[str, list[dict]] = {}
    for e in entries:
        if e["eval"]:
            keyed.setdefault(group_key(e), []).append(e)
    if len(keyed) < 2:
        return keyed
    parts = {k: k.split(",") for k in keyed}
    common = set.intersection(*(set(p) for p in parts.values()))
    labels = {k: ",".join(o for o in p if o not in common) or k for k, p in parts.items()}
    if len(set(labels.values())) < len(labels):  # should not happen; keep the full keys rather than merge groups
        return keyed
    return {labels[k]: runs for k, runs in keyed.items()}


def over_seeds(entries: list[dict]) -> dict[str, dict[str, dict[str, dict]]]:
    """``{group: {sampler: {metric: {mean, std, n, seeds}}}}``: the evaluation of runs that differ only by their
    seed, averaged over the seeds; ``std`` is the spread between seeds (NaN with one seed)."""
    groups = seed_groups(entries)
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for g, runs in groups.items():
        samplers = sorted({s for e in runs for s in e["eval"]}, key=_sampler_order)
        for sampler in samplers:
            for k in ALL_EVAL_METRICS:
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


def _match_group(groups, name: str) -> str:
    bare = {g.replace("+", ""): g for g in groups}
    if name in groups:
        return name
    if name.replace("+", "") in bare:
        return bare[name.replace("+", "")]
    raise ValueError(f"compare={name}: no such run group; the groups are {sorted(groups)}")


def paired_deltas(entries: list[dict], reference: str) -> dict[str, dict[str, dict[str, dict]]]:
    """Every other run group against ``reference`` (a group label, e.g. ``variant=full``), per student sampler
    and metric: ``{group: {sampler: {metric: {mean, noise, above_noise, seeds: [{seed, delta, se, n}]}}}}``.

    Runs are paired by seed, and per-clip metrics by clip (same clips, same noise): per seed, ``delta`` is the
    mean over clips of (group - reference) and ``se`` its standard error over clips. ``mean`` averages the seeds'
    deltas; ``noise`` is the larger of two per-seed standard errors (the test clips) and the spread of the delta
    between seeds (training noise); ``above_noise`` when every seed's delta has the same sign, is more than two
    standard errors from zero (per-clip metrics), and, with two or more seeds, ``|mean| > noise``. Metrics with no
    per-clip value (the Frechet distance) compare the runs' values, with the seed spread as their only noise."""
    groups = seed_groups(entries)
    ref = _match_group(groups, reference)
    by_seed = {g: {str(e["config"].get("seed")): e for e in runs} for g, runs in groups.items()}
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for g in groups:
        if g == ref:
            continue
        pairs = [(seed, by_seed[g][seed], by_seed[ref][seed]) for seed in sorted(set(by_seed[g]) & set(by_seed[ref]))]
        samplers = sorted(
            {s for _, a, b in pairs for s in a["eval"] if "-step" in s and s in b["eval"]}, key=_sampler_order
        )
        for sampler in samplers:
            for k in ALL_EVAL_METRICS:
                per_seed = [d for seed, a, b in pairs if (d := _seed_delta(seed, a, b, sampler, k)) is not None]
                if per_seed:
                    out.setdefault(g, {}).setdefault(sampler, {})[k] = _summarise_deltas(per_seed)
    return out


def _seed_delta(seed: str, a: dict, b: dict, sampler: str, k: str) -> dict | None:
    """Run ``a`` minus run ``b`` (same seed) on one sampler's metric: the mean paired per-clip difference and its
    standard error, or, for a metric without per-clip values, the difference of the two values."""
    pa, pb = a["per_clip"].get(sampler, {}).get(k), b["per_clip"].get(sampler, {}).get(k)
    if pa and pb:
        d = [x for x in (pa[c] - pb[c] for c in sorted(set(pa) & set(pb))) if not math.isnan(x)]
        if not d:
            return None
        se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan
        return {"seed": seed, "delta": statistics.fmean(d), "se": se, "n": len(d)}
    va, vb = a["eval"].get(sampler, {}).get(k), b["eval"].get(sampler, {}).get(k)
    if va is None or vb is None or math.isnan(va) or math.isnan(vb):
        return None
    return {"seed": seed, "delta": va - vb, "se": math.nan, "n": 1}


def _summarise_deltas(per_seed: list[dict]) -> dict:
    """The seeds' deltas as ``{mean, noise, above_noise, seeds}`` (the rule in :func:`paired_deltas`)."""
    deltas = [p["delta"] for p in per_seed]
    mean = statistics.fmean(deltas)
    spread = statistics.stdev(deltas) if len(deltas) > 1 else math.nan
    ses = [p["se"] for p in per_seed if not math.isnan(p["se"])]
    noise = max([*ses, *([] if math.isnan(spread) else [spread])], default=math.nan)
    same_sign = all(d > 0 for d in deltas) or all(d < 0 for d in deltas)
    clear = all(math.isnan(p["se"]) or abs(p["delta"]) > 2 * p["se"] for p in per_seed)
    above = same_sign and clear and (len(deltas) < 2 or abs(mean) > spread)
    return {"mean": mean, "noise": noise, "above_noise": bool(above and not math.isnan(noise)), "seeds": per_seed}


def delta_table(deltas: dict, reference: str) -> str:
    """Markdown: one row per (group, student sampler); each cell ``mean delta ± noise``, ``*`` above noise."""
    keys = [k for k in EVAL_METRICS if any(k in m for g in deltas.values() for m in g.values())]
    lines = [
        f"| runs - {reference} | sampler | seeds | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 3) + "|",
    ]
    for g, samplers in deltas.items():
        for sampler, m in samplers.items():
            n = max(len(v["seeds"]) for v in m.values())
            cells = []
            for k in keys:
                v = m.get(k)
                if v is None:
                    cells.append("")
                    continue
                cells.append(_fmt_delta(v, _decimals(k)))
            lines.append(f"| {g} | {sampler} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt_delta(v: dict, decimals: int) -> str:
    """``mean ± noise`` (``*`` above noise) with ``decimals`` places, or more when the noise is smaller than the
    last place (up to 2 significant digits of it), so a tiny but consistent difference does not read ``-0.00``."""
    noise = v["noise"]
    if not math.isnan(noise) and 0 < noise < 10**-decimals:
        decimals = min(6, 1 - math.floor(math.log10(noise)))
    text = f"{v['mean']:+.{decimals}f}" + ("" if math.isnan(noise) else f" ± {noise:.{decimals}f}")
    return text + (" *" if v["above_noise"] else "")


def _decimals(k: str) -> int:
    return 4 if k == "l1" or k.startswith("ssim") else 3 if k == "sharpness" else 2


def paired_students(per_clip: dict, new: str, reference: str, steps=(1, 2, 4), label: str | None = None) -> str:
    """Markdown: student ``new`` minus student ``reference`` of one evaluation (``read_per_clip`` of its
    ``per_clip.csv``), paired by clip, one row per metric and a column per step count; ``*`` beyond 2 standard
    errors (one run each, so the clips are the only noise). ``label`` names the reference in the title."""
    lines = [f"{new} minus {label or reference}, paired by clip: mean ± standard error over clips; * beyond 2 SE.", ""]
    lines += [
        "| metric | " + " | ".join(f"{n} step{'s' * (n > 1)}" for n in steps) + " |",
        "|---" * (len(steps) + 1) + "|",
    ]
    for k in ALL_EVAL_METRICS:
        cells = []
        for n in steps:
            sampler = f"{n}-step"
            a = {"per_clip": {sampler: per_clip.get(f"{new} {sampler}", {})}, "eval": {}}
            b = {"per_clip": {sampler: per_clip.get(f"{reference} {sampler}", {})}, "eval": {}}
            d = _seed_delta("", a, b, sampler, k)
            cells.append("" if d is None else _fmt_delta(_summarise_deltas([d]), 4))
        if any(cells):
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _better(k: str) -> str:
    return "lower" if k in LOWER_IS_BETTER else "toward 1" if k == "sharpness" else "higher"


def delta_matrix(deltas: dict, reference: str, sampler: str) -> str:
    """Markdown for one student sampler: every metric (a row) against every group (a column), each cell the
    group's paired difference from ``reference`` as in :func:`delta_table`, with which direction is better."""
    groups = [g for g, samplers in deltas.items() if sampler in samplers]
    keys = [k for k in ALL_EVAL_METRICS if any(k in deltas[g][sampler] for g in groups)]
    lines = [
        f"| {sampler}: metric | better | " + " | ".join(f"{g} - {reference}" for g in groups) + " |",
        "|---" * (len(groups) + 2) + "|",
    ]
    for k in keys:
        cells = []
        for g in groups:
            v = deltas[g][sampler].get(k)
            if v is None:
                cells.append("")
                continue
            cells.append(_fmt_delta(v, _decimals(k)))
        lines.append(f"| {k} | {_better(k)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sampler_order(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)-step", name)
    return (int(m.group(1)) if m else 10**6, name)


def shared_rows(study: dict) -> dict[str, dict]:
    """The samplers that every group has with the same numbers (the teacher reference that each job's evaluation
    read from one cache): ``{sampler: metrics}``, shown once instead of once per group."""
    groups = list(study.values())
    if len(groups) < 2:
        return {}

    def same(a: dict | None, b: dict) -> bool:  # the same means (groups may have different numbers of seeds)
        return (
            a is not None
            and a.keys() == b.keys()
            and all(abs(a[k]["mean"] - b[k]["mean"]) <= 1e-4 * max(abs(b[k]["mean"]), 1.0) for k in a)
        )

    out = {}
    for s, m in groups[0].items():
        if "-step" not in s and all(same(g.get(s), m) for g in groups[1:]):
            out[s] = {k: v | {"n": max(g[s][k]["n"] for g in groups)} for k, v in m.items()}
    return out


def seed_table(study: dict) -> str:
    """Markdown: one row per (run group, sampler), each metric as mean ± spread over seeds (n seeds); a sampler
    that is the same in every group (the teacher reference) once, first, as ``all runs``."""
    keys = [k for k in EVAL_METRICS if any(k in m for g in study.values() for m in g.values())]
    lines = ["| runs | sampler | seeds | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    shared = shared_rows(study)
    rows = [("all runs", s, m) for s, m in shared.items()]
    rows += [(g, s, m) for g, samplers in study.items() for s, m in samplers.items() if s not in shared]
    for g, sampler, m in rows:
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
    shared = shared_rows(study)
    for ax, k in zip(axes, keys):
        for i, (sampler, m) in enumerate(shared.items()):  # the teacher reference: a dashed level
            if k in m:
                ax.axhline(m[k]["mean"], color="0.4", ls=("--", ":", "-.")[i % 3], lw=1, label=sampler, gid="hline")
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
    return finish(fig, axes, path, "student steps", [TITLES.get(k, k) for k in keys], xlog=True)


def plot_deltas(deltas: dict, reference: str, path: Path) -> Path | None:
    """One panel per metric: each group's difference from ``reference`` at each student step count, as bars with
    the noise as error bars; hatched where it is within the noise."""
    from dancelcm.plotting import colours, finish, panel_row

    keys = [k for k in EVAL_METRICS if any(k in m for g in deltas.values() for m in g.values())]
    steps = sorted({_sampler_order(s)[0] for g in deltas.values() for s in g})
    if not keys or not steps:
        return None
    fig, axes = panel_row(len(keys), 4.2, 3.4)
    colour = colours(deltas)
    width = 0.8 / max(len(deltas), 1)
    for ax, k in zip(axes, keys):
        for j, (g, samplers) in enumerate(deltas.items()):
            for s, m in samplers.items():
                if k not in m:
                    continue
                x = steps.index(_sampler_order(s)[0]) + (j - (len(deltas) - 1) / 2) * width
                v = m[k]
                ax.bar(
                    x,
                    v["mean"],
                    width,
                    yerr=0.0 if math.isnan(v["noise"]) else v["noise"],
                    color=colour[g],
                    hatch="" if v["above_noise"] else "//",
                    edgecolor="white" if v["above_noise"] else "0.3",
                    capsize=2,
                    label=g[:60],
                )
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_xticks(range(len(steps)), [str(n) for n in steps])
    titles = [f"{TITLES.get(k, k)} - {reference}" for k in keys]
    return finish(fig, axes, path, "student steps (hatched: within noise)", titles)


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


def report(
    root: str | Path, out: str | Path | None = None, metrics: list[str] | None = None, compare: str | None = None
) -> dict:
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
    deltas = None
    if compare:
        if not study:
            raise FileNotFoundError(f"compare={compare}: no evaluated runs under {root} (<run>/eval/metrics.json)")
        try:
            deltas = paired_deltas(entries, compare)
        except ValueError as e:
            raise SystemExit(f"dancelcm.report: {e}") from e
        table += (
            f"\n\nEvery group minus `{compare}`, paired by seed and by clip: mean difference over seeds ± the "
            "noise (the larger of the per-seed standard error over clips and the spread between seeds); `*`: "
            "every seed agrees in sign, each seed's difference is over two standard errors, and the mean exceeds "
            f"the spread between seeds.\n\n{delta_table(deltas, compare)}"
        )
        samplers = sorted({s for g in deltas.values() for s in g}, key=_sampler_order)
        table += "\n\nEvery metric `evaluate` writes, the same differences, one table per student sampler:"
        table += "".join(f"\n\n{delta_matrix(deltas, compare, s)}" for s in samplers)
        (out / "deltas.json").write_text(json.dumps(deltas, indent=1))
        plot_deltas(deltas, compare, out / "deltas.png")
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
    return {"runs": entries, "table": table, "out": str(out), "over_seeds": study, "deltas": deltas}


def main() -> None:
    import sys

    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    unknown = set(args) - {"runs", "out", "metrics", "compare"}
    if unknown or "runs" not in args:
        raise SystemExit(
            "usage: python -m dancelcm.report runs=DIR [out=DIR] [metrics=[train/loss_cd,val/loss_cd,...]]"
            " [compare=GROUP, e.g. compare=variant=full]" + (f" (unknown: {sorted(unknown)})" if unknown else "")
        )
    metrics = args.get("metrics")
    metrics = [m.strip() for m in metrics.strip("[]").split(",") if m.strip()] if metrics else None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report(args["runs"], args.get("out"), metrics, args.get("compare"))


if __name__ == "__main__":
    main()
