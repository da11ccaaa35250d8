"""``dancelcm.evaluate.run`` and ``dancelcm.report.run`` called in-process with a composed config, as ``main``
calls them from the command line."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from dancelcm import evaluate, report
from dancelcm.evaluation.metrics import BY_KEY
from tests.configs.test_experiment_configs import _save_micro_teacher
from tests.conftest import run_module

CONF = Path(__file__).resolve().parents[2] / "conf"
CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def test_evaluate_run_on_a_micro_teacher(synthetic_root, tmp_path):
    teacher, _ = _save_micro_teacher(tmp_path / "teacher")
    out = tmp_path / "eval"
    cfg = _compose(
        "evaluate",
        [
            f"teacher={teacher}",
            f"data.root={synthetic_root}",
            "data.resolution=32",
            "data.num_frames=4",
            "data.val_batch_size=2",
            "data.num_workers=0",
            "max_clips=2",
            "teacher_steps=[2]",
            "guidance=[2.0]",
            "vs_teacher.steps=2",
            f"feature_net={CHECKPOINTS / 'feature_net'}",
            "sample_clips=0",
            f"out_dir={out}",
        ],
    )
    result = evaluate.run(cfg)
    assert list(result["samplers"]) == ["copy reference frame", "teacher DDIM-2 CFG 2"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics.keys() == result["samplers"].keys()
    copy = metrics["copy reference frame"]
    assert copy["clips"] == 2 and copy["nfe"] == 0 and copy["psnr_vs_teacher"]["n"] == 2 and copy["fd"] >= 0
    assert "psnr_vs_teacher" not in metrics["teacher DDIM-2 CFG 2"]  # the reference itself
    with open(out / "per_clip.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and set(rows[0]) - {"sampler", "clip", "video_id"} <= BY_KEY.keys()
    table = (out / "table.md").read_text()
    assert table.startswith(f"Teacher `{teacher}` on `{synthetic_root}` [test], 2 clips, seed 0.")
    assert "| sampler | NFE | PSNR vs teacher |" in table and (out / "quality_vs_nfe.png").stat().st_size > 1000


def _runs(root: Path) -> Path:
    """Two variants x two seeds, each evaluated (a 4-step student) with a training curve."""
    for variant, seed, psnr in (("full", 0, 20.0), ("full", 1, 22.0), ("baseline", 0, 17.0), ("baseline", 1, 18.0)):
        run = root / f"variant={variant},seed={seed}"
        (run / "csv" / "version_0").mkdir(parents=True)
        (run / "csv" / "version_0" / "metrics.csv").write_text("step,train/loss_cd,val/loss_cd\n0,1.0,\n10,0.5,0.7\n")
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"+variant={variant}", f"seed={seed}"]))
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"name": "synthetic_k4", "seed": seed}))
        (run / "eval").mkdir()
        metrics = {"student 4-step": {"psnr_vs_teacher": {"mean": psnr, "std": 1.0, "n": 8}, "fd": 90.0 - psnr}}
        (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return root


REPORT_FILES = [
    "deltas.json",
    "deltas.png",
    "over_seeds.json",
    "over_seeds.png",
    "report.csv",
    "report.md",
    "report.png",
]


def test_report_run_with_a_quoted_group(tmp_path):
    runs, out = _runs(tmp_path / "runs"), tmp_path / "report"
    # the command line's form: a group label holds '=', which Hydra reads inside quotes
    cfg = _compose("report", [f"runs={runs}", f"out={out}", "compare='variant=full'", "metrics=[val/loss_cd]"])
    assert cfg.compare == "variant=full"
    result = report.run(cfg)
    assert result["out"] == str(out) and sorted(p.name for p in out.iterdir()) == REPORT_FILES
    delta = result["deltas"]["+variant=baseline"]["student 4-step"]
    assert delta["psnr_vs_teacher"]["mean"] == -3.5 and delta["fd"]["mean"] == 3.5
    md = (out / "report.md").read_text()
    assert "| run | seed | val/loss_cd |" in md and "train/loss_cd" not in md  # metrics= picks the curves
    assert "| runs - variant=full | sampler | seeds | psnr_vs_teacher | fd |" in md


@pytest.mark.slow  # the report CLI in a subprocess
def test_the_report_command_writes_only_the_report(tmp_path):
    runs = _runs(tmp_path / "runs")
    run_module(["dancelcm.report", f"runs={runs}", "compare='variant=full'"], cwd=tmp_path)
    assert sorted(p.name for p in (runs / "report").iterdir()) == REPORT_FILES
    # no Hydra output folder or log file in the user's folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert len([p for p in runs.iterdir() if p.name != "report"]) == 4 and not list(runs.glob("**/*.log"))


def test_evaluate_long_clips_in_windows_with_the_seam_ratio(synthetic_root, tmp_path):
    """long_clip: the held-out videos at full length (24 frames at stride 2 here), every sampler in windows of the
    bundle's clip length once per overlap; each row gets the seam ratio, NFE and seconds per frame."""
    teacher, _ = _save_micro_teacher(tmp_path / "teacher")  # trained on 4-frame clips
    out = tmp_path / "eval"
    cfg = _compose(
        "evaluate",
        [f"teacher={teacher}", f"data.root={synthetic_root}", "data.resolution=32", "data.num_frames=12",
         "data.val_batch_size=2", "data.num_workers=0", "max_clips=2", "teacher_steps=[2]", "guidance=[2.0]",
         "vs_teacher.steps=2", "feature_net=null", "sample_clips=0", "reference_baseline=false",
         "long_clip={overlaps: [0, 2]}", f"out_dir={out}"],
    )  # fmt: skip
    result = evaluate.run(cfg)["samplers"]
    assert list(result) == ["teacher DDIM-2 CFG 2 w4o0", "teacher DDIM-2 CFG 2 w4o2"]
    independent, fused = result["teacher DDIM-2 CFG 2 w4o0"], result["teacher DDIM-2 CFG 2 w4o2"]
    assert independent["nfe_per_frame"] == 4 and fused["nfe_per_frame"] == 4 * 5 * 4 / 12  # 5 windows of 4
    assert fused["seam"]["n"] == 2 and math.isfinite(fused["seam"]["mean"]) and fused["seconds_per_frame"] > 0
    assert "psnr_vs_teacher" in independent and "psnr_vs_teacher" not in fused  # the reference: the largest overlap
    assert "| seam |" in (out / "table.md").read_text()


def test_the_seam_ratio_is_one_for_the_ground_truth_and_above_one_for_a_jump_at_the_borders():
    from dancelcm.diffusion.windows import window_borders
    from dancelcm.metrics.quality import seam_ratio

    t = torch.linspace(0, 1, 16)
    gt = (t.view(1, 16, 1, 1, 1) * torch.ones(2, 16, 3, 8, 8)) * 2 - 1  # a steady fade: the same change every frame
    borders = window_borders(16, 4, 0)
    assert borders == [3, 7, 11]
    torch.testing.assert_close(seam_ratio(gt, gt, borders), torch.ones(2))
    jumpy = gt.clone()
    for b in borders:
        jumpy[:, b + 1 :] += 0.1  # a step at every border
    assert (seam_ratio(jumpy.clamp(-1, 1), gt, borders) > 2).all()
    assert torch.isnan(seam_ratio(gt, gt, [])).all()


def test_long_clip_options_are_checked_before_anything_runs(synthetic_root, tmp_path):
    from dancelcm.cli import ConfigError

    teacher, _ = _save_micro_teacher(tmp_path / "teacher")
    base = [
        f"teacher={teacher}",
        f"data.root={synthetic_root}",
        "data.resolution=32",
        "data.num_workers=0",
        "max_clips=1",
        "teacher_steps=[2]",
        "feature_net=null",
        "reference_baseline=false",
        f"out_dir={tmp_path}",
    ]
    for extra, message in (
        (["data.num_frames=4", "long_clip={overlaps: [0]}"], "data.num_frames=4: a clip no longer than the window"),
        (["data.num_frames=12", "long_clip={overlaps: []}"], "long_clip.overlaps=\\[\\]"),
        (["data.num_frames=12", "long_clip={overlaps: [4], window: 4}"], "window=4, overlap=4"),
        (["data.num_frames=12", "long_clip={weights: flat}"], "weights='flat'"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            evaluate.run(_compose("evaluate", [*base, *extra]))
