"""FSDP (``trainer=fsdp``: FSDP2 through Lightning's ModelParallelStrategy), 2 CPU processes (gloo), micro size.

- 2 ranks x batch 1 log the same per-step losses as 1 process x batch 2, for the LoRA student (one shared, sharded
  base) and the full student (student, EMA copy and teacher each sharded);
- a checkpoint written under FSDP (one full-state file from rank 0; a LoRA student's without base weights) resumes
  exactly, and the export gathers the adapters from the shards into a LoRA student bundle.

bf16 mixed precision is not compared here (CPU gloo; the policy is a one-line switch on the trainer precision);
no GPU has run ``trainer=fsdp`` yet.
"""

from __future__ import annotations

import pytest
import torch

from dancelcm.lit.fsdp import FSDPStrategy
from tests.conftest import run_module
from tests.integration.test_resume import _base, _losses

LORA = ["method.student=lora", "method.lora.rank=4", "method.lora.alpha=4"]
# steps large enough that a lost gradient, adapter, EMA or optimizer state shows in the losses and the weights
MOVE = ["method.warmup_steps=0", "method.lr=1e-3"]
FSDP = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


def _train(run, synthetic_root, teacher, steps, *extra):
    run.parent.mkdir(parents=True, exist_ok=True)
    args = [a for a in _base(run, synthetic_root, teacher) if not a.startswith("trainer.max_steps=")]
    run_module([*args, f"trainer.max_steps={steps}", *MOVE, *extra], run.parent)
    return _losses(run)


def _trained(run) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(("student.", "target."))}


def test_fsdp_strategy_composes_as_pure_data_parallel_sharding():
    from hydra.utils import instantiate

    from tests.configs.test_experiment_configs import _compose

    cfg = _compose(["+experiment=synthetic_k4", *FSDP])
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy) and strategy._save_distributed_checkpoint is False


@pytest.mark.slow  # the real CLI with 2 gloo ranks in subprocesses
@pytest.mark.parametrize("student", ["lora", "full"])
def test_two_fsdp_ranks_train_like_one_process_with_the_global_batch(student, micro_teacher, synthetic_root, tmp_path):
    extra = LORA if student == "lora" else []
    single = _train(tmp_path / "single" / "run", synthetic_root, micro_teacher, 3, *extra, "data.batch_size=2")
    sharded = _train(tmp_path / "fsdp" / "run", synthetic_root, micro_teacher, 3, *extra, *FSDP, "data.batch_size=1")
    assert sorted(single) == sorted(sharded) == [0, 1, 2]
    for s in single:
        assert sharded[s] == pytest.approx(single[s], rel=1e-5, abs=1e-6), (s, single[s], sharded[s])
    ckpt = torch.load(tmp_path / "fsdp" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    keys = list(ckpt["state_dict"])
    assert ckpt["global_step"] == 3 and keys
    a, b = _trained(tmp_path / "single" / "run"), _trained(tmp_path / "fsdp" / "run")
    assert a.keys() == b.keys()
    # the same trained weights and EMA, gathered from the shards: the two runs differ by far less than training moved
    # them (elementwise, Adam's normalisation turns the last-bit differences of a 2-rank gradient average into
    # visible ones where a gradient is near zero; the norm over all weights is the meaningful comparison)
    from dancelcm.models.bundle import load_bundle

    if student == "lora":  # LoRA B starts at zero
        start = {k: torch.zeros_like(v) for k, v in a.items() if k.startswith("student.") and "lora_B" in k}
    else:
        start = {f"student.animator.{k}": v for k, v in load_bundle(micro_teacher).animator.state_dict().items()}
    keys = [k for k in a if k in start and a[k].is_floating_point()]
    update = sum(((a[k] - start[k]) ** 2).sum() for k in keys).sqrt()
    between = sum(((a[k] - b[k]) ** 2).sum() for k in keys).sqrt()
    assert update > 1e-2 and between < 1e-3 * update, (float(update), float(between))
    for k in (k for k in a if k.startswith("target.")):
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-3, msg=k)
    if student == "lora":  # one full-state file from rank 0, without the frozen base
        assert all("base_layer" not in k for k in keys) and any("lora_B" in k for k in keys)


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_exactly_and_exports_the_adapters(micro_teacher, synthetic_root, tmp_path):
    from dancelcm.models.bundle import load_bundle
    from dancelcm.models.lora import has_lora

    args = [*LORA, *FSDP, "data.batch_size=1"]
    straight = _train(tmp_path / "a" / "run", synthetic_root, micro_teacher, 5, *args)
    run = tmp_path / "b" / "run"
    first = _train(run, synthetic_root, micro_teacher, 3, *args)
    extend = ["ckpt_path=auto", "callbacks.export_every_n_steps=100"]
    resumed = _train(run, synthetic_root, micro_teacher, 5, *args, *extend)
    assert sorted(first) == [0, 1, 2] and sorted(resumed) == list(range(5)) == sorted(straight)
    for s in straight:
        assert resumed[s] == pytest.approx(straight[s], rel=1e-6, abs=1e-7), (s, straight[s], resumed[s])
    a, b = _trained(tmp_path / "a" / "run"), _trained(run)
    assert a.keys() == b.keys() and any("lora_B" in k for k in a) and any(k.startswith("target.") for k in a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    bundle = load_bundle(run / "export")
    assert bundle.meta["kind"] == "student" and bundle.meta["training"]["global_step"] == 5
    assert bundle.meta["format"] == "lora" and has_lora(bundle.animator)  # gathered from the shards, rank 0 wrote


@pytest.mark.slow
def test_fsdp_bf16_mixed_trains_with_fp32_weights_ema_and_checkpoints(micro_teacher, synthetic_root, tmp_path):
    """bf16 compute (FSDP2's param dtype) with fp32 sharded weights, EMA shadows and checkpoint, and activation
    checkpointing on: the losses stay within bf16's reach of the fp32 run's."""
    bf16 = [a for a in FSDP if not a.startswith("trainer.precision=")]
    bf16 += ["trainer.precision=bf16-mixed", "method.gradient_checkpointing=true"]
    fp32 = _train(tmp_path / "fp32" / "run", synthetic_root, micro_teacher, 3, *LORA, *FSDP, "data.batch_size=1")
    mixed = _train(tmp_path / "bf16" / "run", synthetic_root, micro_teacher, 3, *LORA, *bf16, "data.batch_size=1")
    assert sorted(mixed) == [0, 1, 2]
    for s in mixed:
        assert mixed[s] == pytest.approx(fp32[s], rel=0.05), (s, fp32[s], mixed[s])
    state = torch.load(tmp_path / "bf16" / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    floats = {k: v.dtype for k, v in state.items() if v.is_floating_point()}
    assert floats and set(floats.values()) == {torch.float32}
    assert any(k.startswith("target.shadows.") for k in floats)
