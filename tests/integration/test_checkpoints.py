"""Checkpoints survive any kill and auto-resume takes the newest readable one (in-process, micro size).

- A preemption before the first regular checkpoint writes last.ckpt without the checkpoint callback knowing;
  the resumed launch must keep writing last.ckpt (not last-v1.ckpt), and a later auto-resume must continue from
  the newest step, not from the preemption's.
- The temporary file of a save lies beside its target, never in $TMPDIR (on a cluster another filesystem, where
  the final rename becomes a copy that a kill truncates).
- A corrupt last.ckpt does not stop auto-resume: the newest readable step*.ckpt is used, with a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from dancelcm.callbacks.checkpoints import resume_checkpoint
from dancelcm.train import resolve_ckpt, run
from tests.configs.test_experiment_configs import _compose, _micro_training, _save_micro_teacher


def _cfg(root, teacher, max_steps, *extra):
    return _compose(
        [
            *_micro_training("synthetic_lcm", teacher, root),
            "method.segments.num_grid=8",
            "trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0",
            "trainer.enable_progress_bar=false",
            "+trainer.enable_model_summary=false",
            "callbacks.checkpoint_every_n_steps=3",
            "callbacks.export_every_n_steps=null",
            "callbacks.sample_videos=null",
            f"trainer.max_steps={max_steps}",
            *extra,
        ]
    )


def _kill(step, sig):
    return f"+callbacks.extra=[{{_target_:dancelcm.callbacks.diagnostics.KillAt,step:{step},signal:{sig}}}]"


def _step(path: Path) -> int:
    return int(torch.load(path, weights_only=True, mmap=True)["global_step"])


def test_preempted_before_the_first_checkpoint_then_resumed_keeps_one_latest_file(synthetic_root, tmp_path):
    teacher, _ = _save_micro_teacher(tmp_path / "teacher")
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    with pytest.raises(SystemExit) as e:  # SIGTERM before step 1 ends: the handler writes last.ckpt, no regular one yet
        run(_cfg(synthetic_root, teacher, 10, _kill(1, "TERM")), run_dir)
    assert e.value.code == 128 + 15 and _step(ckpts / "last.ckpt") == 2  # after the running step
    trainer, _ = run(_cfg(synthetic_root, teacher, 4, "ckpt_path=auto"), run_dir)
    assert trainer.global_step == 4
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["last.ckpt", "step0000003.ckpt"]  # no last-v1.ckpt
    assert _step(ckpts / "last.ckpt") == 4
    assert resolve_ckpt("auto", run_dir) == str(ckpts / "last.ckpt")
    # extended later, the run continues from its last step exactly (weights, EMA, optimizer: as if never stopped)
    _, resumed = run(_cfg(synthetic_root, teacher, 6, "ckpt_path=auto"), run_dir)
    _, straight = run(_cfg(synthetic_root, teacher, 6), tmp_path / "straight")
    a, b = resumed.state_dict(), straight.state_dict()  # (a 4-step run never lets a checkpoint fall on step 4)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_auto_resume_picks_the_highest_recorded_step_and_skips_a_corrupt_file(tmp_path, caplog):
    d = tmp_path / "run" / "checkpoints"
    d.mkdir(parents=True)
    for name, step in (("last.ckpt", 1), ("last-v1.ckpt", 10), ("step0000009.ckpt", 9)):
        torch.save({"global_step": step, "state_dict": {"w": torch.zeros(3)}}, d / name)
    # a stale last.ckpt next to a newer file (a launch that wrote last-v1.ckpt): the newest step wins
    assert resolve_ckpt("auto", d.parent) == str(d / "last-v1.ckpt")
    (d / "last-v1.ckpt").write_bytes((d / "last-v1.ckpt").read_bytes()[:100])  # truncated by a kill
    (d / ".last.ckpt.123.tmp").write_bytes(b"half")  # an unfinished temporary file is never a candidate
    with caplog.at_level(logging.WARNING):
        assert resolve_ckpt("auto", d.parent) == str(d / "step0000009.ckpt")
    assert "last-v1.ckpt cannot be read" in caplog.text
    for p in d.glob("*.ckpt"):
        p.write_bytes(b"not a checkpoint")
    assert resume_checkpoint(d) is None  # nothing readable: start fresh (with the warnings), never crash
    assert resolve_ckpt("auto", tmp_path / "elsewhere") is None


def test_checkpoint_temporary_files_sit_beside_the_target_not_in_tmpdir(synthetic_root, tmp_path, monkeypatch):
    import tempfile

    teacher, _ = _save_micro_teacher(tmp_path / "teacher")
    elsewhere = tmp_path / "node_local_tmp"  # stands for $TMPDIR on another filesystem
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    moves: list[tuple[str, str]] = []
    for mod, name in ((os, "replace"), (os, "rename"), (shutil, "move")):
        real = getattr(mod, name)

        def spy(src, dst, *a, _real=real, **k):
            moves.append((str(src), str(dst)))
            return _real(src, dst, *a, **k)

        monkeypatch.setattr(mod, name, spy)
    run_dir = tmp_path / "run"
    run(_cfg(synthetic_root, teacher, 3), run_dir)
    into_ckpts = [(s, d) for s, d in moves if d.endswith(".ckpt")]
    assert into_ckpts, "no checkpoint was moved into place"
    for src, dst in into_ckpts:
        assert Path(src).parent == Path(dst).parent, (src, dst)  # same folder: same filesystem, a true rename
    assert not any(elsewhere.iterdir())


def test_a_run_shorter_than_the_checkpoint_interval_keeps_its_mid_epoch_last_step(synthetic_root, tmp_path):
    teacher, _ = _save_micro_teacher(tmp_path / "teacher")
    run(_cfg(synthetic_root, teacher, 2), tmp_path / "run")  # every 3 steps: no regular checkpoint at all
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    # written after the last step (resumable exactly), not at the end of fit (which marks the epoch finished)
    assert ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 0
    assert ckpt["PoseVideoDataModule"] == {"epoch": 0, "batches": 2}


def test_export_snapshots_at_chosen_steps_survive_a_resume_and_equal_a_run_of_that_length(
    synthetic_root, tmp_path, caplog
):
    """callbacks.export_at_steps keeps exports/step_N (a convergence study evaluates one run at several budgets):
    the step-2 snapshot of a 5-step run, interrupted at 3 and resumed, equals the export of a 2-step run."""
    from safetensors.torch import load_file

    teacher, _ = _save_micro_teacher(tmp_path / "teacher")
    run_dir = tmp_path / "run"
    snap = ["callbacks.export_at_steps=[2,4]"]
    run(_cfg(synthetic_root, teacher, 3, *snap), run_dir)  # stops at 3 (checkpoint at 3), resumed to 5
    run(_cfg(synthetic_root, teacher, 5, "ckpt_path=auto", *snap), run_dir)
    assert sorted(p.name for p in (run_dir / "exports").iterdir()) == ["step_0000002", "step_0000004"]
    run(_cfg(synthetic_root, teacher, 2, "callbacks.export_every_n_steps=100"), tmp_path / "short")
    weights = sorted(p.name for p in (tmp_path / "short" / "export").glob("*.safetensors"))
    assert weights
    for name in weights:
        a = load_file(run_dir / "exports" / "step_0000002" / name)
        b = load_file(tmp_path / "short" / "export" / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{name}:{k}")
    # a resumed run past a snapshot step it never wrote says so
    shutil.rmtree(run_dir / "exports" / "step_0000004")
    with caplog.at_level(logging.WARNING):
        run(_cfg(synthetic_root, teacher, 6, "ckpt_path=auto", *snap), run_dir)
    assert "without the export snapshots of steps [4]" in caplog.text
    with pytest.raises(ValueError, match="export_at_steps"):
        from dancelcm.callbacks.samples import ExportBundle

        ExportBundle(keep_at_steps=[0])


def test_a_run_resumed_at_exactly_a_snapshot_step_writes_the_missing_snapshot(synthetic_root, tmp_path):
    """The preemption and final checkpoints are written before the export callback: killed between the two, a run
    resumes at the snapshot's own step, and writes the snapshot then, from the weights of that step."""
    from safetensors.torch import load_file

    teacher, _ = _save_micro_teacher(tmp_path / "teacher")
    run_dir = tmp_path / "run"
    snap = ["callbacks.export_at_steps=[2]"]
    run(_cfg(synthetic_root, teacher, 2, *snap), run_dir)
    kept = run_dir / "exports" / "step_0000002"
    weights = {p.name: load_file(p) for p in kept.glob("*.safetensors")}
    shutil.rmtree(kept)  # as if killed after the final checkpoint, before the snapshot
    run(_cfg(synthetic_root, teacher, 3, "ckpt_path=auto", *snap), run_dir)
    assert (kept / "bundle.json").is_file()
    for name, tensors in weights.items():
        again = load_file(kept / name)
        for k, v in tensors.items():
            torch.testing.assert_close(again[k], v, rtol=0, atol=0, msg=k)
