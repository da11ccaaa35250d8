"""Run folders as the report reads them, and runs grouped by everything but their seed.

A run is a folder with ``csv/version_*/metrics.csv`` (every launch of a resumed run is merged by step) and, when
Hydra wrote it, ``.hydra/config.yaml`` and ``.hydra/overrides.yaml``; ``<run>/eval/metrics.json`` and
``per_clip.csv`` when it was evaluated (``python -m dancelcm.evaluate ... out_dir=<run>/eval``)."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from pathlib import Path

import yaml

from dancelcm.evaluation.metrics import COMPARED

# config keys an ablation compares: (column, dotted path in the composed config)
CONFIG_COLUMNS = (
    ("K", "method.segments.num_segments"),
    ("motion w", "method.loss.motion_weight"),
    ("aux w", "method.loss.aux_weight"),  # the auxiliary head exists when its weight is > 0
    ("face", "method.face.enabled"),
    ("target", "method.target.kind"),
    ("seed", "seed"),
)


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
    """One run: its name, overrides, the :data:`CONFIG_COLUMNS` values, training curves and last values, and
    its evaluation (``eval``: ``{sampler: {metric: mean}}``; ``per_clip``: :func:`read_per_clip`)."""
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
                for k in COMPARED
                if k in values
            }
    return entry


def read_per_clip(path: Path) -> dict[str, dict[str, dict[int, float]]]:
    """``{sampler: {metric: {clip: value}}}`` from an evaluation's ``per_clip.csv`` (the registry's compared
    metrics; empty when the file is missing). Every run of a sweep is evaluated on the same clips from the same
    noise, so the clip index pairs two runs' values."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    if not path.exists():
        return out
    with open(path) as fh:
        for row in csv.DictReader(fh):
            per = out.setdefault(row["sampler"], {})
            for k in COMPARED:
                if row.get(k) not in (None, ""):
                    per.setdefault(k, {})[int(row["clip"])] = float(row[k])
    return out


def sampler_order(name: str) -> tuple[int, str]:
    """Students by their step count (``... 4-step``), everything else after them."""
    m = re.search(r"(\d+)-step", name)
    return (int(m.group(1)) if m else 10**6, name)


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
        samplers = sorted({s for e in runs for s in e["eval"]}, key=sampler_order)
        for sampler in samplers:
            for k in COMPARED:
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
