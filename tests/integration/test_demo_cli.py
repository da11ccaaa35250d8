"""``python -m dancelcm.demo`` end to end at micro size: both distillations, the evaluation, the summary."""

import json

import pytest

from tests.conftest import run_module
from tests.integration.test_distill_cli import DISTILL_MICRO

pytestmark = pytest.mark.slow  # the real CLI in subprocesses (make test-slow)


def test_demo_distils_both_students_and_writes_the_table(micro_teacher, synthetic_root, tmp_path):
    from dancelcm.metrics.features import FrameEncoder

    FrameEncoder().save(tmp_path / "feat")  # random weights: proves the path, not the metric
    out = tmp_path / "demo"
    train = [o for o in DISTILL_MICRO if not o.startswith(("data.resolution", "data.num_frames"))]
    proc = run_module(
        [
            "dancelcm.demo",
            f"teacher={micro_teacher}",
            f"data.root={synthetic_root}",
            "data.resolution=32",
            "data.num_frames=4",
            "distill_steps=2",
            "max_clips=2",
            "video_clips=2",
            "teacher_steps=2",
            f"out_dir={out}",
            f"train_overrides=[{','.join(repr(o) for o in train)}]",  # quoted: each holds an '='
            f"eval_overrides=['data.val_batch_size=2','data.num_workers=0','feature_net={tmp_path / 'feat'}']",
        ],
        tmp_path,
    )
    for run in ("synthetic_k4", "synthetic_lcm"):
        meta = json.loads((out / run / "export" / "bundle.json").read_text())
        assert meta["kind"] == "student" and meta["training"]["global_step"] == 2
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    expected = {"copy reference frame", "teacher DDIM-2 CFG 2"}
    expected |= {f"{s} {k}-step" for s in ("DanceLCM", "VideoLCM") for k in (1, 2, 4)}
    assert set(metrics) == expected
    assert metrics["DanceLCM 4-step"]["nfe"] == 4 and "psnr_vs_teacher" in metrics["DanceLCM 4-step"]
    assert (out / "eval" / "samples.mp4").is_file() and (out / "eval" / "quality_vs_nfe.png").is_file()
    summary = (out / "demo.md").read_text()
    for name in ("data", "teacher", "distill DanceLCM", "distill VideoLCM", "evaluate", "total"):
        assert f"| {name} |" in summary or f"| **{name}** |" in summary
    assert "DanceLCM 4-step" in summary  # the table is in it
    assert "==> [5/5] evaluate" in proc.stdout + proc.stderr


def test_demo_without_teacher_names_the_command(synthetic_root, tmp_path):
    proc = run_module(
        ["dancelcm.demo", f"teacher={tmp_path / 'none'}", f"data.root={synthetic_root}", f"out_dir={tmp_path}/d"],
        tmp_path,
        ok=False,
    )
    assert proc.returncode != 0
    assert "no teacher bundle at" in proc.stderr and "+experiment=synthetic_teacher" in proc.stderr
