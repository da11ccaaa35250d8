"""The pose-guided video animator: a diffusers video UNet plus a list of conditioning embedders.

``Animator(x_t, t, cond) -> raw output`` with latents (B, C, F, h, w). The input of the backbone is
``[x_t | concat features of each embedder]`` on channels; the cross-attention context is the
concatenation of every embedder's tokens. The same code builds the tiny embedded-default network and
a full-size one (``backbone.pretrained=/local/unet`` loads diffusers weights and widens ``conv_in``
with zero-initialised channels for the extra conditions, so the pretrained behaviour is kept).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dancelcm.cli import MissingPathError
from dancelcm.models.conditioning import PoseGuider, ReferenceEmbedder
from dancelcm.models.face import FaceEmbedder, face_processors, install_decoupled_cross_attention
from dancelcm.models.output_stages import InputSkip, PixelRefiner

EMBEDDERS = {e.name: e for e in (PoseGuider, ReferenceEmbedder, FaceEmbedder)}  # condition name -> embedder


def batch_conditions(batch: dict, autoencoder, names: list[str]) -> dict:
    """The condition dict of the named conditions, from a batch of the datamodule (each embedder reads its own
    batch keys; the reference frame and the face crop go through ``autoencoder``)."""
    cond: dict = {"drop": {}}
    for name in names:
        embedder = EMBEDDERS[name]
        missing = [k for k in embedder.batch_keys if k not in batch]
        if missing:
            raise KeyError(f"the {name} condition reads batch keys {missing}, which this batch does not have")
        cond.update(embedder.read(batch, autoencoder))
    return cond


CONFIG_NAME = "animator_config.json"
BACKBONE_DIR = "unet"
CONDITIONERS_NAME = "conditioners.safetensors"
BACKBONES = ("unet3d", "unet_motion")


def _build_backbone(
    kind: str,
    in_channels: int,
    out_channels: int,
    cross_attention_dim: int,
    pretrained: str | None,
    config: dict,
    motion_adapter: str | None = None,
) -> nn.Module:
    """``unet3d``: diffusers ``UNet3DConditionModel`` (the ModelScope / VGen text-to-video layout).
    ``unet_motion``: AnimateDiff's ``UNetMotionModel``, from a local SD ``UNet2DConditionModel`` folder
    (``pretrained``) plus a local ``MotionAdapter`` folder (``motion_adapter``), or from scratch."""
    if kind not in BACKBONES:
        raise ValueError(f"model.animator.backbone.kind={kind!r}: choose one of {BACKBONES}")
    folders = (("pretrained", pretrained), ("motion_adapter", motion_adapter if pretrained else None))
    for option, folder in folders:
        if folder and not (Path(folder) / "config.json").is_file():
            raise MissingPathError(
                f"model.animator.backbone.{option}={folder}: no diffusers model folder here (config.json missing)"
            )
    if kind == "unet3d":
        from diffusers import UNet3DConditionModel

        if pretrained:
            unet = UNet3DConditionModel.from_pretrained(pretrained, local_files_only=True)
        else:
            return UNet3DConditionModel(
                in_channels=in_channels, out_channels=out_channels, cross_attention_dim=cross_attention_dim, **config
            )
    else:
        from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

        if not pretrained:
            return UNetMotionModel(
                in_channels=in_channels, out_channels=out_channels, cross_attention_dim=cross_attention_dim, **config
            )
        if not motion_adapter:
            raise ValueError(
                "model.animator.backbone.kind=unet_motion with a pretrained SD UNet needs "
                "model.animator.backbone.motion_adapter=DIR (a local diffusers MotionAdapter folder)"
            )
        unet2d = UNet2DConditionModel.from_pretrained(pretrained, local_files_only=True)
        adapter = MotionAdapter.from_pretrained(motion_adapter, local_files_only=True)
        unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    if unet.config.cross_attention_dim != cross_attention_dim:
        raise ValueError(
            f"{pretrained}: cross_attention_dim {unet.config.cross_attention_dim} != "
            f"model.animator.cross_attention_dim {cross_attention_dim}; "
            f"set model.animator.cross_attention_dim={unet.config.cross_attention_dim}"
        )
    return _widen_conv_in(unet, in_channels)


def _widen_conv_in(unet: nn.Module, in_channels: int) -> nn.Module:
    """Give a pretrained UNet extra zero-initialised input channels (its output is unchanged at init)."""
    old = unet.conv_in
    if old.in_channels == in_channels:
        return unet
    if old.in_channels > in_channels:
        raise ValueError(f"pretrained conv_in takes {old.in_channels} channels, the animator gives {in_channels}")
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, padding=old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


class Animator(nn.Module):
    def __init__(
        self,
        latent_channels: int,
        latent_size: tuple[int, int],
        factor: int,
        cross_attention_dim: int = 128,
        backbone: dict[str, Any] | None = None,
        pose: dict[str, Any] | None = None,
        reference: dict[str, Any] | None = None,
        face: dict[str, Any] | None = None,
        attention: str = "sdpa",
        gradient_checkpointing: bool = False,
        dropout: float = 0.0,
        input_skip: dict[str, Any] | None = None,
        pixel_refiner: dict[str, Any] | None = None,
    ):
        super().__init__()
        # Keep the construction arguments (primitives only) for save_pretrained / checkpoints.
        self.config = dict(
            latent_channels=latent_channels,
            latent_size=list(latent_size),
            factor=factor,
            cross_attention_dim=cross_attention_dim,
            backbone=dict(backbone or {}),
            pose=pose,
            reference=reference,
            face=face,
            attention=attention,
            gradient_checkpointing=gradient_checkpointing,
            dropout=dropout,
            input_skip=input_skip,
            pixel_refiner=pixel_refiner,
        )
        self.latent_channels = latent_channels
        self._switched_off: frozenset[str] = frozenset()  # see without_conditions
        embedders: dict[str, nn.Module] = {}
        if pose is not None:
            embedders["pose"] = PoseGuider(factor, **pose)
        if reference is not None:
            embedders["reference"] = ReferenceEmbedder(
                latent_channels, tuple(latent_size), token_dim=cross_attention_dim, **reference
            )
        if face is not None:  # last: its tokens must close the context (decoupled cross-attention reads them)
            embedders["face"] = FaceEmbedder(latent_channels, token_dim=cross_attention_dim, **face)
        self.embedders = nn.ModuleDict(embedders)
        in_channels = latent_channels + sum(e.concat_channels for e in self.embedders.values())
        bb = dict(backbone or {})
        kind, pretrained, adapter = bb.pop("kind", "unet3d"), bb.pop("pretrained", None), bb.pop("motion_adapter", None)
        self.backbone_kind = kind
        self.backbone = _build_backbone(
            kind, in_channels, latent_channels, cross_attention_dim, pretrained, bb, adapter
        )
        self.null_context = nn.Parameter(torch.zeros(1, 1, cross_attention_dim))
        if any(getattr(e, "token_dim", None) for e in self.embedders.values()):
            # only read when no embedder gives tokens: frozen here, else DDP reports an unused parameter
            self.null_context.requires_grad_(False)
        set_dropout(self.backbone, dropout)
        set_attention(self.backbone, attention)
        if face is not None:
            # The processors are submodules of the attention layers: they train and save with the backbone.
            install_decoupled_cross_attention(self.backbone, cross_attention_dim, embedders["face"].num_tokens)
        if gradient_checkpointing:
            enable_gradient_checkpointing(self.backbone)
        self.input_skip = None
        if input_skip is not None:
            self.input_skip = InputSkip(latent_channels, **{"factor": factor, **input_skip})
        self.pixel_refiner = None
        if pixel_refiner is not None:
            self.pixel_refiner = PixelRefiner(latent_channels, factor, **pixel_refiner)
            missing = [c for c in self.pixel_refiner.conditions if c not in self.embedders]
            if missing:
                raise ValueError(
                    f"pixel_refiner.conditions {missing} are not conditions of this animator "
                    f"({list(self.embedders)}); drop them from model.animator.pixel_refiner.conditions"
                )

    @property
    def condition_names(self) -> list[str]:
        return list(self.embedders.keys())

    def conditions(self, batch: dict, autoencoder) -> dict:
        """This network's condition dict from a batch (:func:`batch_conditions`)."""
        return batch_conditions(batch, autoencoder, self.condition_names)

    @contextlib.contextmanager
    def without_conditions(self, names: list[str]) -> Iterator[None]:
        """Run as the network without the named conditions: the LoRA student's teacher view (the teacher never had
        the student's face path). Only the face path can be switched off: its decoupled cross-attention is skipped
        (scale 0, diffusers' own switch) and its token slots, which that attention splits off the context, hold the
        null tokens, so the other cross-attention sees exactly the teacher's context and the output is the
        teacher's. Restored afterwards, also on error."""
        names = list(names)
        if not names:
            yield
            return
        bad = [n for n in names if n != FaceEmbedder.name or n not in self.embedders]
        if bad:
            names_ = self.condition_names
            raise ValueError(f"only the face path can be switched off; {bad} cannot (conditions: {names_})")
        procs = face_processors(self.backbone)
        scales = [list(p.scale) for p in procs]
        for p in procs:
            p.scale = [0.0] * len(p.scale)
        self._switched_off = frozenset(names)
        try:
            yield
        finally:
            self._switched_off = frozenset()
            for p, scale in zip(procs, scales):
                p.scale = scale

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        b, _, f = x_t.shape[:3]
        concat, tokens = [x_t], []
        for name, emb in self.embedders.items():
            if name in self._switched_off:  # the face path, off: placeholder tokens its skipped attention splits off
                tokens.append(emb.null_tokens.expand(b, -1, -1))
                continue
            out = emb(cond, f)
            if out.concat is not None:
                concat.append(out.concat.to(x_t.dtype))
            if out.tokens is not None:
                tokens.append(out.tokens)
        context = torch.cat(tokens, dim=1) if tokens else self.null_context.expand(b, -1, -1)
        if self.backbone_kind == "unet_motion":  # its spatial blocks see frames as a batch of images
            context = context.repeat_interleave(f, dim=0)
        t = t.expand(b) if t.ndim == 1 and t.shape[0] == 1 else t
        out = self.backbone(torch.cat(concat, dim=1), t, encoder_hidden_states=context.to(x_t.dtype)).sample
        return self.output_stages(out, x_t, t, cond)

    def output_stages(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """Every stage after the backbone's output block (the synthetic teacher's input skip and pixel
        refiner; identity for a plain backbone). A second output head (the student's auxiliary head) must
        pass through these too, or its prediction is not the network's."""
        t = t.expand(x_t.shape[0]) if t.ndim == 1 and t.shape[0] == 1 else t
        if self.input_skip is not None:
            out = out + self.input_skip(x_t, t)
        if self.pixel_refiner is not None:
            out = self.pixel_refiner(out, x_t, t, cond)
        return out

    # -- persistence ----------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the animator in diffusers format plus its conditioners (all fp32 safetensors)::

            DIR/animator_config.json                 construction arguments (the whole architecture)
            DIR/unet/config.json                     the backbone, loadable on its own with diffusers:
            DIR/unet/diffusion_pytorch_model.safetensors   UNet3DConditionModel.from_pretrained(DIR/unet)
            DIR/conditioners.safetensors             pose guider, reference / face embedders, null context

        A student's face injection (decoupled cross-attention) lives in the backbone's attention layers:
        diffusers alone drops those weights (with a warning); ``Animator.from_pretrained`` keeps them."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = dict(self.config)
        cfg["backbone"] = {**cfg["backbone"], "pretrained": None, "motion_adapter": None, **self._backbone_arch()}
        (d / CONFIG_NAME).write_text(json.dumps(cfg, indent=1))
        self.backbone.save_pretrained(str(d / BACKBONE_DIR), safe_serialization=True)
        rest = {
            k: v.detach().float().contiguous() for k, v in self.state_dict().items() if not k.startswith("backbone.")
        }
        save_file(rest, str(d / CONDITIONERS_NAME))
        return d

    def _backbone_arch(self) -> dict:
        """The backbone's full architecture (so a loaded pretrained backbone is rebuilt without its folders)."""
        skip = ("in_channels", "out_channels", "cross_attention_dim")
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in self.backbone.config.items()
            if not k.startswith("_") and k not in skip
        }

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides) -> Animator:
        """Load a folder written by :meth:`save_pretrained`."""
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / CONFIG_NAME).is_file():
            raise MissingPathError(f"{d}: no {CONFIG_NAME}; is this an animator folder written by save_pretrained?")
        cfg = json.loads((d / CONFIG_NAME).read_text())
        cfg.update(overrides)
        model = cls(**cfg)
        unet_weights = d / BACKBONE_DIR / "diffusion_pytorch_model.safetensors"
        if not unet_weights.is_file():
            raise MissingPathError(f"{d}: no weights ({BACKBONE_DIR}/diffusion_pytorch_model.safetensors)")
        state = {f"backbone.{k}": v for k, v in load_file(str(unet_weights)).items()}
        state.update(load_file(str(d / CONDITIONERS_NAME)))
        source = f"{unet_weights} + {d / CONDITIONERS_NAME}"
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{source}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        return model


def set_dropout(module: nn.Module, p: float) -> None:
    """diffusers' UNet3D hard-codes dropout 0.1 in its temporal convs; make it a setting."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = p


def set_attention(backbone: nn.Module, attention: str) -> None:
    if attention == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        backbone.set_attn_processor(AttnProcessor2_0())
    elif attention == "xformers":
        try:
            import xformers  # noqa: F401
        except ImportError as e:
            raise ImportError("model.attention=xformers needs the gpu extra: pip install -e '.[gpu]'") from e
        backbone.enable_xformers_memory_efficient_attention()
    else:
        raise ValueError(f"model.attention={attention!r}: choose 'sdpa' or 'xformers'")


def enable_gradient_checkpointing(backbone: nn.Module) -> int:
    """Recompute the UNet's resnet and transformer blocks in the backward pass.

    diffusers' ``UNet3DConditionModel`` does not support ``enable_gradient_checkpointing`` (0.42), so
    each block's ``forward`` is wrapped with non-reentrant ``torch.utils.checkpoint`` here. Returns the
    number of wrapped blocks.
    """
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D, TemporalConvLayer

    if getattr(backbone, "_supports_gradient_checkpointing", False):
        backbone.enable_gradient_checkpointing()
        return -1
    count = 0
    for m in backbone.modules():
        if isinstance(m, ResnetBlock2D | TemporalConvLayer | BasicTransformerBlock):
            inner = m.forward

            def wrapped(*args, _inner=inner, **kwargs):
                if torch.is_grad_enabled():
                    return torch.utils.checkpoint.checkpoint(_inner, *args, use_reentrant=False, **kwargs)
                return _inner(*args, **kwargs)

            m.forward = wrapped
            count += 1
    return count
