"""Wan2.2-Animate's inputs, built by ``WanAnimatePipeline``'s own helpers (animation mode, one segment).

For one clip (a reference image, the pose video, the driving face video, a prompt; the clip's video for training)
:class:`WanAnimateEncoders` returns every tensor the transformer reads, exactly as the pipeline's ``__call__``
builds them before its denoising loop (``tests/models/test_wan_inputs.py`` holds each against the tensors the
pipeline hands its transformer):

- ``reference_latents`` ``(4 + C, 1 + T, h, w)``: the reference image's VAE latent with its 4 mask channels (ones),
  followed by the previous-segment conditioning of a first segment (the VAE latent of a black video, mask zeros);
  concatenated with the noisy latents on the channel axis to make the transformer's ``2C + 4`` input channels;
- ``pose_latents`` ``(C, T, h, w)``: the pose video's VAE latent;
- ``face_pixel_values`` ``(3, F, S, S)``: the face video resized to the motion encoder's ``S``, in ``[-1, 1]``;
- ``image_embeds`` ``(L, D)``: CLIP vision features of the reference image (penultimate layer);
- ``prompt_embeds`` / ``negative_prompt_embeds`` ``(max_sequence_length, D_text)``: umT5 features, zero-padded;
- ``latents`` ``(C, 1 + T, h, w)``: the training target ``x0``: the reference latent as frame 0 (the slot the
  pipeline denoises and drops before decoding) and the clip's VAE latents, standardised like every other latent.

``F = 4 T - 3`` frames (``4k + 1``: the VAE's causal 4x time compression), ``h, w`` = height and width / 8. All of
it comes from the local model folder (``local_files_only``): the VAE, the umT5 and CLIP encoders are used here,
in the precompute step, and never during training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from dancelcm.cli import MissingPathError

# the folders of the diffusers repository Wan-AI/Wan2.2-Animate-14B-Diffusers, and what each holds
LAYOUT = {
    "model_index.json": "the pipeline index",
    "transformer": "WanAnimateTransformer3DModel (config.json + safetensors shards)",
    "vae": "AutoencoderKLWan",
    "text_encoder": "UMT5EncoderModel (umT5-XXL)",
    "tokenizer": "the umT5 tokenizer",
    "image_encoder": "CLIPVisionModel (ViT-H/14)",
    "image_processor": "CLIPImageProcessor",
    "scheduler": "UniPCMultistepScheduler (flow sigmas)",
}
ENCODERS = ("vae", "text_encoder", "tokenizer", "image_encoder", "image_processor")


def check_model_folder(path: str | Path, option: str = "model.path", needs=tuple(LAYOUT)) -> Path:
    """The local Wan2.2-Animate folder, or a MissingPathError naming the option, what is missing and the layout."""
    d = Path(path)
    missing = [name for name in needs if not (d / name).exists()]
    if missing:
        layout = "\n".join(f"  {name}{'' if '.' in name else '/'}  {what}" for name, what in LAYOUT.items())
        where = "no such folder" if not d.exists() else f"missing {', '.join(missing)}"
        raise MissingPathError(
            f"{option}={d}: {where}. Point it at a local copy of the diffusers repository "
            f"Wan-AI/Wan2.2-Animate-14B-Diffusers (nothing is downloaded at run time), laid out as\n{layout}\n"
            "For a random tiny one to try the commands: python -m dancelcm.models.wan.tiny out=DIR"
        )
    return d


def to_pil(frames: torch.Tensor) -> list[Image.Image]:
    """``(N, 3, H, W)`` in ``[-1, 1]`` (the datamodule's convention, from uint8 frames) -> N RGB images, exactly the
    uint8 frames they came from."""
    u8 = ((frames.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in u8]


def frames_ok(num_frames: int, temporal: int = 4) -> bool:
    return num_frames % temporal == 1


class WanAnimateEncoders:
    """The VAE, umT5 and CLIP vision encoders of a local Wan2.2-Animate folder, used through a transformer-less
    ``WanAnimatePipeline`` so that every input is built by the pipeline's own helpers."""

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        max_sequence_length: int = 512,
        transformer_dtype: torch.dtype = torch.float32,
        option: str = "model.path",
    ):
        from diffusers import WanAnimatePipeline

        d = check_model_folder(path, option, needs=("model_index.json", "transformer", *ENCODERS))
        transformer_config = json.loads((d / "transformer" / "config.json").read_text())
        self.pipe = WanAnimatePipeline.from_pretrained(d, transformer=None, local_files_only=True).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = torch.device(device)
        self.max_sequence_length = max_sequence_length
        self.transformer_dtype = transformer_dtype  # the pipeline casts the text / image features to it
        self.face_size = int(transformer_config.get("motion_encoder_size", 512))
        self.temporal = self.pipe.vae_scale_factor_temporal
        self.spatial = self.pipe.vae_scale_factor_spatial
        self.latent_channels = int(self.pipe.vae.config.z_dim)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, negative_prompt: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt, negative prompt) umT5 features ``(1, max_sequence_length, D)`` as the pipeline makes them."""
        pos, neg = self.pipe.encode_prompt(
            prompt=prompt,
            negative_prompt=negative_prompt,
            do_classifier_free_guidance=True,
            max_sequence_length=self.max_sequence_length,
            device=self.device,
        )
        return pos.to(self.transformer_dtype), neg.to(self.transformer_dtype)

    @torch.no_grad()
    def encode_clip(
        self,
        reference: Image.Image,
        pose: list[Image.Image],
        face: list[Image.Image],
        height: int,
        width: int,
        video: list[Image.Image] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One clip's transformer inputs (batch dim 1), see the module docstring; ``video`` adds ``latents``."""
        pipe, device = self.pipe, self.device
        n = len(pose)
        if not frames_ok(n, self.temporal) or len(face) != n or (video is not None and len(video) != n):
            raise ValueError(
                f"a Wan2.2-Animate clip has 4k + 1 frames with one pose and one face frame each (got pose {n}, face "
                f"{len(face)}, video {None if video is None else len(video)}): set data.num_frames to e.g. 17, 33, 77"
            )
        if height % (2 * self.spatial) or width % (2 * self.spatial):
            raise ValueError(f"height={height}, width={width}: must be multiples of {2 * self.spatial} (VAE x patch)")
        # 4. the reference image: pixels for the VAE, CLIP features (the pipeline's steps, in its order)
        image_pixels = pipe.vae_image_processor.preprocess(
            reference, height=height, width=width, resize_mode="fill"
        ).to(device, dtype=torch.float32)
        image_embeds = pipe.encode_image(reference, device).to(self.transformer_dtype)
        # 5. pose and face videos (pad_video_frames pads to the segment; a one-segment clip is already that long)
        pose_video = pipe.video_processor.preprocess_video(pipe.pad_video_frames(pose, n), height=height, width=width)
        face_video = pipe.video_processor.preprocess_video(
            pipe.pad_video_frames(face, n), height=self.face_size, width=self.face_size
        )
        # 7. the reference latents; 8. the first segment's pose latents and previous-segment conditioning
        reference_image_latents = pipe.prepare_reference_image_latents(image_pixels, 1, device=device)
        pose_latents = pipe.prepare_pose_latents(pose_video.to(device, dtype=torch.float32), 1, device=device)
        prev = pipe.prepare_prev_segment_cond_latents(
            None, None, None, 1, segment_frame_length=n, start_frame=0, height=height, width=width,
            prev_segment_cond_frames=1, task="animate", device=device,
        )  # fmt: skip
        out = {
            "reference_latents": torch.cat([reference_image_latents, prev], dim=2),
            "pose_latents": pose_latents.to(self.transformer_dtype),
            "face_pixel_values": face_video.to(device, dtype=self.transformer_dtype),
            "image_embeds": image_embeds,
        }
        if video is not None:  # standardised like the pose latents (the same VAE path), the reference as frame 0
            pixels = pipe.video_processor.preprocess_video(video, height=height, width=width)
            video_latents = pipe.prepare_pose_latents(pixels.to(device, dtype=torch.float32), 1, device=device)
            out["latents"] = torch.cat([reference_image_latents[:, 4:], video_latents], dim=2)
        return out

    @torch.no_grad()
    def encode_face(self, face: Image.Image, size: int) -> torch.Tensor:
        """The reference face crop's standardised VAE latents ``(1, C, 1, size / 8, size / 8)`` (the student's extra
        face path, :mod:`dancelcm.models.wan.face`), through the pose path's helpers (a one-frame video)."""
        if size % self.spatial:
            raise ValueError(f"data.face_size={size}: must be a multiple of {self.spatial} (the Wan VAE's factor)")
        pixels = self.pipe.video_processor.preprocess_video([face], height=size, width=size)
        return self.pipe.prepare_pose_latents(pixels.to(self.device, dtype=torch.float32), 1, device=self.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.pipe.vae, latents)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Standardised latents ``(B, C, 1 + T, h, w)`` -> video ``(B, 3, F, H, W)`` in ``[-1, 1]``, as the pipeline
    decodes a segment (frame 0, the reference slot, dropped)."""
    z = latents.to(next(vae.parameters()).device, vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
    recip_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(z.device, z.dtype)
    return vae.decode(z[:, :, 1:] / recip_std + mean, return_dict=False)[0]


__all__ = [
    "decode_latents",
    "ENCODERS",
    "LAYOUT",
    "WanAnimateEncoders",
    "check_model_folder",
    "frames_ok",
    "to_pil",
]
