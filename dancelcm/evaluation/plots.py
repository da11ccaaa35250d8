"""evaluate's quality-vs-NFE plot and the report's plots (training curves, the study over seeds, paired
differences); panels and their titles come from the registry (:mod:`dancelcm.evaluation.metrics`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

from dancelcm.evaluation.metrics import BY_KEY, HEADLINE, NFE_PANELS
from dancelcm.evaluation.runs import sampler_order, shared_rows


def family(name: str) -> str:
    """'DanceLCM 4-step' -> 'DanceLCM', 'teacher DDIM-10 CFG 2' -> 'teacher DDIM CFG 2'."""
    return re.sub(r"\s*\d+-step|-\d+", "", name).strip()


def plot_quality_vs_nfe(summary: dict, path: Path) -> Path | None:
    """One panel per metric, NFE on a log axis, one line per sampler family (teacher, each student)."""
    from dancelcm.plotting import colours, finish, panel_row

    panels = [m for m in NFE_PANELS if any(m.key in v for v in summary.values())]
    families: dict[str, list[tuple[int, dict]]] = {}
    for name, v in summary.items():
        if v.get("nfe", 0) > 0:
            families.setdefault(family(name), []).append((v["nfe"], v))
    if not panels or not families:
        return None
    fig, axes = panel_row(len(panels), 4.2, 3.4)
    colour = colours(families)
    for ax, m in zip(axes, panels):
        k = m.key
        for fam, pts in families.items():
            pts = sorted((n, v[k]["mean"] if isinstance(v.get(k), dict) else v.get(k)) for n, v in pts if k in v)
            if pts:
                ax.plot([n for n, _ in pts], [y for _, y in pts], marker="o", label=fam, color=colour[fam])
    return finish(fig, axes, path, "NFE (network evaluations per clip)", [m.label for m in panels], xlog=True)


def plot_curves(entries: list[dict], metrics: list[str], path: Path) -> Path | None:
    """The report's training curves: one panel per logged metric, one line per run."""
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


def plot_study(study: dict, path: Path) -> Path | None:
    """One panel per headline metric: student steps on x, one line per run group, error bars = seed spread."""
    from dancelcm.plotting import colours, finish, panel_row

    keys = [k for k in HEADLINE if any(k in m for g in study.values() for s, m in g.items() if "-step" in s)]
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
            pts = [(sampler_order(s)[0], m[k]) for s, m in samplers.items() if "-step" in s and k in m]
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
    return finish(fig, axes, path, "student steps", [BY_KEY[k].label for k in keys], xlog=True)


def plot_deltas(deltas: dict, reference: str, path: Path) -> Path | None:
    """One panel per headline metric: each group's difference from ``reference`` at each student step count, as
    bars with the noise as error bars; hatched where it is within the noise."""
    from dancelcm.plotting import colours, finish, panel_row

    keys = [k for k in HEADLINE if any(k in m for g in deltas.values() for m in g.values())]
    steps = sorted({sampler_order(s)[0] for g in deltas.values() for s in g})
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
                x = steps.index(sampler_order(s)[0]) + (j - (len(deltas) - 1) / 2) * width
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
    titles = [f"{BY_KEY[k].label} - {reference}" for k in keys]
    return finish(fig, axes, path, "student steps (hatched: within noise)", titles)
