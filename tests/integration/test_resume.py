"""Exact resume, preemption and non-finite losses, through the real CLI at micro size (issue: scale and robustness).

A run killed with SIGKILL and resumed with ``ckpt_path=auto``, and a run preempted with SIGTERM / SIGUSR1
(which checkpoints after the running step), log the same per-step losses as an uninterrupted run.
"""

from __future__ import annotations

import csv
import signal

import pytest
import torch

from tests.conftest import run_module
from tests.integration.test_distill_cli import DISTILL_MICRO

pytestmark = pytest.mark.slow  # the real CLI killed and resumed in subprocesses (make test-slow)

STEPS = 7  # 8 train videos x 1 clip / batch 2 = 4 batches per epoch: the runs cross an epoch boundary


def _base(run, synthetic_root, teacher) -> list[str]:
    return [
        "dancelcm.train",
        "+experiment=synthetic_k4",
        f"data.root={synthetic_root}",
        f"hydra.run.dir={run}",
        f"method.teacher={teacher}",
        *DISTILL_MICRO,
        "data.clips_per_video=1",
        "callbacks.checkpoint_every_n_steps=1",
        "callbacks.export_every_n_steps=null",
        "callbacks.sample_videos=null",
        "trainer.val_check_interval=100",
        "trainer.num_sanity_val_steps=0",
        f"trainer.max_steps={STEPS}",
    ]


def _losses(run) -> dict[int, float]:
    out = {}
    for f in sorted((run / "csv").glob("version_*/metrics.csv")):
        with open(f) as fh:
            for r in csv.DictReader(fh):
                if r.get("train/loss"):
                    out[int(r["step"])] = float(r["train/loss"])
    return out


def _kill(step: int, sig: str) -> str:
    return f"+callbacks.extra=[{{_target_:dancelcm.callbacks.diagnostics.KillAt,step:{step},signal:{sig}}}]"


@pytest.fixture(scope="module")
def uninterrupted(micro_teacher, synthetic_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("resume") / "straight"
    run_module(_base(run, synthetic_root, micro_teacher), run.parent)
    losses = _losses(run)
    assert sorted(losses) == list(range(STEPS)), losses
    return losses


def test_sigkill_then_auto_resume_matches_an_uninterrupted_run(uninterrupted, micro_teacher, synthetic_root, tmp_path):
    run = tmp_path / "run"
    base = _base(run, synthetic_root, micro_teacher)
    killed = run_module([*base, _kill(3, "KILL")], tmp_path, ok=False)
    assert killed.returncode == -signal.SIGKILL
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    run_module([*base, "ckpt_path=auto"], tmp_path)
    resumed = _losses(run)  # the killed launch never flushed its CSV: these are the resumed steps
    assert set(range(3, STEPS)) <= set(resumed)
    for s in range(3, STEPS):
        assert resumed[s] == pytest.approx(uninterrupted[s], abs=1e-6, rel=0), (s, resumed[s], uninterrupted[s])


@pytest.mark.parametrize("sig", ["TERM", "USR1"])
def test_preemption_signal_checkpoints_and_resumes_exactly(sig, uninterrupted, micro_teacher, synthetic_root, tmp_path):
    run = tmp_path / "run"
    base = _base(run, synthetic_root, micro_teacher)
    base = [b for b in base if not b.startswith("callbacks.checkpoint_every_n_steps")] + [
        "callbacks.checkpoint_every_n_steps=100"  # only the preemption handler writes a checkpoint
    ]
    proc = run_module([*base, _kill(2, sig)], tmp_path, ok=False)
    assert proc.returncode == 128 + getattr(signal, f"SIG{sig}"), proc.stderr[-2000:]
    assert "preempted: checkpoint at step 3" in proc.stdout + proc.stderr
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    first = _losses(run)  # a clean stop flushes the CSV: steps 0-2
    assert sorted(first) == [0, 1, 2]
    with open(next((run / "csv").glob("version_*/metrics.csv"))) as fh:  # it stopped at once: no validation
        assert not any(r.get("val/loss_cd") for r in csv.DictReader(fh))
    run_module([*base, "ckpt_path=auto"], tmp_path)
    losses = _losses(run)
    assert sorted(losses) == list(range(STEPS))
    for s in range(STEPS):
        assert losses[s] == pytest.approx(uninterrupted[s], abs=1e-6, rel=0), (s, losses[s], uninterrupted[s])


def test_nonfinite_loss_stops_without_touching_the_last_good_checkpoint(micro_teacher, synthetic_root, tmp_path):
    run = tmp_path / "run"
    base = _base(run, synthetic_root, micro_teacher)
    poison = "+callbacks.extra=[{_target_:dancelcm.callbacks.diagnostics.PoisonBatch,step:2}]"
    proc = run_module([*base, poison], tmp_path, ok=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "non-finite distillation loss at step 2" in out and "method.nonfinite=skip" in out
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_nonfinite_skip_policy_skips_the_batch_and_trains_on(micro_teacher, synthetic_root, tmp_path):
    run = tmp_path / "run"
    base = _base(run, synthetic_root, micro_teacher)
    poison = "+callbacks.extra=[{_target_:dancelcm.callbacks.diagnostics.PoisonBatch,step:2}]"
    proc = run_module([*base, poison, "method.nonfinite=skip"], tmp_path)
    assert "batch skipped (1 so far)" in proc.stdout + proc.stderr
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == STEPS
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
