"""Conditioning as a list of embedders keyed by batch field (the sgm pattern).

Each embedder declares the batch keys it reads (``batch_keys``) and turns them into its entries of the condition
dict (``read(batch, autoencoder)``, e.g. the reference frame -> its latent); ``forward(cond, num_frames) ->
Embedding`` then reads those entries
and returns features to concatenate with the noisy latent (``concat``, (B, C, F, h, w)) and/or tokens
for cross-attention (``tokens``, (B, n, D)). Turning a condition off removes one entry; the network
has no ``if use_face`` branches.

A condition is *dropped* per sample (condition dropout in training, the unconditional half of CFG)
through ``cond["drop"][name]``, a (B,) bool tensor: concat features become zeros, tokens a learned
null set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn


@dataclass
class Embedding:
    concat: torch.Tensor | None = None
    tokens: torch.Tensor | None = None


def dropped(cond: dict, name: str, batch: int, device) -> torch.Tensor:
    d = cond.get("drop", {}).get(name)
    if d is None:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    return d.to(device)


class PoseGuider(nn.Module):
    """Pose maps (B, F, 3, H, W) -> features at latent resolution (B, C, F, h, w): a small strided conv
    encoder applied per frame (UniAnimate / Animate Anyone style). Reads ``cond['pose']``."""

    name = "pose"
    batch_keys = ("pose",)

    @staticmethod
    def read(batch: dict, autoencoder) -> dict:
        return {"pose": batch["pose"]}

    def __init__(self, factor: int, channels: tuple[int, ...] = (16, 32, 64), out_channels: int = 32):
        super().__init__()
        n_down = int(round(math.log2(factor)))
        if 2**n_down != factor:
            raise ValueError(f"pose guider needs a power-of-two latent factor, got {factor}")
        chans = list(channels) + [channels[-1]] * max(0, n_down - len(channels))
        layers: list[nn.Module] = [nn.Conv2d(3, chans[0], 3, padding=1), nn.SiLU()]
        c_in = chans[0]
        for i in range(n_down):
            c_out = chans[min(i + 1, len(chans) - 1)]
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                nn.SiLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.SiLU(),
            ]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.concat_channels, self.token_dim = out_channels, None

    def forward(self, cond: dict, num_frames: int) -> Embedding:
        pose = cond["pose"]
        b = pose.shape[0]
        feats = self.net(rearrange(pose, "b f c h w -> (b f) c h w"))
        feats = rearrange(feats, "(b f) c h w -> b c f h w", b=b)
        keep = ~dropped(cond, self.name, b, pose.device)
        return Embedding(concat=feats * keep[:, None, None, None, None].to(feats.dtype))


class ReferenceEmbedder(nn.Module):
    """The reference frame's latent (B, C, h, w) from ``cond['reference_latent']``: broadcast over frames
    through a 1x1 projection (spatially aligned appearance) and as cross-attention tokens, one per
    latent position with a learned position embedding (appearance that moved)."""

    name = "reference"
    batch_keys = ("reference",)

    @staticmethod
    def read(batch: dict, autoencoder) -> dict:
        return {"reference_latent": autoencoder.encode_images(batch["reference"])}

    def __init__(
        self, latent_channels: int, latent_size: tuple[int, int], concat_channels: int = 64, token_dim: int = 128
    ):
        super().__init__()
        h, w = latent_size
        self.project = nn.Conv2d(latent_channels, concat_channels, 1) if concat_channels else None
        self.to_tokens = nn.Linear(latent_channels, token_dim) if token_dim else None
        self.position = nn.Parameter(torch.randn(1, h * w, token_dim) * 0.02) if token_dim else None
        self.null_tokens = nn.Parameter(torch.randn(1, h * w, token_dim) * 0.02) if token_dim else None
        self.concat_channels, self.token_dim = concat_channels or 0, token_dim or None

    def forward(self, cond: dict, num_frames: int) -> Embedding:
        ref = cond["reference_latent"]
        b = ref.shape[0]
        keep = ~dropped(cond, self.name, b, ref.device)
        out = Embedding()
        if self.project is not None:
            feats = self.project(ref) * keep[:, None, None, None].to(ref.dtype)
            out.concat = feats[:, :, None].expand(-1, -1, num_frames, -1, -1)
        if self.to_tokens is not None:
            tokens = self.to_tokens(rearrange(ref, "b c h w -> b (h w) c"))
            if tokens.shape[1] != self.position.shape[1]:
                raise ValueError(
                    f"reference latent has {tokens.shape[1]} positions, the embedder was built for "
                    f"{self.position.shape[1]}: set model.latent_size to the data's latent size"
                )
            tokens = tokens + self.position
            out.tokens = torch.where(keep[:, None, None], tokens, self.null_tokens.expand(b, -1, -1).to(tokens.dtype))
        return out


def with_dropped(cond: dict, names: list[str] | tuple[str, ...], mask: torch.Tensor | None = None) -> dict:
    """A copy of ``cond`` with the named conditions dropped (for all samples, or where ``mask``)."""
    b = next(v for v in cond.values() if torch.is_tensor(v)).shape[0]
    device = next(v for v in cond.values() if torch.is_tensor(v)).device
    drop = dict(cond.get("drop", {}))
    for n in names:
        m = torch.ones(b, dtype=torch.bool, device=device) if mask is None else mask
        drop[n] = drop[n] | m if n in drop else m
    return {**cond, "drop": drop}


def random_condition_dropout(cond: dict, probs: dict[str, float], generator=None) -> dict:
    """Drop each condition independently with its probability (so CFG has an unconditional model).
    ``generator``: a ``torch.Generator``, or any object with ``rand()`` giving one uniform draw per sample
    (the training loop's per-sample generators), or None (the global RNG)."""
    out = cond
    b = next(v for v in cond.values() if torch.is_tensor(v)).shape[0]
    device = next(v for v in cond.values() if torch.is_tensor(v)).device
    for name, p in probs.items():
        if p > 0:
            u = generator.rand() if hasattr(generator, "rand") else torch.rand(b, generator=generator)
            out = with_dropped(out, [name], (u < p).to(device))
    return out
