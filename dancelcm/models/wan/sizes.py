"""Sizes of Wan2.2-Animate-14B for planning: counted on the meta device (no memory allocated, no weights needed).

``python -m dancelcm.models.wan.sizes [rank=64] [frames=77] [height=720] [width=1280] [gpus=8]`` prints the parameter
counts (transformer, one block, the auxiliary head, LoRA adapters) and the per-GPU memory plan of the LoRA
distillation under FSDP (``conf/experiment/wan_animate_k4.yaml``). Activations are an *estimate* (what activation
checkpointing keeps: each block's bf16 input); ``python -m dancelcm.tools.wan_step`` measures a real step on a GPU.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2")


def meta_transformer(config: dict | None = None):
    """``WanAnimateTransformer3DModel`` of ``config`` (None: the class defaults = the 14B model's) on the meta
    device."""
    from diffusers import WanAnimateTransformer3DModel

    with torch.device("meta"):
        return WanAnimateTransformer3DModel(**(config or {}))


def lora_parameters(model: nn.Module, rank: int, targets=DEFAULT_TARGETS) -> int:
    """Parameters LoRA adds at ``rank`` to the linears whose names end in ``targets``: ``rank * (in + out)`` each."""
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            total += rank * (m.in_features + m.out_features)
    return total


def plan(rank: int = 64, frames: int = 77, height: int = 720, width: int = 1280, gpus: int = 8) -> dict:
    """Parameter counts and a per-GPU memory plan (GB = 1e9 bytes) of the LoRA distillation under FSDP, bf16."""
    model = meta_transformer()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    params, block = count(model), count(model.blocks[-1])
    head = block + count(model.proj_out) + model.scale_shift_table.numel()
    lora = lora_parameters(model, rank)
    trainable = lora + head
    tokens = ((frames - 1) // 4 + 2) * (height // 16) * (width // 16)  # 1 + T latent frames, 2x2 patches
    dim = model.config.num_attention_heads * model.config.attention_head_dim
    gb = 1e9
    memory = {
        "base weights, bf16, sharded": params * 2 / gpus / gb,
        "trainable (adapters + aux head) fp32 weights, grads, AdamW m and v, EMA, sharded": trainable * 20 / gpus / gb,
        "checkpointed activations (one bf16 block input per block, batch 1)": len(model.blocks) * tokens * dim * 2 / gb,
        "one block recomputed in backward (inputs, attention out, FFN hidden; estimate)": tokens
        * (4 * dim + model.config.ffn_dim)
        * 2
        / gb,
    }
    return {
        "parameters": params,
        "block": block,
        "aux_head": head,
        "lora": lora,
        "tokens": tokens,
        "memory_gb_per_gpu": memory,
        "total_gb_per_gpu": sum(memory.values()),
    }


def main(argv: list[str] | None = None) -> None:
    args = {k: int(v) for k, v in (a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))}
    p = plan(**args)
    print(
        f"Wan2.2-Animate-14B transformer: {p['parameters'] / 1e9:.2f} B parameters ({p['block'] / 1e6:.0f} M a block)"
    )
    print(f"auxiliary head (last block + output head): {p['aux_head'] / 1e6:.0f} M; LoRA: {p['lora'] / 1e6:.1f} M")
    print(f"tokens per clip: {p['tokens']:,}")
    for what, value in p["memory_gb_per_gpu"].items():
        print(f"  {value:7.2f} GB  {what}")
    print(f"  {p['total_gb_per_gpu']:7.2f} GB  per GPU in all (an estimate; tools/wan_step measures)")


if __name__ == "__main__":
    main()
