"""paired_deltas on its own: runs paired by seed, per-clip metrics by clip, with the noise rule spelled out."""

import math
import statistics

import pytest

from dancelcm.evaluation.deltas import paired_deltas


def _entry(variant, seed, per_clip, fd, teacher=19.5):
    """A run as ``read_run`` returns it: the 4-step student's per-clip PSNR vs teacher and its FD, and a teacher
    row (not a student: never compared)."""
    return {
        "name": "synthetic_k4",
        "overrides": [f"+variant={variant}", "+ablation=removal", f"seed={seed}"],
        "config": {"seed": seed},
        "eval": {
            "student 4-step": {"psnr_vs_teacher": statistics.fmean(per_clip.values()), "fd": fd},
            "teacher DDIM-50 CFG 2": {"psnr_figure": teacher},
        },
        "per_clip": {"student 4-step": {"psnr_vs_teacher": per_clip}},
    }


def test_groups_are_paired_by_seed_and_clip():
    full = {0: {0: 20.0, 1: 24.0, 2: 30.0}, 1: {0: 21.0, 1: 25.0, 2: 28.0}}
    offsets = {0: (-1.0, -1.2, -0.8), 1: (-2.0, -2.1, -1.9)}
    entries = [_entry("full", s, full[s], fd=80.0 + s) for s in (0, 1)]
    entries += [
        _entry("baseline", s, {c: v + offsets[s][c] for c, v in full[s].items()}, fd=90.0 + 3 * s) for s in (0, 1)
    ]
    entries.append(_entry("baseline", 2, full[0], fd=0.0))  # no full run with seed 2: not paired
    d = paired_deltas(entries, "+variant=full")
    assert list(d) == ["+variant=baseline"] and list(d["+variant=baseline"]) == ["student 4-step"]
    psnr = d["+variant=baseline"]["student 4-step"]["psnr_vs_teacher"]
    assert [p["seed"] for p in psnr["seeds"]] == ["0", "1"] and [p["n"] for p in psnr["seeds"]] == [3, 3]
    se0 = statistics.stdev(offsets[0]) / math.sqrt(3)
    assert psnr["seeds"][0]["delta"] == pytest.approx(-1.0) and psnr["seeds"][0]["se"] == pytest.approx(se0)
    assert psnr["mean"] == pytest.approx(-1.5)
    assert psnr["noise"] == pytest.approx(statistics.stdev([-1.0, -2.0]))  # the seed spread beats each SE
    assert psnr["above_noise"]  # same sign, each over 2 SE, |mean| 1.5 > spread 0.71
    # the Frechet distance has no per-clip values: the runs' values, the seed spread its only noise
    fd = d["+variant=baseline"]["student 4-step"]["fd"]
    assert [p["delta"] for p in fd["seeds"]] == [10.0, 12.0] and all(math.isnan(p["se"]) for p in fd["seeds"])
    assert fd["mean"] == 11.0 and fd["noise"] == pytest.approx(math.sqrt(2)) and fd["above_noise"]


def test_within_the_noise_a_nan_clip_and_an_unknown_group():
    clips = {0: 20.0, 1: 22.0, 2: 24.0, 3: 26.0}
    entries = [_entry("full", 0, clips, fd=80.0)]
    # +-0.1 around zero per clip, and one clip where the region never occurs (NaN): left out of the pairs
    noisy = {0: 20.1, 1: 21.9, 2: 24.1, 3: math.nan}
    entries.append(_entry("minus_face", 0, noisy, fd=80.0))
    d = paired_deltas(entries, "variant=full")  # the '+' of the override may be left out
    psnr = d["+variant=minus_face"]["student 4-step"]["psnr_vs_teacher"]
    assert psnr["seeds"][0]["n"] == 3 and psnr["mean"] == pytest.approx(0.1 / 3)
    assert not psnr["above_noise"] and psnr["noise"] == pytest.approx(psnr["seeds"][0]["se"])
    # one seed, equal FDs: a zero difference without any noise estimate is never above it
    assert not d["+variant=minus_face"]["student 4-step"]["fd"]["above_noise"]
    with pytest.raises(ValueError, match="compare=variant=nope: no such run group"):
        paired_deltas(entries, "variant=nope")
