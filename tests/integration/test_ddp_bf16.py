"""DDP (2 CPU processes, gloo) and bf16-mixed through the real CLI at micro size.

- 2 ranks x batch 1 log the same per-step losses as 1 process x batch 2 (the global batch), the EMA target
  and student stay identical across ranks, there is exactly one run folder, and validation videos are
  written by rank 0 without a deadlock;
- bf16-mixed trains with a bf16 teacher / target (``teacher_dtype=auto``), and the EMA and the checkpoint
  weights stay float32.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_module
from tests.integration.test_resume import _base, _losses

STEPS = 3


def _with_samples(args: list[str]) -> list[str]:
    return [a for a in args if a != "callbacks.sample_videos=null"]


def _checksum(path) -> str:
    return f"+callbacks.extra=[{{_target_:dancelcm.callbacks.diagnostics.RankChecksum,dir:{path}}}]"


@pytest.mark.slow  # the real CLI (2 DDP ranks / bf16) in subprocesses
def test_two_ranks_train_like_one_process_with_the_global_batch(micro_teacher, synthetic_root, tmp_path):
    common = [f"trainer.max_steps={STEPS}", "trainer.val_check_interval=2"]
    single = tmp_path / "single" / "run"
    single.parent.mkdir()
    run_module(
        [
            *_with_samples(_base(single, synthetic_root, micro_teacher)),
            *common,
            "data.batch_size=2",
            _checksum(tmp_path / "s"),
        ],
        single.parent,
    )
    ddp = tmp_path / "ddp" / "run"
    ddp.parent.mkdir()
    run_module(
        [
            *_with_samples(_base(ddp, synthetic_root, micro_teacher)),
            *common,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "data.batch_size=1",
            _checksum(tmp_path / "d"),
        ],
        ddp.parent,
    )
    a, b = _losses(single), _losses(ddp)
    assert sorted(a) == sorted(b) == list(range(STEPS))
    for s in range(STEPS):
        assert b[s] == pytest.approx(a[s], rel=1e-5, abs=1e-6), (s, a[s], b[s])
    r0 = json.loads((tmp_path / "d" / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "d" / "rank1.json").read_text())
    assert r0 == r1 and any(k.startswith("target.shadow.") for k in r0)  # bitwise-identical ranks
    single_sums = json.loads((tmp_path / "s" / "rank0.json").read_text())
    for k in r0:
        assert r0[k] == pytest.approx(single_sums[k], rel=1e-4, abs=1e-4), k
    # one run folder, one metrics history, validation videos from rank 0
    assert [p.name for p in ddp.parent.iterdir()] == ["run"]
    assert len(list((ddp / "csv").glob("version_*"))) == 1
    assert sorted(p.name for p in (ddp / "samples").glob("*.png")) == ["step_0000002.png"]


@pytest.mark.slow  # the real CLI (2 DDP ranks / bf16) in subprocesses
def test_bf16_mixed_distillation_keeps_fp32_ema_and_checkpoints(micro_teacher, synthetic_root, tmp_path):
    run = tmp_path / "run"
    run_module(
        [*_base(run, synthetic_root, micro_teacher), "trainer.max_steps=2", "trainer.precision=bf16-mixed"], tmp_path
    )
    losses = _losses(run)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(list(losses.values()))))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    floats = {k: v.dtype for k, v in ckpt["state_dict"].items() if v.is_floating_point()}
    assert set(floats.values()) == {torch.float32}
    assert any(k.startswith("target.shadow.") for k in floats)


def test_teacher_dtype_auto_follows_the_trainer_precision():
    from types import SimpleNamespace

    from dancelcm.lit.distill import DistillModule

    module = DistillModule.__new__(DistillModule)
    torch.nn.Module.__init__(module)
    module.cfg = SimpleNamespace(teacher_dtype="auto")
    for precision, expected in (("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)):
        module._trainer = SimpleNamespace(precision=precision)
        assert module.teacher_dtype == expected
    module.cfg = SimpleNamespace(teacher_dtype="float32")
    module._trainer = SimpleNamespace(precision="bf16-mixed")
    assert module.teacher_dtype == torch.float32  # explicit wins
