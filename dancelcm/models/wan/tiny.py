"""A tiny, randomly initialised Wan2.2-Animate repository: the same classes as the real model (diffusers'
``WanAnimateTransformer3DModel`` and ``AutoencoderKLWan``, transformers' umT5 and CLIP vision encoders, the UniPC
flow scheduler), a few layers and small widths, written with ``save_pretrained`` in the layout of the diffusers
repository ``Wan-AI/Wan2.2-Animate-14B-Diffusers`` (``model_index.json`` + one folder a component).

It is what the tests, and a user trying the commands without 60 GB of weights, point ``model.path`` at:

    python -m dancelcm.models.wan.tiny out=checkpoints/tiny_wan_animate

Everything is random: it proves the code path (shapes, layouts, loading, the distillation loop), never quality.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

# The tiny sizes. Frame counts must be 4k + 1 (the VAE's causal 4x temporal compression); heights and widths a
# multiple of 16 (8x VAE, 2x2 patches).
TINY_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=36,  # 2 x 16 latent channels + 4 mask channels
    latent_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=64,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    image_dim=16,
    rope_max_seq_len=64,
    motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16, "32": 16},
    motion_encoder_size=32,
    motion_style_dim=16,
    motion_dim=4,
    motion_encoder_dim=16,
    face_encoder_hidden_dim=16,
    face_encoder_num_heads=2,
    inject_face_latents_blocks=2,  # one face adapter, after block 0
    motion_encoder_batch_size=8,
)
TINY_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
TINY_TEXT = dict(
    vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2, relative_attention_num_buckets=8
)
TINY_CLIP = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)
WORDS = [
    "a",
    "the",
    "person",
    "dancer",
    "dances",
    "dancing",
    "in",
    "on",
    "white",
    "black",
    "red",
    "blue",
    "shirt",
    "dress",
    "studio",
    "room",
    "video",
    "of",
]


def tiny_components(seed: int = 0) -> dict:
    """The components of a tiny ``WanAnimatePipeline`` (random weights, seeded)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanAnimateTransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        PreTrainedTokenizerFast,
        UMT5Config,
        UMT5EncoderModel,
    )

    torch.manual_seed(seed)
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": UMT5EncoderModel(UMT5Config(**TINY_TEXT)).eval(),
        "vae": AutoencoderKLWan(**TINY_VAE).eval(),
        # as Wan2.2-Animate ships it: UniPC on flow sigmas with a shift
        "scheduler": UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0),
        "image_processor": CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True
        ),
        "image_encoder": CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).eval(),
        "transformer": WanAnimateTransformer3DModel(**TINY_TRANSFORMER).eval(),
    }


def save_tiny_wan_animate(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny Wan2.2-Animate repository to ``directory`` (a new or empty folder); returns it."""
    from diffusers import WanAnimatePipeline

    d = Path(directory)
    if d.exists() and any(d.iterdir()):
        raise FileExistsError(f"out={d}: not empty; the tiny repository goes into a new or empty folder")
    WanAnimatePipeline(**tiny_components(seed)).save_pretrained(d)
    return d


def main(argv: list[str] | None = None) -> None:
    args = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))
    unknown = set(args) - {"out", "seed"}
    if unknown or "out" not in args:
        raise SystemExit("usage: python -m dancelcm.models.wan.tiny out=DIR [seed=0]")
    d = save_tiny_wan_animate(args["out"], int(args.get("seed", 0)))
    print(f"tiny Wan2.2-Animate repository (random weights) -> {d}")


if __name__ == "__main__":
    main()
