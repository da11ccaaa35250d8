"""The paper's face injection on Wan2.2-Animate: an extra, zero-initialised face path for the student.

DanceLCM injects a VAE feature of the reference face through cross-attention. Wan2.2-Animate already reads the
*driving* face video through its own face adapter (a motion encoder on every frame's face crop, cross-attended after
every ``inject_face_latents_blocks``-th block): that is the teacher's face path, and every student keeps it. What the
paper adds, and ``method.face.enabled=true`` gives the student here, is the *reference* face's identity as VAE
latents: the reference face crop (``data.face_size`` pixels) through the Wan VAE (``precompute`` stores it as
``face_latents``), one token per latent cell (a linear map from the VAE's channels to the transformer's width, plus
a fixed 2-D sine position code), cross-attended by the video tokens after the same blocks as Wan's own face adapter.
Each injection is residual with a zero-initialised output projection, so the student starts as the teacher; a learned
null token stands for a dropped face (condition dropout, ``method.face.dropout``).

The path is a module of the animator, applied by forward hooks on the transformer's blocks, so the diffusers model
stays stock: a student with this path samples through the project's sampler (diffusers' ``WanAnimatePipeline`` does
not know the path; students without it run there, see ``models/wan/bundle.py``).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

CONDITION = "face_vae"  # the extra condition's name (the pipeline's own "face" is the driving face video)


def sine_positions(h: int, w: int, dim: int, device, dtype) -> torch.Tensor:
    """A fixed 2-D sine / cosine position code ``(h * w, dim)`` (half the channels for rows, half for columns)."""
    quarter = dim // 4
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    parts = []
    for coord in (ys.flatten().float(), xs.flatten().float()):
        angles = coord[:, None] * freqs[None]
        parts += [angles.sin(), angles.cos()]
    code = torch.cat(parts, dim=1)
    return F.pad(code, (0, dim - code.shape[1])).to(dtype)


class FaceCrossAttention(nn.Module):
    """Video tokens attend to the face tokens; the output projection starts at zero (the residual adds nothing)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q = rearrange(self.to_q(self.norm(hidden)), "b l (h d) -> b h l d", h=self.heads)
        k = rearrange(self.to_k(tokens), "b n (h d) -> b h n d", h=self.heads)
        v = rearrange(self.to_v(tokens), "b n (h d) -> b h n d", h=self.heads)
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))
        return self.to_out(rearrange(out, "b h l d -> b l (h d)"))


class WanFacePath(nn.Module):
    def __init__(self, latent_channels: int, dim: int, heads: int, blocks: list[int]):
        super().__init__()
        self.blocks = list(blocks)
        self.proj = nn.Linear(latent_channels, dim)
        self.null_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.attn = nn.ModuleList([FaceCrossAttention(dim, heads) for _ in self.blocks])
        self.tokens: torch.Tensor | None = None  # the current forward's face tokens (set by the animator)
        self.enabled = True

    def encode(self, face_latents: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        """``(B, C, 1, h, w)`` VAE latents of the reference face -> ``(B, h * w, dim)`` tokens (null where dropped)."""
        z = rearrange(face_latents[:, :, 0], "b c h w -> b (h w) c").to(self.proj.weight.dtype)
        h, w = face_latents.shape[-2:]
        tokens = self.proj(z) + sine_positions(h, w, self.proj.out_features, z.device, z.dtype)[None]
        if drop is not None and bool(drop.any()):
            null = self.null_token.expand_as(tokens).to(tokens.dtype)
            tokens = torch.where(drop.view(-1, 1, 1).to(tokens.device), null, tokens)
        return tokens

    def install(self, transformer: nn.Module) -> None:
        """Forward hooks on the injection blocks: each adds its zero-initialised cross-attention residual. (Bound
        methods, not closures: a deep copy of the network, the EMA target's, then calls its own copy of the path.)"""
        for i, block_index in enumerate(self.blocks):
            transformer.blocks[block_index].register_forward_hook(functools.partial(self._residual, i))

    def _residual(self, i: int, module, args, output):
        if not self.enabled or self.tokens is None:
            return output
        return output + self.attn[i](output, self.tokens).to(output.dtype)
