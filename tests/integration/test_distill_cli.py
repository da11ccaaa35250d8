"""Distillation through the real CLI at micro size, on a micro teacher trained by the test."""

import csv
import json

import pytest
import torch

from tests.conftest import run_module
from tests.integration.conftest import EVAL_MICRO

pytestmark = pytest.mark.slow  # the real CLI in subprocesses (make test-slow)

# conf/debug/micro.yaml (after +experiment=), a DDIM-2 teacher reference in validation and an 8-step solver grid
DISTILL_MICRO = ["+debug=micro", "method.validation.teacher_steps=2", "method.segments.num_grid=8"]


_run = run_module


@pytest.mark.parametrize("experiment", ["synthetic_k4", "synthetic_lcm"])
def test_distillation_runs_logs_and_exports(experiment, micro_teacher, synthetic_root, tmp_path):
    run = tmp_path / "run"
    _run(
        [
            "dancelcm.train",
            f"+experiment={experiment}",
            f"data.root={synthetic_root}",
            f"hydra.run.dir={run}",
            f"method.teacher={micro_teacher}",
            *DISTILL_MICRO,
            "trainer.max_steps=2",
        ],
        tmp_path,
    )
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    keys = ckpt["state_dict"].keys()
    assert not any(k.startswith("teacher.") for k in keys)  # the teacher is never saved
    assert any(k.startswith("target.shadow.") for k in keys)
    has_face = any("embedders.face" in k for k in keys)
    has_aux = any(k.startswith("student.aux_head.") for k in keys)
    assert has_face == has_aux == (experiment == "synthetic_k4")
    rows = []
    for f in sorted((run / "csv").glob("version_*/metrics.csv")):
        with open(f) as fh:
            rows += list(csv.DictReader(fh))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"train/loss_cd", "train/grad_norm", "val/loss_cd"} <= logged
    if experiment == "synthetic_k4":
        assert {"train/loss_aux", "train/motion_fraction"} <= logged
        assert any(k.startswith("train/loss_cd_seg") for k in logged)
    meta = json.loads((run / "export" / "bundle.json").read_text())
    assert meta["kind"] == "student" and meta["sampling"]["guidance"] == 1.0
    assert meta["segments"]["num_segments"] == (4 if experiment == "synthetic_k4" else 1)
    samples = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert samples, "no validation samples written"


def test_missing_teacher_names_the_option_and_the_command(synthetic_root, tmp_path):
    proc = _run(
        [
            "dancelcm.train",
            "+experiment=synthetic_k4",
            f"data.root={synthetic_root}",
            f"hydra.run.dir={tmp_path}/r",
            f"method.teacher={tmp_path}/none",
            *DISTILL_MICRO,
        ],
        tmp_path,
        ok=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # a user's mistake: one message
    assert f"method.teacher={tmp_path}/none: no such folder" in proc.stderr and "+experiment=" in proc.stderr


def test_ablation_sweep_runs_each_job_in_its_own_folder(micro_teacher, synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    _run(
        [
            "dancelcm.train",
            "-m",
            "+experiment=synthetic_k4",
            "+ablation=face",
            f"data.root={synthetic_root}",
            f"hydra.sweep.dir={sweep}",
            f"method.teacher={micro_teacher}",
            *DISTILL_MICRO,
            "trainer.max_steps=1",
            "callbacks.sample_videos=null",
        ],
        tmp_path,
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    # named by the swept value, plus a hash of this test's other overrides (shared by both jobs)
    assert [j.split("__")[0] for j in jobs] == ["method.face.enabled=False", "method.face.enabled=True"]
    assert len({j.split("__")[1] for j in jobs}) == 1
    for job in jobs:
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / job / "export" / "bundle.json").is_file()
    # the report: one row per job from the local run folders, the swept value in its column, a plot
    _run(["dancelcm.report", f"runs={sweep}"], tmp_path)
    table = (sweep / "report" / "report.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| method.face")]
    assert len(rows) == 2 and "| face |" in table and "train/loss_cd" in table
    assert {r.split("|")[1].strip().split("__")[0] for r in rows} == {
        "method.face.enabled=False",
        "method.face.enabled=True",
    }
    with open(sweep / "report" / "report.csv") as fh:
        data = list(csv.DictReader(fh))
    assert sorted(r["face"] for r in data) == ["False", "True"] and all(float(r["train/loss_cd"]) > 0 for r in data)
    assert (sweep / "report" / "report.png").stat().st_size > 1000
    empty = _run(["dancelcm.report", f"runs={tmp_path / 'nothing'}"], tmp_path, ok=False)
    assert empty.returncode != 0 and "runs=" in empty.stderr and "no such folder" in empty.stderr


@pytest.fixture(scope="module")
def one_step_k4(micro_teacher, synthetic_root, tmp_path_factory):
    """A DanceLCM K=4 micro run of one step, shared by the tests that only need its export."""
    run = tmp_path_factory.mktemp("k4") / "run"
    _run(
        [
            "dancelcm.train",
            "+experiment=synthetic_k4",
            f"data.root={synthetic_root}",
            f"hydra.run.dir={run}",
            f"method.teacher={micro_teacher}",
            *DISTILL_MICRO,
            "trainer.max_steps=1",
            "callbacks.sample_videos=null",
        ],
        run.parent,
    )
    return run


def test_evaluate_compares_students_with_the_teacher_from_the_same_noise(
    one_step_k4, micro_teacher, synthetic_root, tmp_path
):
    run = one_step_k4
    out = tmp_path / "eval"
    _run(
        [
            "dancelcm.evaluate",
            f"teacher={micro_teacher}",
            f"data.root={synthetic_root}",
            *EVAL_MICRO,
            "data.face_size=16",
            "teacher_steps=[2]",
            "guidance=[2.0]",
            "vs_teacher.steps=2",
            "feature_net=null",
            "reference_baseline=false",
            f"students={{DanceLCM:{run / 'export'}}}",
            "student_steps=[1,2,4]",  # more than K=4 is refused (tests/unit/test_student_steps.py)
            f"out_dir={out}",
        ],
        tmp_path,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {
        "teacher DDIM-2 CFG 2",
        "DanceLCM 1-step",
        "DanceLCM 2-step",
        "DanceLCM 4-step",
    }
    assert metrics["DanceLCM 4-step"]["nfe"] == 4
    # the teacher row is the reference: no PSNR against itself; every student row has a finite one
    assert "psnr_vs_teacher" not in metrics["teacher DDIM-2 CFG 2"]
    for k in (1, 2, 4):
        assert 5.0 < metrics[f"DanceLCM {k}-step"]["psnr_vs_teacher"]["mean"] < 100.0
        # and inside the regions the method targets (the synthetic clips have a figure mask and moving pixels)
        for region in ("figure", "motion"):
            assert 5.0 < metrics[f"DanceLCM {k}-step"][f"psnr_vs_teacher_{region}"]["mean"] < 100.0
    assert "vs teacher motion" in (out / "table.md").read_text()
    assert "psnr_vs_teacher_face" in (out / "per_clip.csv").read_text().splitlines()[0]


def test_wandb_offline_run_groups_by_ablation_with_flat_config(micro_teacher, synthetic_root, tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline because there is no key, not because of the env
    run = tmp_path / "run"
    args = [
        "dancelcm.train",
        "+experiment=synthetic_k4",
        "+ablation=face",
        f"data.root={synthetic_root}",
        f"hydra.run.dir={run}",
        f"method.teacher={micro_teacher}",
        *DISTILL_MICRO,
        "logger=wandb",
        "trainer.max_steps=2",
    ]
    _run(args, tmp_path)
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run / "wandb").iterdir())
    init_log = (offline[0] / "logs" / "debug.log").read_text()  # offline: the config is in the init log
    assert "'method/segments/num_segments': 4" in init_log and "'method/face/enabled': True" in init_log
    media = list((offline[0] / "files" / "media").glob("**/*.mp4"))
    assert media, "validation videos were not logged to W&B"
    _run([*args, "trainer.max_steps=3", "ckpt_path=auto"], tmp_path)  # resumed: the same W&B run id
    ids = {p.name.split("-")[-1] for p in (run / "wandb").glob("offline-run-*")}
    assert len(ids) == 1


def test_animate_with_an_exported_student_at_1_2_4_steps(one_step_k4, synthetic_root, tmp_path):
    from PIL import Image

    from dancelcm.data import layout
    from dancelcm.data.reader import FrameSource, read_faces, read_frames

    run = one_step_k4
    d = layout.video_dir(synthetic_root, layout.read_split(synthetic_root, "test")[0])
    Image.fromarray(read_frames(d)[0]).save(tmp_path / "ref.png")
    first = read_faces(d, len(read_frames(d)))[0]
    box = [float(v) for v in first] if first is not None else [8.0, 2.0, 20.0, 14.0]
    base = [
        "dancelcm.animate",
        f"model_dir={run / 'export'}",
        f"reference={tmp_path / 'ref.png'}",
        f"pose={d / 'pose.mp4'}",
        "max_frames=5",
        "layout=video",
        f"face_box=[{','.join(f'{v:.1f}' for v in box)}]",
    ]
    for steps in (1, 2, 4):
        out = tmp_path / f"s{steps}.mp4"
        proc = _run([*base, f"steps={steps}", f"out={out}"], tmp_path)
        assert f"the student, {steps} steps, no CFG" in proc.stdout + proc.stderr
        assert len(FrameSource(out)) == 5 and FrameSource(out).frame_size() == (32, 32)
    cfg_given = _run([*base, "guidance=2.0", f"out={tmp_path / 'x.mp4'}"], tmp_path, ok=False)
    assert "guidance=2.0" in cfg_given.stderr and "without CFG" in cfg_given.stderr
    bad_box = _run([*base[:-1], "face_box=[10,10,5,5]", f"out={tmp_path / 'x.mp4'}"], tmp_path, ok=False)
    assert "face_box=" in bad_box.stderr and "inside the" in bad_box.stderr
