"""LPIPS, FID, FID-VID and FVD from local TorchScript networks (nothing is downloaded).

The usual packages for these metrics (lpips, torch-fidelity, pytorch-fid, clean-fid, cd-fvd, torchmetrics'
LPIPS / FID defaults) import torchvision, which does not import next to this project's CPU torch build,
and they fetch their weights at run time. The widely used TorchScript exports load with ``torch.jit.load``
alone, so they are what this module takes, each from a local file:

========  =====================================  ===========================================================
option    the usual file                         called as
========  =====================================  ===========================================================
inception ``inception-2015-12-05.pt`` (FID)      ``net(frames_uint8_as_float, return_features=True)`` -> (N, 2048)
lpips     ``vgg16.pt`` (StyleGAN2-ADA LPIPS)      ``net(frames_0_255, resize_images=False, return_lpips=True)``
                                                 -> (N, D) unit features; LPIPS = squared distance
i3d       ``i3d_torchscript.pt`` (FVD)           ``net(videos, rescale=False, resize=False, return_features=True)``
                                                 on (N, 3, T, 224, 224) in [-1, 1] -> (N, 400)
fid_vid   any TorchScript video network          ``net(videos)`` on (N, 3, T, 112, 112) in [-1, 1] -> (N, D)
          (e.g. the 3D-ResNeXt of the DisCo
          FID-VID protocol, exported by you)
========  =====================================  ===========================================================

FID / FID-VID / FVD are Frechet distances between the generated and the real feature sets of an
evaluation (frames for FID, clips for FID-VID / FVD); LPIPS is per clip (mean over frames) against the
ground truth. The tests prove the loading and calling path with tiny random-weight TorchScript networks
of these signatures; they cannot check the real networks' numbers, which need their weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from dancelcm.cli import MissingPathError

OPTIONS = ("inception", "lpips", "i3d", "fid_vid")


def load_torchscript(path: str | Path, option: str) -> torch.jit.ScriptModule:
    p = Path(path)
    if not p.is_file():
        raise MissingPathError(
            f"perceptual.{option}={path}: no such file. Point it at a local TorchScript file "
            f"(see dancelcm/metrics/perceptual.py for which one), or set perceptual.{option}=null to skip it"
        )
    try:
        return torch.jit.load(str(p), map_location="cpu").eval()
    except Exception as e:
        raise ValueError(f"perceptual.{option}={path}: not a TorchScript file torch.jit.load can read ({e})") from e


def _frames_0_255(video: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, H, W) in [-1, 1] -> (B * F, 3, H, W) in [0, 255]."""
    return ((video.flatten(0, 1).float().clamp(-1, 1) + 1) * 127.5).round()


def _clips(video: torch.Tensor, size: int) -> torch.Tensor:
    """(B, F, 3, H, W) in [-1, 1] -> (B, 3, F, size, size) in [-1, 1]."""
    b, f = video.shape[:2]
    x = F.interpolate(video.flatten(0, 1).float(), size=(size, size), mode="bilinear", align_corners=False)
    return x.reshape(b, f, 3, size, size).permute(0, 2, 1, 3, 4).clamp(-1, 1)


class PerceptualMetrics:
    """The networks the user gave; ``features`` for the Frechet distances, ``lpips`` per clip."""

    def __init__(self, paths: dict | None, device: str | torch.device = "cpu"):
        paths = {k: v for k, v in (paths or {}).items() if v}
        unknown = set(paths) - set(OPTIONS)
        if unknown:
            raise ValueError(f"perceptual.{sorted(unknown)[0]}: unknown (available: {', '.join(OPTIONS)})")
        self.device = torch.device(device)
        self.nets = {k: load_torchscript(v, k).to(self.device) for k, v in paths.items()}

    def __bool__(self) -> bool:
        return bool(self.nets)

    @torch.no_grad()
    def features(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature sets of one batch of clips: ``fid`` per frame, ``fvd`` / ``fid_vid`` per clip."""
        v = video.to(self.device)
        out = {}
        if "inception" in self.nets:
            out["fid"] = self.nets["inception"](_frames_0_255(v), return_features=True).float().cpu()
        if "i3d" in self.nets:
            clips = _clips(v, 224)
            out["fvd"] = self.nets["i3d"](clips, rescale=False, resize=False, return_features=True).float().cpu()
        if "fid_vid" in self.nets:
            out["fid_vid"] = self.nets["fid_vid"](_clips(v, 112)).float().cpu()
        return out

    @torch.no_grad()
    def lpips(self, video: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """(B,) LPIPS of each clip against its ground truth (mean over frames), or None without the network."""
        if "lpips" not in self.nets:
            return None
        net = self.nets["lpips"]
        a = net(_frames_0_255(video.to(self.device)), resize_images=False, return_lpips=True)
        b = net(_frames_0_255(target.to(self.device)), resize_images=False, return_lpips=True)
        d = (a - b).float().square().sum(1)
        return d.reshape(video.shape[0], video.shape[1]).mean(1).cpu()
