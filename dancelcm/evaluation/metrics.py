"""The metric registry: every number ``evaluate`` writes, once, with how the tables and plots show it.

Adding a metric is one :class:`Metric` entry in :data:`METRICS`: evaluate's ``table.md`` columns, its
``quality_vs_nfe.png`` panels, the report's tables, JSON files and plots all read their metric names,
headers, titles, better directions and rounding from here. The order of :data:`METRICS` is the column order of
``table.md``; the report lists the headline metrics first, then the others in that order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Metric:
    key: str
    # cost: what a sampler spends (not compared by the report); clip: a value per clip, summarised as mean ± std
    # over clips (per_clip.csv); distribution: one value over every frame of the split (Frechet distances)
    kind: Literal["cost", "clip", "distribution"]
    better: Literal["higher", "lower", "toward 1"]
    decimals: int  # values in tables
    header: str | None = None  # the column header in evaluate's table.md; None: not a column there
    title: str | None = None  # the panel title in plots (the key where None)
    headline: bool = False  # a column of the report's tables and a panel of its plots
    nfe_panel: bool = False  # a panel of evaluate's quality_vs_nfe.png
    delta_decimals: int | None = None  # differences between runs (report); None: ``decimals``

    @property
    def label(self) -> str:
        return self.title or self.key

    @property
    def delta_places(self) -> int:
        return self.decimals if self.delta_decimals is None else self.delta_decimals


METRICS: tuple[Metric, ...] = (  # fields: key, kind, better, decimals, header, title
    Metric("nfe", "cost", "lower", 0, "NFE"),
    Metric(
        "psnr_vs_teacher", "clip", "higher", 2, "PSNR vs teacher", "PSNR vs teacher (dB)", headline=True, nfe_panel=True
    ),
    Metric("psnr_vs_teacher_figure", "clip", "higher", 2, "vs teacher fig", "PSNR vs teacher, figure", headline=True),
    Metric("psnr_vs_teacher_face", "clip", "higher", 2, "vs teacher face", "PSNR vs teacher, face", headline=True),
    Metric(
        "psnr_vs_teacher_motion", "clip", "higher", 2, "vs teacher motion", "PSNR vs teacher, motion", headline=True
    ),
    Metric("seconds_per_clip", "cost", "lower", 3, "s/clip"),
    Metric("nfe_per_frame", "cost", "lower", 2, "NFE/frame"),  # long clips: frames the network processed per frame
    Metric("seconds_per_frame", "cost", "lower", 3, "s/frame"),
    Metric("seam", "clip", "toward 1", 3, "seam", "seam ratio (1 = GT)"),  # long clips: the jump at window borders
    Metric("psnr", "clip", "higher", 2, "PSNR"),
    Metric("ssim", "clip", "higher", 3, "SSIM", delta_decimals=4),
    Metric("l1", "clip", "lower", 4),
    Metric("psnr_figure", "clip", "higher", 2, "PSNR fig", "PSNR vs GT, figure", headline=True, nfe_panel=True),
    Metric("ssim_figure", "clip", "higher", 3, "SSIM fig", delta_decimals=4),
    Metric("ssim_face", "clip", "higher", 3, delta_decimals=4),
    Metric("ssim_motion", "clip", "higher", 3, delta_decimals=4),
    Metric("psnr_turned", "clip", "higher", 2, "PSNR turned"),
    Metric("ssim_turned", "clip", "higher", 3, "SSIM turned", delta_decimals=4),
    Metric("psnr_turned_figure", "clip", "higher", 2),
    Metric("ssim_turned_figure", "clip", "higher", 3, delta_decimals=4),
    Metric("psnr_face", "clip", "higher", 2, "PSNR face", "PSNR vs GT, face", headline=True),
    Metric("psnr_motion", "clip", "higher", 2, "PSNR motion", "PSNR vs GT, motion", headline=True),
    Metric("sharpness", "clip", "toward 1", 3, "sharpness", "sharpness (1 = GT)", headline=True, nfe_panel=True),
    Metric("fd", "distribution", "lower", 2, "FD", "Frechet distance", headline=True, nfe_panel=True),
    Metric("lpips", "clip", "lower", 3, "LPIPS"),
    Metric("fid", "distribution", "lower", 2, "FID"),
    Metric("fid_vid", "distribution", "lower", 2, "FID-VID"),
    Metric("fvd", "distribution", "lower", 2, "FVD"),
)
BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}

TABLE_COLUMNS: tuple[Metric, ...] = tuple(m for m in METRICS if m.header)  # evaluate's table.md
NFE_PANELS: tuple[Metric, ...] = tuple(m for m in METRICS if m.nfe_panel)  # evaluate's quality_vs_nfe.png
HEADLINE: tuple[str, ...] = tuple(m.key for m in METRICS if m.headline)  # the report's columns and panels
# every quality metric the report reads, compares and writes to JSON: the headline ones first
COMPARED: tuple[str, ...] = HEADLINE + tuple(m.key for m in METRICS if m.kind != "cost" and not m.headline)

PER_CLIP_DECIMALS = 5  # per_clip.csv stores every value with 5 places
PAIRED_CLIP_DECIMALS = 4  # two students of one evaluation paired by clip: every metric with 4 places
RUN_DIGITS = 4  # the report's per-run cells (config values, last logged values, evaluations): significant digits


def check_registered(keys: Iterable[str]) -> None:
    """Stops on a metric that is not in :data:`METRICS` (every table and plot would silently leave it out)."""
    unknown = sorted(set(keys) - BY_KEY.keys())
    if unknown:
        raise KeyError(f"metrics {unknown} are not in the registry: add them to dancelcm/evaluation/metrics.py")


def format_value(key: str, x: dict | float | int | None) -> str:
    """A cell of a metric table: ``mean ± std`` over clips (a per-clip metric's summary ``{mean, std, ...}``;
    ``–`` where the region never occurs, ``(1 clip)`` without a spread), a plain number with the metric's
    decimals, or the value as it is (an integer count such as NFE)."""
    if x is None:
        return ""
    places = BY_KEY[key].decimals
    if isinstance(x, dict):
        if math.isnan(x["mean"]):
            return "–"
        if math.isnan(x["std"]):
            return f"{x['mean']:.{places}f} (1 clip)"
        return f"{x['mean']:.{places}f} ± {x['std']:.{places}f}"
    if isinstance(x, float):
        return f"{x:.{places}f}"
    return str(x)


def format_spread(key: str, mean: float, spread: float) -> str:
    """``mean ± spread`` with the metric's decimals; the mean alone when the spread is NaN (one seed)."""
    places = BY_KEY[key].decimals
    return f"{mean:.{places}f}" + ("" if math.isnan(spread) else f" ± {spread:.{places}f}")


def format_delta(v: dict, decimals: int) -> str:
    """``mean ± noise`` (``*`` above noise) with ``decimals`` places, or more when the noise is smaller than the
    last place (up to 2 significant digits of it), so a tiny but consistent difference does not read ``-0.00``."""
    noise = v["noise"]
    if not math.isnan(noise) and 0 < noise < 10**-decimals:
        decimals = min(6, 1 - math.floor(math.log10(noise)))
    text = f"{v['mean']:+.{decimals}f}" + ("" if math.isnan(noise) else f" ± {noise:.{decimals}f}")
    return text + (" *" if v["above_noise"] else "")


def format_run_value(v: object) -> str:
    """A cell of the report's per-run tables: :data:`RUN_DIGITS` significant digits, ``–`` for NaN."""
    if v is None:
        return ""
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{RUN_DIGITS}g}"
    return str(v)
