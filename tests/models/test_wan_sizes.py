"""Wan2.2-Animate-14B at full size without its weights: the configuration instantiates on the meta device with the
parameter count of the published model, and the prepared GPU step script runs (at the tiny size, on the CPU)."""

import json

import pytest
import torch

from dancelcm.models.wan.sizes import meta_transformer, plan


def test_the_full_size_transformer_instantiates_on_the_meta_device_with_15_2_billion_parameters():
    model = meta_transformer()
    assert all(p.device.type == "meta" for p in model.parameters())
    n = sum(p.numel() for p in model.parameters())
    assert n == 15_177_050_484  # "14B" counts the 40 blocks (14.06 B); face adapter, motion and face encoders add 1.1 B
    assert sum(p.numel() for p in model.blocks.parameters()) == 14_055_772_160
    assert len(model.blocks) == 40 and len(model.face_adapter) == 8 and model.config.motion_encoder_size == 512


def test_the_memory_plan_adds_up():
    p = plan(rank=64, frames=77, height=480, width=832, gpus=8)
    assert p["parameters"] == 15_177_050_484 and p["tokens"] == 21 * 30 * 52
    assert p["memory_gb_per_gpu"]["base weights, bf16, sharded"] == pytest.approx(15_177_050_484 * 2 / 8 / 1e9)
    # checkpointed activations: one bf16 block input (tokens x 5120) a block, 40 blocks
    assert p["memory_gb_per_gpu"]["checkpointed activations (one bf16 block input per block, batch 1)"] == (
        pytest.approx(40 * 21 * 30 * 52 * 5120 * 2 / 1e9)
    )
    assert p["aux_head"] > p["block"]


def test_the_lora_count_of_the_blocks_by_hand():
    """r (in + out) per adapted linear: per block 8 attention linears 5120 -> 5120 (self and cross) and the
    feed-forward 5120 -> 13824 -> 5120; at rank 64 that is 7,667,712 a block."""
    from dancelcm.models.wan.sizes import lora_parameters

    model = meta_transformer()
    per_block = 64 * (8 * (5120 + 5120) + (5120 + 13824) + (13824 + 5120))
    assert per_block == 7_667_712
    assert lora_parameters(model.blocks, 64) == 40 * per_block


@pytest.mark.slow
def test_the_prepared_gpu_step_script_runs_at_the_tiny_size_on_the_cpu(tmp_path):
    from dancelcm.tools.wan_step import main

    out = tmp_path / "step.json"
    result = main(["device=cpu", "tiny=1", "layers=2", "frames=9", "height=32", "width=32", "rank=4", "steps=2",
                   f"out={out}"])  # fmt: skip
    assert json.loads(out.read_text())["losses"] == result["losses"]
    assert all(torch.isfinite(torch.tensor(v)) for v in result["losses"]) and result["trainable"] > 0
