"""Wan2.2-Animate's transformer as a DanceLCM animator, and its auxiliary head.

:class:`WanAnimator` is the project's network interface (the one :class:`dancelcm.models.animator.Animator` has:
``condition_names``, ``conditions(batch)``, ``forward(x_t, t, cond) -> prediction``, ``without_conditions``,
``save_pretrained`` / ``from_pretrained``) around diffusers' ``WanAnimateTransformer3DModel``, so the
distillation, LoRA, FSDP, sampling and evaluation code run on it unchanged. It reads the precomputed inputs of a
batch (:mod:`dancelcm.data.precomputed`) and calls the transformer exactly as ``WanAnimatePipeline`` does in its
denoising loop: the noisy latents concatenated with the reference latents on the channel axis, the timestep
(``sigma x 1000``), the umT5 and CLIP features, the pose latents and the face video. The prediction is the flow
velocity (``eps - x0``).

Conditions that CFG's unconditional half (or condition dropout) may drop, per sample, as the pipeline drops them:
``text`` (the negative prompt's features instead) and ``face`` (an all ``-1`` face video).

:class:`WanAuxHead` is DanceLCM's auxiliary head on this model: a trainable copy of the last transformer block and
of the output head (the adaptive output norm's table and ``proj_out``), reading the input of the last block. At
initialisation it equals the main prediction exactly.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from dancelcm.cli import MissingPathError

CONFIG_NAME = "animator_config.json"
FACE_WEIGHTS = "face_path.safetensors"
FAMILY = "wan_animate"
BATCH_KEYS = {
    "reference": ("reference_latents", "image_embeds"),
    "pose": ("pose_latents",),
    "face": ("face_pixel_values",),
    "text": ("prompt_embeds", "negative_prompt_embeds"),
}
DROPPABLE = ("face", "text")


class WanAnimator(nn.Module):
    family = FAMILY

    def __init__(self, transformer: nn.Module, gradient_checkpointing: bool = False, face: dict | None = None):
        super().__init__()
        self.backbone = transformer  # the name the LoRA and FSDP code look for
        self.latent_channels = int(transformer.config.out_channels)
        self.factor = 8
        self.config = {"family": FAMILY, "gradient_checkpointing": gradient_checkpointing, "face": None}
        self.face_path = None
        self._face_off = False
        if gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        if face is not None:
            self.add_face_path(face)

    def add_face_path(self, face: dict | None = None) -> None:
        """The paper's extra face path (:mod:`dancelcm.models.wan.face`), zero-initialised: the output is unchanged
        until it trains. ``face``: its sizes (default: from the transformer's configuration)."""
        from dancelcm.models.wan.face import WanFacePath

        c = self.backbone.config
        every, n = c.inject_face_latents_blocks, c.num_layers
        # after the blocks Wan's own face adapter follows, but the last one (the auxiliary head copies from there)
        default = {
            "latent_channels": self.latent_channels,
            "dim": c.num_attention_heads * c.attention_head_dim,
            "heads": c.num_attention_heads,
            "blocks": [i for i in range(0, n - 1, every)] or [0],
        }
        face = {**default, **(face or {})}
        self.face_path = WanFacePath(**face)
        self.face_path.install(self.backbone)
        self.config["face"] = face

    @property
    def condition_names(self) -> list[str]:
        from dancelcm.models.wan.face import CONDITION

        return list(BATCH_KEYS) + ([CONDITION] if self.face_path is not None else [])

    def conditions(self, batch: dict, autoencoder=None) -> dict:
        """The condition dict of a batch of precomputed clips (``autoencoder`` unused: the encoders ran before)."""
        missing = sorted({k for keys in BATCH_KEYS.values() for k in keys if k not in batch})
        if missing:
            raise KeyError(
                f"a Wan2.2-Animate batch needs the precomputed keys {missing}: train on clips made by "
                "`python -m dancelcm.precompute` (data=precomputed)"
            )
        cond = {k: batch[k] for keys in BATCH_KEYS.values() for k in keys}
        if self.face_path is not None:
            if "face_latents" not in batch:
                raise KeyError(
                    "the student's face path reads batch['face_latents'] (the reference face's VAE latents): "
                    "precompute the clips again with this version (python -m dancelcm.precompute ... overwrite=true)"
                )
            cond["face_latents"] = batch["face_latents"]
        cond["drop"] = {}
        return cond

    @contextlib.contextmanager
    def without_conditions(self, names: list[str]) -> Iterator[None]:
        """Run without the student's extra face path (the LoRA student's teacher view); the pipeline's own conditions
        cannot be switched off. Restored afterwards, also on error."""
        from dancelcm.models.wan.face import CONDITION

        names = list(names)
        bad = [n for n in names if n != CONDITION or self.face_path is None]
        if bad:
            raise ValueError(f"{bad}: only the student's extra face path can be switched off ({self.condition_names})")
        self._face_off = bool(names)
        try:
            yield
        finally:
            self._face_off = False

    def inputs(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> dict:
        """The transformer's keyword arguments, built as ``WanAnimatePipeline``'s denoising loop builds them."""
        b = x_t.shape[0]
        dtype = self.backbone.dtype if x_t.dtype == torch.float32 else x_t.dtype
        drop = cond.get("drop", {})
        from dancelcm.models.wan.face import CONDITION

        unknown = [n for n, d in drop.items() if n not in (*DROPPABLE, CONDITION) and d is not None and bool(d.any())]
        if unknown:  # dropping them would silently change nothing (CFG without effect)
            raise ValueError(
                f"{unknown}: Wan2.2-Animate drops only {list(DROPPABLE)} (its pipeline's unconditional half: the "
                f"negative prompt and an all -1 face video){' and the extra face path' if self.face_path else ''}; "
                "set method.uncond / uncond to those"
            )
        face = cond["face_pixel_values"]
        if drop.get("face") is not None and bool(drop["face"].any()):  # the pipeline's unconditional face: all -1
            face = torch.where(drop["face"].view(-1, 1, 1, 1, 1).to(face.device), torch.full_like(face, -1.0), face)
        text = cond["prompt_embeds"]
        if drop.get("text") is not None and bool(drop["text"].any()):
            text = torch.where(drop["text"].view(-1, 1, 1).to(text.device), cond["negative_prompt_embeds"], text)
        t = t.expand(b) if t.ndim == 1 and t.shape[0] == 1 else t.reshape(b)
        return dict(
            hidden_states=torch.cat([x_t, cond["reference_latents"].to(x_t.dtype)], dim=1).to(dtype),
            timestep=t,
            encoder_hidden_states=text.to(dtype),
            encoder_hidden_states_image=cond["image_embeds"].to(dtype),
            pose_hidden_states=cond["pose_latents"].to(dtype),
            face_pixel_values=face.to(dtype),
            return_dict=False,
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        path = self.face_path
        if path is not None:
            from dancelcm.models.wan.face import CONDITION

            # kept until the next forward: activation checkpointing re-runs the blocks' hooks in the backward pass
            path.enabled = not self._face_off
            path.tokens = (
                path.encode(cond["face_latents"], cond.get("drop", {}).get(CONDITION)) if path.enabled else None
            )
        return self.backbone(**self.inputs(x_t, t, cond))[0].to(x_t.dtype)

    def output_stages(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """Nothing follows the transformer's output head."""
        return out

    # -- persistence -------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """``<dir>/transformer/`` (diffusers format, for ``WanAnimatePipeline``) + ``animator_config.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(d / "transformer", safe_serialization=True)
        if self.face_path is not None:
            from safetensors.torch import save_file

            state = {k: v.contiguous() for k, v in self.face_path.state_dict().items()}
            save_file(state, str(d / FACE_WEIGHTS))
        (d / CONFIG_NAME).write_text(json.dumps(self.config, indent=2))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, torch_dtype: torch.dtype | None = None, **overrides) -> WanAnimator:
        from diffusers import WanAnimateTransformer3DModel

        d = Path(directory)
        if not (d / "transformer" / "config.json").is_file():
            raise MissingPathError(f"{d}: no transformer/ folder of a WanAnimateTransformer3DModel")
        config = json.loads((d / CONFIG_NAME).read_text()) if (d / CONFIG_NAME).is_file() else {}
        config = {k: v for k, v in {**config, **overrides}.items() if k != "family"}
        kwargs = {"local_files_only": True} | ({"torch_dtype": torch_dtype} if torch_dtype is not None else {})
        transformer = WanAnimateTransformer3DModel.from_pretrained(d, subfolder="transformer", **kwargs)
        animator = cls(transformer, **config)
        if animator.face_path is not None and (d / FACE_WEIGHTS).is_file():
            from safetensors.torch import load_file

            animator.face_path.load_state_dict(load_file(str(d / FACE_WEIGHTS)))
        return animator


class WanAuxHead(nn.Module):
    """A trainable copy of the transformer's last block and output head, reading the input of the last block
    (captured by hooks on the student's transformer); its output is laid out like the transformer's."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        n = len(transformer.blocks)
        self.block = copy.deepcopy(transformer.blocks[-1])
        every = transformer.config.inject_face_latents_blocks
        # Wan's face adapter follows blocks 0, every, 2 every, ...: when it follows the last block too, it is part of
        # what the head copies (not so for the 14B model's 40 blocks with every = 5, nor the tiny test model)
        self.face_adapter = copy.deepcopy(transformer.face_adapter[(n - 1) // every]) if (n - 1) % every == 0 else None
        self.norm_out = copy.deepcopy(transformer.norm_out)
        self.proj_out = copy.deepcopy(transformer.proj_out)
        self.scale_shift_table = nn.Parameter(transformer.scale_shift_table.detach().clone())
        self.patch_size = tuple(transformer.config.patch_size)

    def forward(self, block_args: tuple, temb: torch.Tensor, motion_vec, shape: tuple[int, ...]) -> torch.Tensor:
        hidden = self.block(*block_args)
        if self.face_adapter is not None:
            hidden = self.face_adapter(hidden, motion_vec) + hidden
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        dtype = hidden.dtype
        hidden = (self.norm_out(hidden.float()) * (1 + scale) + shift).to(dtype)
        hidden = self.proj_out(hidden)
        b, _, f, h, w = shape
        p_t, p_h, p_w = self.patch_size
        hidden = hidden.reshape(b, f // p_t, h // p_h, w // p_w, p_t, p_h, p_w, -1)
        return hidden.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)


class WanAuxTap:
    """Forward hooks on a transformer that keep what the auxiliary head reads: the last block's inputs, the time
    embedding of the output norm and the face adapter's motion features."""

    def __init__(self, transformer: nn.Module):
        self.block_args = self.temb = self.motion_vec = None
        self.active = False  # set around the student's forward with the auxiliary head: nothing else is kept
        transformer.blocks[-1].register_forward_pre_hook(self._block)
        transformer.condition_embedder.register_forward_hook(self._temb)
        transformer.face_encoder.register_forward_hook(self._motion)

    def _block(self, module, args):
        if self.active:
            self.block_args = args

    def _temb(self, module, args, output):
        if self.active:
            self.temb = output[0]

    def _motion(self, module, args, output):
        if not self.active:
            return
        self.motion_vec = torch.cat([torch.zeros_like(output[:, :1]), output], dim=1)  # the forward's zero pad

    def clear(self) -> None:
        self.block_args = self.temb = self.motion_vec = None


__all__ = ["FAMILY", "WanAnimator", "WanAuxHead", "WanAuxTap"]
