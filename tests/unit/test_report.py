"""The report's evaluation over seeds: runs that differ only by their seed are averaged, with the spread."""

import json
import math

import yaml

from dancelcm.report import report


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
