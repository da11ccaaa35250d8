"""The teacher's train -> export -> animate -> evaluate path through the real CLIs, at micro size."""

import csv
import json

import pytest
import torch
from PIL import Image

from dancelcm.data import layout
from dancelcm.data.reader import read_frames
from tests.conftest import run_module
from tests.integration.conftest import EVAL_MICRO, MICRO

pytestmark = pytest.mark.slow  # the real CLI in subprocesses (make test-slow)

_run = run_module


def test_training_writes_checkpoints_metrics_samples_and_export(trained):
    run_dir, _, _ = trained
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    versions = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    assert len(versions) == 2  # one per launch: the resumed launch does not overwrite the first one's history
    rows = []
    for v in versions:
        with open(v) as f:
            rows += list(csv.DictReader(f))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 4 and all(torch.isfinite(torch.tensor(losses)))
    assert any(r.get("val/loss_t500") for r in rows)
    sharp = [float(r[k]) for r in rows for k in r if k.startswith("val/sharpness_") and r[k]]
    assert sharp and all(s > 0 for s in sharp)  # Laplacian energy ratio of the validation samples
    assert sorted(p.name for p in (run_dir / "samples").iterdir())[-2:] == ["step_0000004.mp4", "step_0000004.png"]
    strip = Image.open(run_dir / "samples" / "step_0000004.png")
    # a margin naming each row (its longest label: "ground truth"), then reference + 4 frames; rows: pose, ground
    # truth, two samplers per clip
    assert strip.width == 8 + 6 * len("ground truth") + 32 * 5
    assert strip.height == 32 * 4 * 2
    bundle = json.loads((run_dir / "export" / "bundle.json").read_text())
    assert bundle["kind"] == "teacher" and bundle["training"]["global_step"] == 4
    assert bundle["scheduler"]["prediction_type"] == "sample"  # x0 output, v-weighted loss (animator_tiny)


def test_resume_continues_from_last_checkpoint(trained):
    _, first, resumed = trained
    assert "resuming from" in resumed.stdout + resumed.stderr
    ckpt = torch.load(trained[0] / "checkpoints" / "last.ckpt", weights_only=True)  # primitives only
    assert ckpt["global_step"] == 4
    assert "ema.shadow.backbone.conv_in.weight" in ckpt["state_dict"]


def test_fast_dev_run(synthetic_root, tmp_path):
    _run(
        [
            "dancelcm.train",
            "+experiment=synthetic_teacher",
            f"data.root={synthetic_root}",
            f"hydra.run.dir={tmp_path}/r",
            *MICRO,
            "trainer.fast_dev_run=true",
        ],
        tmp_path,
    )


def test_animate_writes_a_video_and_names_bad_inputs(trained, synthetic_root, tmp_path):
    run_dir = trained[0]
    vid = layout.read_split(synthetic_root, "test")[0]
    d = layout.video_dir(synthetic_root, vid)
    Image.fromarray(read_frames(d)[0]).save(tmp_path / "ref.png")
    out = tmp_path / "out.mp4"
    _run(
        [
            "dancelcm.animate",
            f"model_dir={run_dir / 'export'}",
            f"reference={tmp_path / 'ref.png'}",
            f"pose={d / 'pose.mp4'}",
            f"out={out}",
            "steps=2",
            "max_frames=6",
            "window=4",
        ],
        tmp_path,
    )
    from dancelcm.data.reader import FrameSource

    src = FrameSource(out)
    assert len(src) == 6 and src.frame_size() == (32, 96)  # reference | pose | result
    bad = _run(
        [
            "dancelcm.animate",
            f"model_dir={run_dir / 'export'}",
            f"reference={tmp_path / 'nope.png'}",
            f"pose={d / 'pose.mp4'}",
            f"out={out}",
        ],
        tmp_path,
        ok=False,
    )
    assert bad.returncode != 0 and "reference=" in bad.stderr and "no such image" in bad.stderr
    missing = _run(
        ["dancelcm.animate", f"model_dir={tmp_path}", f"reference={tmp_path / 'ref.png'}", f"pose={d / 'pose.mp4'}"],
        tmp_path,
        ok=False,
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"model_dir={tmp_path}: no model bundle there (bundle.json missing)" in missing.stderr
    assert "+experiment=" in missing.stderr  # how to make a teacher


def test_evaluate_writes_the_table(trained, synthetic_root, tmp_path):
    from dancelcm.metrics.features import FrameEncoder

    FrameEncoder().save(tmp_path / "feat")  # random weights: proves the loading path, not the metric
    out = tmp_path / "eval"
    _run(
        [
            "dancelcm.evaluate",
            f"teacher={trained[0] / 'export'}",
            f"data.root={synthetic_root}",
            *EVAL_MICRO,
            "teacher_steps=[2,1]",
            "guidance=[1.0,2.0]",
            "vs_teacher.steps=2",
            f"feature_net={tmp_path / 'feat'}",
            f"out_dir={out}",
        ],
        tmp_path,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {
        "copy reference frame",
        "teacher DDIM-2",
        "teacher DDIM-2 CFG 2",
        "teacher DDIM-1",
        "teacher DDIM-1 CFG 2",
    }
    row = metrics["teacher DDIM-2 CFG 2"]
    assert row["nfe"] == 4 and row["clips"] == 2 and row["psnr"]["n"] == 2 and row["fd"] >= 0
    assert metrics["copy reference frame"]["nfe"] == 0
    per_clip = (out / "per_clip.csv").read_text().splitlines()
    assert per_clip[0].startswith("sampler,clip,video_id,") and len(per_clip) == 1 + 2 * len(metrics)
    table = (out / "table.md").read_text()
    assert "teacher DDIM-1 CFG 2" in table and "Command: `python -m dancelcm.evaluate" in table
    assert (out / "quality_vs_nfe.png").stat().st_size > 1000
    assert (out / "samples.png").is_file() and (out / "samples.mp4").is_file() and "samples.png" in table


def test_sampler_families_for_the_plot():
    from dancelcm.evaluation.plots import family

    assert family("DanceLCM 4-step") == family("DanceLCM 1-step") == "DanceLCM"
    assert family("teacher DDIM-50 CFG 2") == family("teacher DDIM-4 CFG 2") != family("teacher DDIM-4")


def test_probe_writes_the_denoising_table(trained, synthetic_root, tmp_path):
    out = tmp_path / "probe"
    _run(
        [
            "dancelcm.tools.probe",
            f"model_dir={trained[0] / 'export'}",
            f"data.root={synthetic_root}",
            *EVAL_MICRO,
            "timesteps=[10,999]",
            f"out_dir={out}",
        ],
        tmp_path,
    )
    rows = json.loads((out / "probe.json").read_text())["rows"]
    assert [r["t"] for r in rows] == [10, 999] and all(r["clips"] == 2 for r in rows)
    assert "x_t / a_t|psnr" in rows[0] and "x_t / a_t|psnr" not in rows[1]  # no naive estimate at the top
    assert "| 10 |" in (out / "probe.md").read_text()
