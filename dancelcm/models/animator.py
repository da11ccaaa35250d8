"""The pose-guided video animator: a diffusers video UNet plus a list of conditioning embedders.

``Animator(x_t, t, cond) -> raw output`` with latents (B, C, F, h, w). The input of the backbone is
``[x_t | concat features of each embedder]`` on channels; the cross-attention context is the
concatenation of every embedder's tokens. The same code builds the tiny embedded-default network and
a full-size one (``backbone.pretrained=/local/unet`` loads diffusers weights and widens ``conv_in``
with zero-initialised channels for the extra conditions, so the pretrained behaviour is kept).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dancelcm.models.conditioning import FaceEmbedder, PoseGuider, ReferenceEmbedder, dropped

CONFIG_NAME = "animator_config.json"
WEIGHTS_NAME = "animator.safetensors"  # the single-file layout of earlier versions (still loaded)
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
            raise FileNotFoundError(
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


def patch_highpass_kernel(factor: int, sigma: float) -> torch.Tensor:
    """The latent-space conv kernel (C, C, 1, 3, 3) of ``x - gaussian_blur(x, sigma)`` on the frames of the
    exact patch autoencoder (``pixel_unshuffle`` by ``factor``, C = 3 factor^2): built by decoding an
    impulse per latent channel, filtering the pixels and encoding back (the blur reaches the 8 neighbouring
    patches, hence 3x3)."""
    if 3 * sigma >= factor:
        raise ValueError(f"input_skip.blur_sigma={sigma}: the blur must stay within one patch of {factor} px")
    c = 3 * factor * factor
    z = torch.zeros(c, c, 3, 3, dtype=torch.float64)
    z[torch.arange(c), torch.arange(c), 1, 1] = 1.0
    px = nn.functional.pixel_shuffle(z, factor)  # (C_in, 3, 3f, 3f)
    r = int(3 * sigma + 0.5)
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    g = g / g.sum()
    flat = px.reshape(-1, 1, *px.shape[-2:])
    blur = nn.functional.conv2d(flat, g.view(1, 1, 1, -1), padding=(0, r))
    blur = nn.functional.conv2d(blur, g.view(1, 1, -1, 1), padding=(r, 0)).reshape(px.shape)
    out = nn.functional.pixel_unshuffle(px - blur, factor)  # (C_in, C_out, 3, 3): response to each impulse
    # cross-correlation: out[:, :, i, j] = W[:, :, 2 - i, 2 - j] for an impulse at the centre
    return out.permute(1, 0, 2, 3).flip(-1, -2)[:, :, None].float()


def wiener_gain(scheduler: dict, detail_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per training timestep: the gain ``d^2 a_t / (d^2 a_t^2 + s_t^2)`` that recovers a band of std ``d`` from
    ``x_t`` (~1 / a_t while the noise is below the band, 0 at the top), and the noise level ``(s_t, a_t)``."""
    from dancelcm.diffusion import NoiseSchedule

    sched = NoiseSchedule.from_scheduler_config(scheduler, prediction_type="sample")  # only its a_t, s_t
    a, s = sched.coefficients(torch.arange(sched.num_train_timesteps))
    d2 = detail_std**2
    return (d2 * a / (d2 * a**2 + s**2)).float(), torch.stack([s, a], -1).float()


class InputSkip(nn.Module):
    """A linear path from ``x_t`` to the x0 output: ``c(t) * P(x_t)`` next to the UNet.

    For x0 output (``prediction_type: sample``) at low noise the clean latent is almost ``x_t`` itself; a UNet
    whose output passes through GroupNorm + SiLU + conv does not copy a 192-dim patch latent through, so its
    x0 estimate stays smooth even at t = 10 (measured: sharpness 0.24 against 1.06 for ``x_t`` itself). This
    path carries the detail; the UNet learns the rest. ``P`` is a learned 3x3 latent conv that starts as
    ``x - blur(x)`` on the frames (``init=highpass``, for the patch autoencoder: the detail band a smooth UNet
    output lacks) or a learned 1x1 identity (``init=identity``). ``c(t) = d^2 a_t / (d^2 a_t^2 + s_t^2)`` is
    the Wiener (EDM c_skip) gain of a band with per-dimension std ``detail_std`` = d: ~1 / a_t while the noise
    is below the detail, 0 at the top. It is fixed: a gate learned per noise level barely moved at low t
    (few samples land there; it reached 0.2 in 500 steps where the least-squares gain is 0.92), and the
    least-squares gains measured on a trained UNet (0.92, 0.55, 0.32, 0.12 at t = 10, 50, 100, 200) fit
    d^2 = 0.06-0.13. Written here: EDM's c_skip applied to a learned detail filter."""

    def __init__(
        self,
        channels: int,
        scheduler: dict | None = None,
        init: str = "highpass",
        factor: int | None = None,
        blur_sigma: float = 1.0,
        detail_std: float = 0.25,
    ):
        super().__init__()
        if scheduler is None:
            raise ValueError("input_skip needs the model's scheduler config (input_skip.scheduler) for its gain")
        if init == "identity":
            self.proj = nn.Conv3d(channels, channels, 1)
            weight = torch.eye(channels)[:, :, None, None, None]
        elif init == "highpass":
            if factor is None or channels != 3 * factor * factor:
                raise ValueError(
                    f"input_skip.init=highpass needs the patch autoencoder's layout (3 x factor^2 channels); "
                    f"got {channels} channels, factor {factor}. Use input_skip.init=identity"
                )
            self.proj = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))
            weight = patch_highpass_kernel(factor, blur_sigma)
        else:
            raise ValueError(f"input_skip.init={init!r}: choose identity or highpass")
        with torch.no_grad():
            self.proj.weight.copy_(weight)
            self.proj.bias.zero_()
        self.register_buffer("gain", wiener_gain(scheduler, detail_std)[0], persistent=False)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device).long().clamp(0, self.gain.numel() - 1)
        return self.gain[t].reshape(-1, 1, 1, 1, 1).to(x_t.dtype) * self.proj(x_t)


class PixelRefiner(nn.Module):
    """A small per-frame CNN at pixel resolution that corrects the x0 output: ``x0 += R([x0, g(t) x_t], t)``.

    For the exact patch autoencoder only (latent = ``pixel_unshuffle`` of the frames by ``factor``). The UNet
    works on an 8x8 grid of 192-dim patch tokens: about three features per pixel at its widest level, too few
    to tell pixel-level noise from detail (measured on the skip teacher: the x0 estimate at t = 10 was 35.7 dB
    against 35.1 dB for x_t itself, so low-noise steps barely denoise). This head gives every pixel ``width``
    features over a (2 layers + 1) x 2 + 1 pixel receptive field; it sees the current x0 estimate and ``x_t``
    scaled by the input skip's Wiener gain ``g(t)`` (bounded at every t), and its hidden features are
    modulated (FiLM) by the noise level. The last conv starts at zero, so a network gains it without change.
    With ``conditions`` it also sees the reference frame and / or the pose map at full resolution (zeros where a
    condition is dropped, as the embedders do): the UNet gets them at its 8x8 grid only, through a 1x1
    projection (reference) and strided convs (pose), which cannot place a background pixel or a limb edge.
    Written here: a pixel-space output stage in the spirit of the full-resolution levels of pixel UNets."""

    PIXEL_CONDITIONS = ("reference", "pose")

    def __init__(
        self,
        channels: int,
        factor: int,
        scheduler: dict | None = None,
        width: int = 32,
        layers: int = 2,
        detail_std: float = 0.25,
        conditions: list[str] | tuple[str, ...] = (),
    ):
        super().__init__()
        if scheduler is None:
            raise ValueError("pixel_refiner needs the model's scheduler config (pixel_refiner.scheduler)")
        unknown = sorted(set(conditions) - set(self.PIXEL_CONDITIONS))
        if unknown:
            raise ValueError(
                f"pixel_refiner.conditions: {unknown} cannot be given at pixel resolution; choose from "
                f"{list(self.PIXEL_CONDITIONS)}"
            )
        self.conditions = [c for c in self.PIXEL_CONDITIONS if c in conditions]  # a fixed channel order
        if channels != 3 * factor * factor:
            raise ValueError(
                f"pixel_refiner works on the patch autoencoder's layout (3 x factor^2 channels); got {channels} "
                f"channels, factor {factor}. Set model.animator.pixel_refiner=null for a learned VAE"
            )
        if layers < 1:
            raise ValueError(f"pixel_refiner.layers={layers}: need at least 1")
        self.factor = factor
        self.conv_in = nn.Conv2d(6 + 3 * len(self.conditions), width, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(layers))
        self.film = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 2 * width * (layers + 1)))
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        nn.init.zeros_(self.film[-1].weight)
        nn.init.zeros_(self.film[-1].bias)
        gain, level = wiener_gain(scheduler, detail_std)
        self.register_buffer("gain", gain, persistent=False)
        self.register_buffer("level", level, persistent=False)

    def forward(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        b, c, f, h, w = x0.shape
        t = torch.as_tensor(t, device=x0.device).long().clamp(0, self.gain.numel() - 1).expand(b)
        gain = self.gain[t].reshape(-1, 1, 1, 1, 1).to(x0.dtype)

        def frames(z):  # (B, C, F, h, w) -> (B F, 3, h f, w f)
            return nn.functional.pixel_shuffle(z.transpose(1, 2).reshape(b * f, c, h, w), self.factor)

        parts = [frames(x0), frames(gain * x_t)]
        if self.conditions and cond is None:
            raise ValueError(f"pixel_refiner.conditions={self.conditions}: the refiner needs the condition dict")
        for name in self.conditions:
            keep = (~dropped(cond, name, b, x0.device)).to(x0.dtype).repeat_interleave(f)[:, None, None, None]
            if name == "reference":  # its latent, at pixel resolution, the same for every frame
                ref = nn.functional.pixel_shuffle(cond["reference_latent"].to(x0.dtype), self.factor)
                parts.append(ref.repeat_interleave(f, dim=0) * keep)
            else:  # the pose map, (B, F, 3, H, W) in [-1, 1]
                parts.append(cond["pose"].to(x0.dtype).reshape(b * f, *cond["pose"].shape[2:]) * keep)
        x = torch.cat(parts, dim=1)
        mod = self.film(self.level[t].to(x0.dtype)).repeat_interleave(f, dim=0)[:, :, None, None]
        scales, shifts = mod.chunk(2, dim=1)
        convs = [self.conv_in, *self.convs]  # each followed by FiLM + SiLU
        hidden = x
        for conv, scale, shift in zip(convs, scales.chunk(len(convs), 1), shifts.chunk(len(convs), 1)):
            hidden = nn.functional.silu(conv(hidden) * (1 + scale) + shift)
        delta = nn.functional.pixel_unshuffle(self.conv_out(hidden), self.factor)
        return x0 + delta.reshape(b, f, c, h, w).transpose(1, 2)


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

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        b, _, f = x_t.shape[:3]
        concat, tokens = [x_t], []
        for emb in self.embedders.values():
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
        (d / WEIGHTS_NAME).unlink(missing_ok=True)  # the single-file layout of earlier versions
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
        """Load a folder written by :meth:`save_pretrained` (or the earlier single-file layout)."""
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{d}: no {CONFIG_NAME}; is this an animator folder written by save_pretrained?")
        cfg = json.loads((d / CONFIG_NAME).read_text())
        cfg.update(overrides)
        model = cls(**cfg)
        unet_weights = d / BACKBONE_DIR / "diffusion_pytorch_model.safetensors"
        if unet_weights.is_file():
            state = {f"backbone.{k}": v for k, v in load_file(str(unet_weights)).items()}
            state.update(load_file(str(d / CONDITIONERS_NAME)))
            source = f"{unet_weights} + {d / CONDITIONERS_NAME}"
        elif (d / WEIGHTS_NAME).is_file():
            state, source = load_file(str(d / WEIGHTS_NAME)), str(d / WEIGHTS_NAME)
        else:
            raise FileNotFoundError(f"{d}: no weights ({BACKBONE_DIR}/diffusion_pytorch_model.safetensors)")
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


def install_decoupled_cross_attention(backbone: nn.Module, cross_attention_dim: int, num_tokens: int) -> int:
    """Give every cross-attention layer of the backbone a second key/value path for the last
    ``num_tokens`` context tokens (diffusers' IP-Adapter processor: decoupled cross-attention).

    The new value projections start at zero, so the network's output is unchanged until they learn.
    Returns the number of decoupled layers.
    """
    import warnings

    from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0

    # diffusers deprecates passing the image tokens concatenated to the context; it still splits them
    # exactly as documented, and a tuple does not pass through UNet3D's blocks.
    warnings.filterwarnings("ignore", message=".*encoder_hidden_states not a tuple.*")
    warnings.filterwarnings("ignore", message=".*passed a tensor as `encoder_hidden_states`.*")
    processors = {}
    modules = []
    for name, proc in backbone.attn_processors.items():
        module_name = name.rsplit(".processor", 1)[0]
        attn = backbone.get_submodule(module_name)
        if isinstance(attn, Attention) and name.endswith("attn2.processor") and attn.is_cross_attention:
            p = IPAdapterAttnProcessor2_0(
                attn.to_q.out_features, cross_attention_dim, num_tokens=(num_tokens,), scale=1.0
            )
            for lin in p.to_v_ip:
                nn.init.zeros_(lin.weight)
            processors[name] = p
            modules.append(p)
        else:
            processors[name] = proc
    if not modules:
        raise ValueError("face injection: the backbone has no cross-attention layer to decouple")
    backbone.set_attn_processor(processors)
    return len(modules)
