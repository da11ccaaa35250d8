"""Wan2.2-Animate as a bundle: the teacher is the user's local model folder, a student an export beside it.

A **teacher** bundle is the diffusers repository itself (``model_index.json`` naming ``WanAnimatePipeline``):
the transformer is the animator, the scheduler config (UniPC on flow sigmas with a shift) is the flow schedule,
and the VAE decodes samples. Nothing is copied or converted.

A **student** export (``<run>/export``) is a bundle folder like any other student's, whose network is a
``transformer/`` folder in diffusers format (full student) or LoRA adapters in the diffusers format with the
``transformer.`` prefix (LoRA student, :func:`dancelcm.models.bundle.save_lora_bundle`); ``bundle.json`` names the
teacher folder, which provides the VAE and encoders (``autoencoder.pretrained``). Either loads into diffusers'
``WanAnimatePipeline`` (:func:`student_pipeline`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from dancelcm.cli import MissingPathError
from dancelcm.models.wan.inputs import check_model_folder, decode_latents
from dancelcm.models.wan.network import FAMILY, WanAnimator


def is_wan_folder(directory: str | Path) -> bool:
    index = Path(directory) / "model_index.json"
    if not index.is_file():
        return False
    return json.loads(index.read_text()).get("_class_name") == "WanAnimatePipeline"


class WanVideoCodec(nn.Module):
    """The Wan VAE behind the project's autoencoder interface for *decoding* (the encoders ran in ``precompute``):
    standardised latents ``(B, C, 1 + T, h, w)`` -> video ``(B, F, 3, H, W)`` in ``[-1, 1]`` exactly as
    ``WanAnimatePipeline`` decodes a segment (frame 0, the reference slot, dropped). Loaded on first use."""

    factor = 8

    def __init__(self, pretrained: str, subfolder: str = "vae", kind: str = "wan_vae"):
        super().__init__()
        self.pretrained, self.subfolder = str(pretrained), subfolder
        self._vae: list = []  # not a submodule: never saved with a student, never trained
        # where the module has been moved (Lightning moves submodules with _apply, not .to): the VAE goes there
        self.register_buffer("_where", torch.zeros(()), persistent=False)

    @property
    def vae(self):
        if not self._vae:
            from diffusers import AutoencoderKLWan

            folder = Path(self.pretrained) / self.subfolder
            if not (folder / "config.json").is_file():
                raise MissingPathError(f"{folder}: no Wan VAE there (the Wan2.2-Animate folder's vae/)")
            vae = AutoencoderKLWan.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
            self._vae.append(vae.to(self._where.device))
        return self._vae[0]

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.z_dim)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self._vae:  # device moves only: the VAE stays in its own dtype
            self._vae[0].to(self._where.device)
        return self

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            "Wan2.2-Animate latents are precomputed (python -m dancelcm.precompute); training reads batch['latents']"
        )

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        video = decode_latents(self.vae, latents)  # (B, 3, F, H, W)
        return video.permute(0, 2, 1, 3, 4).float().clamp(-1, 1).to(latents.device)


def wan_teacher_meta(directory: Path) -> dict:
    scheduler = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
    return {
        "kind": "teacher",
        "family": FAMILY,
        "scheduler": scheduler,
        "autoencoder": {"kind": "wan_vae", "pretrained": str(directory.resolve()), "subfolder": "vae"},
        "data": {},
        # the pipeline's defaults; its CFG's unconditional half has the negative prompt and an all -1 face video
        "sampling": {"steps": 20, "guidance": 1.0, "uncond": ["face", "text"]},
    }


def load_wan_teacher(directory: str | Path, option: str, torch_dtype=None):
    """``(animator, codec, meta)`` of a local Wan2.2-Animate folder (``models.bundle.load_bundle`` makes the
    Bundle)."""
    d = check_model_folder(directory, option, needs=("model_index.json", "transformer", "vae", "scheduler"))
    meta = wan_teacher_meta(d)
    animator = WanAnimator.from_pretrained(d, torch_dtype=torch_dtype)
    return animator, WanVideoCodec(str(d.resolve())), meta


def load_wan_student(directory: Path, meta: dict, base_animator=None):
    """The animator of a full Wan student export (``transformer/``); a LoRA one goes through the LoRA loader."""
    return WanAnimator.from_pretrained(directory)


def pin_sigmas(scheduler, sigmas_by_steps: dict[str, list[float]]):
    """A stock diffusers flow scheduler whose ``set_timesteps(num_steps)`` (all a pipeline passes) uses the
    student's segment edges for that step count: the student's sigmas are given to diffusers' own ``sigmas=``
    argument; the scheduler class and its stepping are untouched. Other step counts are refused by name."""
    original = scheduler.set_timesteps

    def set_timesteps(num_inference_steps=None, device=None, **kwargs):
        key = str(num_inference_steps)
        if key not in sigmas_by_steps:
            raise ValueError(
                f"num_inference_steps={num_inference_steps}: this student samples in {sorted(sigmas_by_steps)} steps"
            )
        return original(device=device, sigmas=sigmas_by_steps[key])

    scheduler.set_timesteps = set_timesteps
    return scheduler


def animate_pipeline(directory: str | Path, torch_dtype=torch.float32):
    """diffusers' ``WanAnimatePipeline`` for a model folder ``animate`` is given: a Wan2.2-Animate repository (the
    teacher, its own scheduler) or an exported Wan student (:func:`student_pipeline`). Returns ``(pipe, meta)``,
    ``meta`` the folder's bundle metadata."""
    d = Path(directory)
    if is_wan_folder(d):
        from diffusers import WanAnimatePipeline

        d = check_model_folder(d, "model_dir", needs=("model_index.json", "transformer", "vae", "scheduler"))
        pipe = WanAnimatePipeline.from_pretrained(d, local_files_only=True, torch_dtype=torch_dtype)
        return pipe, wan_teacher_meta(d)
    return student_pipeline(d, torch_dtype=torch_dtype), json.loads((d / "bundle.json").read_text())


def student_pipeline(export: str | Path, base: str | Path | None = None, torch_dtype=torch.float32):
    """diffusers' ``WanAnimatePipeline`` running an exported student: the base folder's encoders and VAE, the
    student's transformer (a full export's, or the base's with the LoRA adapters loaded by diffusers'
    ``load_lora_weights``), and a stock ``FlowMatchEulerDiscreteScheduler`` pinned to the student's segment edges
    (:func:`pin_sigmas`). Sample with ``num_inference_steps`` = 1..K and ``guidance_scale=1``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanAnimatePipeline

    d = Path(export)
    meta = json.loads((d / "bundle.json").read_text())
    config = d / "animator_config.json"
    if config.is_file() and json.loads(config.read_text()).get("face"):
        raise ValueError(
            f"{d}: this student has the paper's reference-face path (method.face.enabled), which is the project's own "
            "addition to the transformer; diffusers' WanAnimatePipeline would run it without that path. Sample it "
            "with the project's sampler (dancelcm.sampling.student_sampler) or train with method.face.enabled=false"
        )
    base = Path(base or meta["autoencoder"]["pretrained"])
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(d, subfolder="scheduler", local_files_only=True)
    pin_sigmas(scheduler, meta["sampling"]["sigmas"])
    kwargs = {"scheduler": scheduler, "local_files_only": True, "torch_dtype": torch_dtype}
    if meta.get("format") == "lora":
        pipe = WanAnimatePipeline.from_pretrained(base, **kwargs)
        pipe.load_lora_weights(d, weight_name=meta["lora"]["weights"], adapter_name="dancelcm")
    else:
        from diffusers import WanAnimateTransformer3DModel

        transformer = WanAnimateTransformer3DModel.from_pretrained(
            d, subfolder="transformer", local_files_only=True, torch_dtype=torch_dtype
        )
        pipe = WanAnimatePipeline.from_pretrained(base, transformer=transformer, **kwargs)
    return pipe
