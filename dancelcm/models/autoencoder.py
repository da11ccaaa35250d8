"""Latent autoencoders behind one interface: video (B, F, 3, H, W) in [-1, 1] <-> latents (B, C, F, h, w).

- ``PatchAutoencoder`` (the embedded default): exact, invertible space-to-depth. Nothing to train,
  nothing to download, no reconstruction error to blur the metrics, negligible cost on a CPU.
- ``DiffusersAutoencoder``: a diffusers ``AutoencoderKL`` (e.g. the SD VAE) loaded from a local folder,
  applied frame by frame, latents scaled by its ``scaling_factor``.
"""

from __future__ import annotations

import abc

import torch
from einops import rearrange
from torch import nn

from dancelcm.cli import MissingPathError


class VideoAutoencoder(nn.Module, abc.ABC):
    """Video <-> latents through a frame codec (``encode_images`` / ``decode_images`` on (N, C, H, W))."""

    factor: int
    latent_channels: int

    @abc.abstractmethod
    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def decode_images(self, latents: torch.Tensor) -> torch.Tensor: ...

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, H, W) in [-1, 1] -> (B, C, F, h, w)."""
        b = video.shape[0]
        z = self.encode_images(rearrange(video, "b f c h w -> (b f) c h w"))
        return rearrange(z, "(b f) c h w -> b c f h w", b=b)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F, h, w) -> (B, F, 3, H, W)."""
        b = latents.shape[0]
        x = self.decode_images(rearrange(latents, "b c f h w -> (b f) c h w"))
        return rearrange(x, "(b f) c h w -> b f c h w", b=b)


class PatchAutoencoder(VideoAutoencoder):
    def __init__(self, factor: int = 8, scale: float = 1.0):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor={factor} must be >= 1")
        self.factor, self.scale = factor, scale
        self.latent_channels = 3 * factor * factor

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C, H/f, W/f)."""
        h, w = images.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"image size {h}x{w} is not divisible by the autoencoder factor {self.factor}")
        return nn.functional.pixel_unshuffle(images.float(), self.factor) * self.scale

    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(latents.float() / self.scale, self.factor)


def vae_geometry(config) -> tuple[int, int]:
    """(spatial factor, latent channels) of an ``AutoencoderKL`` config (a dict or its ``config``)."""
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k)
    return 2 ** (len(get("block_out_channels")) - 1), int(get("latent_channels"))


class DiffusersAutoencoder(VideoAutoencoder):
    """A frozen ``AutoencoderKL`` from a local folder (``from_pretrained(path)``, never a hub download)."""

    def __init__(self, pretrained: str, subfolder: str | None = None, chunk: int = 16, sample: bool = False):
        super().__init__()
        from pathlib import Path

        from diffusers import AutoencoderKL

        folder = Path(pretrained) / (subfolder or "")
        if not (folder / "config.json").is_file():
            raise MissingPathError(
                f"model.autoencoder.pretrained={pretrained}: no AutoencoderKL here ({folder / 'config.json'} "
                "missing). Point it at a local diffusers VAE folder, e.g. Stable Diffusion's vae/"
            )
        self.vae = AutoencoderKL.from_pretrained(pretrained, subfolder=subfolder, local_files_only=True)
        self.vae.requires_grad_(False).eval()
        self.scaling = float(self.vae.config.scaling_factor)
        self.factor, self.latent_channels = vae_geometry(self.vae.config)
        self.chunk, self.sample = chunk, sample

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for x in images.float().split(self.chunk):
            dist = self.vae.encode(x).latent_dist
            out.append((dist.sample() if self.sample else dist.mode()) * self.scaling)
        return torch.cat(out)

    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.vae.decode(z.float() / self.scaling).sample for z in latents.split(self.chunk)])


def build_autoencoder(kind: str = "patch", **kwargs) -> VideoAutoencoder:
    if kind == "patch":
        return PatchAutoencoder(**kwargs)
    if kind == "diffusers":
        if not kwargs.get("pretrained"):
            raise ValueError("autoencoder.kind=diffusers needs autoencoder.pretrained=/path/to/local/vae")
        return DiffusersAutoencoder(**kwargs)
    raise ValueError(f"autoencoder.kind={kind!r}: choose 'patch' or 'diffusers'")
