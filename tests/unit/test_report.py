"""The report's evaluation over seeds: runs that differ only by their seed are averaged, with the spread."""

import json
import math
import re
import statistics

import pytest
import yaml

from dancelcm.evaluation.study import report


def _run(root, name, overrides, seed, psnr4):
    run = root / name
    (run / "csv" / "version_0").mkdir(parents=True)
    (run / "csv" / "version_0" / "metrics.csv").write_text("step,train/loss_cd\n0,1.0\n10,0.5\n")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"name": "synthetic_k4", "seed": seed}))
    (run / "eval").mkdir()
    metrics = {
        "student 4-step": {"psnr_vs_teacher": {"mean": psnr4, "std": 1.0, "n": 8}, "fd": 2.0 + seed},
        "student 1-step": {"psnr_vs_teacher": {"mean": psnr4 - 3, "std": 1.0, "n": 8}},
    }
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))


def test_runs_that_differ_only_by_seed_are_averaged_with_their_spread(tmp_path):
    _run(tmp_path, "full_s0", ["+variant=full"], 0, 20.0)
    _run(tmp_path, "full_s1", ["+variant=full"], 1, 22.0)
    _run(tmp_path, "base_s0", ["+variant=baseline"], 0, 17.0)
    out = report(tmp_path)
    study = out["over_seeds"]
    assert set(study) == {"+variant=full", "+variant=baseline"}
    full = study["+variant=full"]["student 4-step"]
    assert full["psnr_vs_teacher"]["mean"] == 21.0 and full["psnr_vs_teacher"]["n"] == 2
    assert abs(full["psnr_vs_teacher"]["std"] - math.sqrt(2.0)) < 1e-9  # sample std of 20 and 22
    assert full["psnr_vs_teacher"]["seeds"] == ["0", "1"]
    assert full["fd"]["mean"] == 2.5
    assert math.isnan(study["+variant=baseline"]["student 4-step"]["psnr_vs_teacher"]["std"])  # one seed
    # samplers in step order, and the table and plot written next to the per-run report
    assert list(study["+variant=full"]) == ["student 1-step", "student 4-step"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| +variant=full | student 4-step | 2 | 21.00 ± 1.41 |" in md
    assert "| +variant=baseline | student 4-step | 1 | 17.00 |" in md
    assert (tmp_path / "report" / "over_seeds.png").stat().st_size > 1000


def _paired_run(root, variant, seed, clip_values, fd, teacher_figure=19.5):
    """A run whose 4-step student scored ``clip_values`` (PSNR vs teacher, per clip) and ``fd``."""
    run = root / f"{variant}_s{seed}"
    (run / "csv" / "version_0").mkdir(parents=True)
    (run / "csv" / "version_0" / "metrics.csv").write_text("step,train/loss_cd\n0,1.0\n")
    (run / ".hydra").mkdir()
    common = ["+experiment=synthetic_k4", "+ablation=removal", "data.batch_size=4"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"+variant={variant}", *common, f"seed={seed}"]))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"name": "synthetic_k4", "seed": seed}))
    (run / "eval").mkdir()
    mean = sum(clip_values) / len(clip_values)
    sampler = "student 4-step"
    metrics = {
        "teacher DDIM-50 CFG 2": {"psnr_figure": {"mean": teacher_figure, "std": 1.0, "n": 8}},
        sampler: {"psnr_vs_teacher": {"mean": mean, "std": 1.0, "n": len(clip_values)}, "fd": fd},
    }
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    # ssim: a metric outside the headline columns, here psnr_vs_teacher / 100 per clip
    rows = [f'"{sampler}",{i},v{i},{v:.5f},{v / 100:.7f}' for i, v in enumerate(clip_values)]
    rows += [f'"teacher DDIM-50 CFG 2",{i},v{i},,' for i in range(len(clip_values))]
    (run / "eval" / "per_clip.csv").write_text("sampler,clip,video_id,psnr_vs_teacher,ssim\n" + "\n".join(rows) + "\n")


def test_compare_pairs_runs_by_seed_and_clip_and_says_what_is_above_noise(tmp_path):
    import random

    rng = random.Random(0)
    full = {s: [30 + rng.gauss(0, 2) for _ in range(32)] for s in (0, 1)}  # clips differ a lot from each other
    for s in (0, 1):
        _paired_run(tmp_path, "full", s, full[s], fd=80.0 + s)
        # the baseline is 1 dB worse on every clip (+- 0.3): far below the clip-to-clip spread, but paired it is clear
        _paired_run(tmp_path, "baseline", s, [v - 1 + rng.gauss(0, 0.3) for v in full[s]], fd=120.0 + 3 * s)
        # removing the face injection changes nothing but noise
        _paired_run(tmp_path, "minus_face", s, [v + rng.gauss(0, 0.3) for v in full[s]], fd=81.0 - 2 * s)
        # removing the motion loss helps with one seed and hurts with the other
        _paired_run(tmp_path, "minus_motion", s, [v + (1 if s else -1) + rng.gauss(0, 0.3) for v in full[s]], fd=80.0)
    # one seed only, and a teacher reference read back from the float16 cache (a hair off the first run's)
    _paired_run(tmp_path, "minus_aux", 0, full[0], fd=80.0, teacher_figure=19.5 + 2e-5)
    out = report(tmp_path, compare="variant=full")  # the '+' of the override may be left out
    d = out["deltas"]
    assert set(d) == {"+variant=baseline", "+variant=minus_face", "+variant=minus_motion", "+variant=minus_aux"}
    assert [p["seed"] for p in d["+variant=minus_aux"]["student 4-step"]["psnr_vs_teacher"]["seeds"]] == ["0"]
    assert set(d["+variant=baseline"]) == {"student 4-step"}  # the teacher row is the same in every run
    base = d["+variant=baseline"]["student 4-step"]["psnr_vs_teacher"]
    assert abs(base["mean"] + 1) < 0.2 and base["above_noise"] and [p["n"] for p in base["seeds"]] == [32, 32]
    assert base["noise"] < 0.2  # paired: the clip-to-clip spread of 2 dB cancels
    assert not d["+variant=minus_face"]["student 4-step"]["psnr_vs_teacher"]["above_noise"]
    motion = d["+variant=minus_motion"]["student 4-step"]["psnr_vs_teacher"]
    assert not motion["above_noise"] and motion["noise"] > 1  # the seeds disagree: their spread is the noise
    fd = d["+variant=baseline"]["student 4-step"]["fd"]
    assert fd["mean"] == 41.0 and fd["above_noise"] and fd["noise"] == statistics.stdev([40.0, 42.0])
    assert not d["+variant=minus_face"]["student 4-step"]["fd"]["above_noise"]  # +1 and -1
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| +variant=baseline | student 4-step | 2 | -1." in md and " *" in md
    assert json.loads((tmp_path / "report" / "deltas.json").read_text()).keys() == d.keys()
    # every metric evaluate writes is compared, not only the headline columns: one table per sampler, a row each
    ssim = d["+variant=baseline"]["student 4-step"]["ssim"]
    assert abs(ssim["mean"] + 0.01) < 0.002 and ssim["above_noise"]
    every = md.split("Every metric")[1]
    assert "| +variant=baseline - variant=full |" in every.splitlines()[2]
    assert re.search(r"\| ssim \| higher \| -0\.01\d\d ± 0\.00\d\d \*", every)
    assert re.search(r"\| fd \| lower \| \+41\.00 ± 1\.41 \*", every)
    assert (tmp_path / "report" / "deltas.png").stat().st_size > 1000
    # the teacher reference is the same in every run: one row, not one per group
    over_seeds = md.split("Evaluation over seeds")[1].split("Every group minus")[0]
    assert over_seeds.count("teacher DDIM-50 CFG 2") == 1 and "| all runs | teacher DDIM-50 CFG 2 | 2 |" in over_seeds
    # a reference that really differs between groups keeps a row per group
    _paired_run(tmp_path, "plus_x", 0, full[0], fd=80.0, teacher_figure=21.0)
    md = report(tmp_path)["table"].split("Evaluation over seeds")[1]
    assert "all runs" not in md and md.count("teacher DDIM-50 CFG 2") == 6
    with pytest.raises(ValueError, match="compare=variant=nope: no such run group.*variant=full"):
        report(tmp_path, compare="variant=nope")


def test_a_tiny_but_consistent_difference_is_printed_with_the_digits_its_noise_needs():
    from dancelcm.evaluation.metrics import format_delta

    # e.g. a removed component whose weights barely trained: 0.002 dB, consistent over clips and seeds
    assert format_delta({"mean": -0.0021, "noise": 0.0004, "above_noise": True}, 2) == "-0.00210 ± 0.00040 *"
    assert format_delta({"mean": -2.38, "noise": 0.11, "above_noise": True}, 2) == "-2.38 ± 0.11 *"
    assert format_delta({"mean": 41.0, "noise": math.nan, "above_noise": False}, 2) == "+41.00"
    assert format_delta({"mean": 0.0, "noise": 0.0, "above_noise": False}, 2) == "+0.00 ± 0.00"


def test_two_students_of_one_evaluation_are_paired_by_clip():
    from dancelcm.evaluation.tables import paired_students

    # "b" is 0.01 dB above "a" on every clip of its 4-step sampler, far below the clip-to-clip spread
    a = {c: 20.0 + 3 * math.sin(c) for c in range(16)}
    per_clip = {
        "a 4-step": {"psnr_face": a},
        "b 4-step": {"psnr_face": {c: v + 0.01 + 0.001 * (-1) ** c for c, v in a.items()}},
    }
    md = paired_students(per_clip, "b", "a", steps=(1, 4), label="student a")
    assert md.startswith("b minus student a, paired by clip")
    assert "| metric | 1 step | 4 steps |" in md
    assert re.search(r"\| psnr_face \|  \| \+0\.0100 ± 0\.000\d+ \* \|", md)
