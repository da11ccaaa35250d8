"""Per-clip quality metrics on videos (B, F, 3, H, W) in [-1, 1].

Whole-frame PSNR rewards blur (a blurry conditional mean beats a sharp sample), so there are also
region metrics (figure, face, motion, turned frames: boolean masks of the same clip) and a sharpness
ratio: Laplacian energy of the sample over that of the ground truth (1 = as sharp, < 1 blurry,
> 1 noisy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _to01(x: torch.Tensor) -> torch.Tensor:
    return (x.float().clamp(-1, 1) + 1) / 2


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-clip PSNR (dB) over [0, 1] pixels; ``mask`` (B, F, 1, H, W) restricts it to a region.

    Clips whose mask is empty get NaN (callers average with ``nanmean`` and report the count).
    """
    err = (_to01(pred) - _to01(target)) ** 2
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        m = mask.float().expand_as(err)
        denom = m.flatten(1).sum(1)
        mse = (err * m).flatten(1).sum(1) / denom.clamp_min(1)
        mse = torch.where(denom > 0, mse, torch.full_like(mse, float("nan")))
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (_to01(pred) - _to01(target)).abs().flatten(1).mean(1)


def laplacian_energy(video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared Laplacian response per clip (on grey frames), optionally inside a mask."""
    b, f, _, h, w = video.shape
    grey = _to01(video).mean(2).reshape(b * f, 1, h, w)
    lap = F.conv2d(grey, _LAPLACE.to(video.device)[None, None], padding=1).reshape(b, f, 1, h, w) ** 2
    if mask is None:
        return lap.flatten(1).mean(1)
    m = mask.float()
    return (lap * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


def sharpness_ratio(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return laplacian_energy(pred, mask) / laplacian_energy(target, mask).clamp_min(1e-10)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-clip SSIM (torchmetrics' implementation, averaged over frames)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    b, f = pred.shape[:2]
    p, t = _to01(pred).flatten(0, 1), _to01(target).flatten(0, 1)
    vals = structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
    return vals.reshape(b, f).mean(1)
