"""Paired differences between run groups: by seed, and per clip where the metric has per-clip values (every run
of a sweep is evaluated on the same clips from the same noise, so the clip-to-clip spread cancels)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection

from dancelcm.evaluation.metrics import COMPARED
from dancelcm.evaluation.runs import sampler_order, seed_groups


def match_group(groups: Collection[str], name: str) -> str:
    """The group ``name`` names; the ``+`` of an override may be left out."""
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
    ref = match_group(groups, reference)
    by_seed = {g: {str(e["config"].get("seed")): e for e in runs} for g, runs in groups.items()}
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for g in groups:
        if g == ref:
            continue
        pairs = [(seed, by_seed[g][seed], by_seed[ref][seed]) for seed in sorted(set(by_seed[g]) & set(by_seed[ref]))]
        samplers = sorted(
            {s for _, a, b in pairs for s in a["eval"] if "-step" in s and s in b["eval"]}, key=sampler_order
        )
        for sampler in samplers:
            for k in COMPARED:
                per_seed = [d for seed, a, b in pairs if (d := seed_delta(seed, a, b, sampler, k)) is not None]
                if per_seed:
                    out.setdefault(g, {}).setdefault(sampler, {})[k] = summarise_deltas(per_seed)
    return out


def seed_delta(seed: str, a: dict, b: dict, sampler: str, k: str) -> dict | None:
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


def summarise_deltas(per_seed: list[dict]) -> dict:
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
