"""FSDP for the distillation (``trainer=fsdp``): Lightning's ``ModelParallelStrategy`` with PyTorch's FSDP2
``fully_shard``, applied in the module's ``configure_model`` hook.

What gets sharded (over the data-parallel mesh, each of the backbone's blocks as its own unit, then the root):

- LoRA student: the one animator (its frozen base weights, shared by the teacher view; its adapters and face path,
  trainable), the auxiliary head, and the EMA target's fp32 shadows (frozen parameters of the same shapes, so each
  rank holds the shard of the average that matches its shard of the weights);
- full student: the student, the EMA target's shadow copy and the frozen teacher, each sharded on its own.

Optimizer state follows the sharded trainable parameters (AdamW on DTensors). Under a bf16 trainer precision the
blocks compute in bf16 (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``) while the sharded weights,
their gradients' reduction and the EMA stay fp32. Activation checkpointing is the animator's own switch
(``method.gradient_checkpointing=true``: the student's blocks), which composes with the sharding.
"""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn


class FSDPStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` as pure FSDP: every process is one data-parallel shard (its ``auto``
    sizes would make the devices of a node a tensor-parallel group instead). Checkpoints are one full-state file
    written by rank 0 unless ``save_distributed_checkpoint``."""

    def __init__(self, save_distributed_checkpoint: bool = False, **kwargs):
        super().__init__(save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size, self._tensor_parallel_size = self.world_size, 1
        super().setup_environment()

    def lightning_module_state_dict(self) -> dict:
        """The full state for rank 0's checkpoint file, without frozen weights the module rebuilds itself (a LoRA
        student's base: ``_frozen_keys``), which are never gathered (14 B of fp32 would be 56 GB on one rank)."""
        module = self.lightning_module
        frozen = module._frozen_keys() if hasattr(module, "_frozen_keys") else set()
        if not frozen or self._save_distributed_checkpoint:
            return super().lightning_module_state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        trained = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        state = get_model_state_dict(module.student, options=trained)
        state = {f"student.{k}": v for k, v in state.items()}
        for name, child in module.named_children():
            if name != "student":  # the EMA target's frozen shadows are state, not base: gathered in full
                state.update({f"{name}.{k}": v for k, v in get_model_state_dict(child, options=full).items()})
        return state

    def load_checkpoint(self, checkpoint_path, weights_only=None) -> dict:
        """Check the file's weight names against what the module must restore, then load (FSDP's loader is
        non-strict for a LoRA student, whose file holds no base: without this a missing weight would pass)."""
        module = self.lightning_module
        if hasattr(module, "check_checkpoint_keys") and getattr(module, "lora", False):
            names = torch.load(checkpoint_path, map_location="cpu", mmap=True, weights_only=True)["state_dict"]
            module.check_checkpoint_keys(set(names))
        return super().load_checkpoint(checkpoint_path, weights_only=weights_only)


# children of a diffusers backbone that hold its repeated blocks (UNets; video transformers)
BLOCK_LISTS = ("down_blocks", "up_blocks", "blocks", "transformer_blocks", "face_adapter")


def backbone_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's repeated blocks, each an FSDP unit (one all-gather per block in forward and backward)."""
    blocks: list[nn.Module] = []
    for name in BLOCK_LISTS:
        blocks.extend(getattr(backbone, name, None) or [])
    if getattr(backbone, "mid_block", None) is not None:
        blocks.append(backbone.mid_block)
    return blocks


def _shard(module: nn.Module, mesh, mp_policy) -> None:
    from torch.distributed.fsdp import fully_shard

    # every unit reshards after its forward (the root too): between forward passes each weight is its sharded
    # DTensor, which the EMA target swaps values into
    fully_shard(module, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=True)
    # a trainable weight without a gradient on one rank (unused there) still takes part in the reduce-scatter, so
    # every rank's collective has the same size
    module.set_reduce_scatter_unused_params(True)


def shard_animator(animator: nn.Module, mesh, mp_policy) -> None:
    """``fully_shard`` each backbone block, each output stage, then the animator as the root unit: whatever calls
    it first (the LoRA teacher view, or the student) initialises the tree, and the output stages that the
    auxiliary head's output passes through afterwards gather their own weights."""
    for block in backbone_blocks(animator.backbone):
        _shard(block, mesh, mp_policy)
    for stage in (getattr(animator, "input_skip", None), getattr(animator, "pixel_refiner", None)):
        if stage is not None:
            _shard(stage, mesh, mp_policy)
    _shard(animator, mesh, mp_policy)


def shard_student(student: nn.Module, mesh, mp_policy) -> None:
    """The student's animator as above, and its auxiliary head as a root unit of its own (the student wrapper has
    no weights of its own; were it the root, a teacher-view forward through the animator would come first)."""
    shard_animator(student.animator, mesh, mp_policy)
    if student.aux_head is not None:
        _shard(student.aux_head, mesh, mp_policy)


def mixed_precision(precision: str):
    """FSDP2's policy for a Lightning precision string: bf16 compute with fp32 reduction under ``bf16-*``."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if str(precision).startswith("bf16"):
        # inputs keep their dtype: a flow network's timestep (sigma x 1000, float32) must not be rounded to bf16
        # (997.3 -> 996); the compute dtype inside comes from the weights and Lightning's autocast
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)
    return MixedPrecisionPolicy()


def shard_distillation(module, mesh, precision: str) -> None:
    """Shard a :class:`dancelcm.lit.distill.DistillModule`'s networks as the module docstring says."""
    from dancelcm.cli import ConfigError
    from dancelcm.models.ema import EMA, ParameterEMA

    if str(precision).startswith("bf16") and module.cfg.teacher_dtype == "float32":
        raise ConfigError(
            "method.teacher_dtype=float32: under trainer=fsdp with a bf16 precision the sharded networks compute in "
            "bf16 (teacher and target included); use method.teacher_dtype=auto, or trainer.precision=32-true"
        )
    policy = mixed_precision(precision)
    student = module.student
    shard_student(student, mesh, policy)
    target = module.target
    if isinstance(target, ParameterEMA):
        _shard(target, mesh, policy)  # the shadows, sharded as the weights they follow
    elif isinstance(target, EMA):
        shard_student(target.shadow, mesh, policy)
    if not module.lora:  # the full student's separate frozen teacher
        shard_animator(module.teacher, mesh, policy)
