"""Distances, the motion-focused weight map, and the auxiliary-head loss (DanceLCM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float = 1e-3) -> torch.Tensor:
    """Elementwise ``sqrt((a - b)^2 + c^2) - c``: L2-like near 0, L1-like far away (robust to outliers)."""
    return torch.sqrt((a.float() - b.float()) ** 2 + c * c) - c


def distance(a: torch.Tensor, b: torch.Tensor, kind: str = "huber", c: float = 1e-3) -> torch.Tensor:
    if kind == "huber":
        return pseudo_huber(a, b, c)
    if kind == "l2":
        return (a.float() - b.float()) ** 2
    raise ValueError(f"loss distance {kind!r}: choose 'huber' or 'l2'")


def motion_mask_latent(video: torch.Tensor, latent_size: tuple[int, int], delta: float = 0.1) -> torch.Tensor:
    """DanceLCM's motion region on the latent grid, as a soft mask (B, 1, F, h, w) in [0, 1].

    A pixel moves where ``|v_t - v_{t+1}| > delta`` or ``|v_t - v_{t-1}| > delta`` on the real RGB frames
    in [0, 1] (mean over channels; one-sided at the clip ends). The pixel mask is average-pooled to the
    latent grid, so a latent cell's value is the fraction of its pixels that move.
    """
    v = (video.float().clamp(-1, 1) + 1) / 2  # (B, F, 3, H, W)
    diff = (v[:, 1:] - v[:, :-1]).abs().mean(2) > delta  # (B, F-1, H, W)
    m = torch.zeros(v.shape[0], v.shape[1], *v.shape[-2:], dtype=torch.bool, device=v.device)
    m[:, 1:] |= diff
    m[:, :-1] |= diff
    b, f = m.shape[:2]
    pooled = F.adaptive_avg_pool2d(m.float().flatten(0, 1)[:, None], latent_size)  # (B*F, 1, h, w)
    return pooled.reshape(b, f, *latent_size)[:, None]


def motion_mask_from_latents(latents: torch.Tensor, delta: float = 0.4, skip_first: int = 0) -> torch.Tensor:
    """The motion region from latent frame differences, for clips whose frames are not at hand (precomputed latents
    of a video VAE, e.g. Wan's 4x time-compressed ones): a latent cell moves where the channel-mean absolute change
    to the previous or next latent frame exceeds ``delta`` times the clip's latent standard deviation (one-sided at
    the ends). Returns a 0/1 mask ``(B, 1, F, h, w)``; the first ``skip_first`` frames (Wan's reference slot) are
    never moving and take no part in the differences. On [0, 1] frames the pixel mask's ``delta = 0.1`` is about
    0.4 of a natural frame's standard deviation, hence the default."""
    z = latents.float()[:, :, skip_first:]
    std = z.flatten(1).std(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)
    diff = (z[:, :, 1:] - z[:, :, :-1]).abs().mean(1) > delta * std  # (B, F'-1, h, w)
    m = torch.zeros(z.shape[0], z.shape[2], *z.shape[-2:], dtype=torch.bool, device=z.device)
    m[:, 1:] |= diff
    m[:, :-1] |= diff
    out = torch.zeros(latents.shape[0], 1, latents.shape[2], *latents.shape[-2:], device=latents.device)
    out[:, 0, skip_first:] = m.float()
    return out


def motion_weight(mask: torch.Tensor, motion_weight: float) -> torch.Tensor:
    """``W = 1 + lambda_motion * M``; ``motion_weight = 0`` gives exactly 1 everywhere."""
    return 1.0 + motion_weight * mask


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean of ``values`` (B, ...) under a broadcastable weight map."""
    if weight is not None:
        values = values * weight
    return values.flatten(1).mean(1)
