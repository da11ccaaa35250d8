"""An offline distribution distance for the synthetic benchmark (the role FID / FVD play on real data).

Inception and I3D weights cannot be downloaded here, so the project trains its own small frame encoder
on the synthetic *ground truth* (train split) and ships it: a CNN that predicts, from one frame, the
dancer's identity, shirt front and back patterns, hair style, whether the back is shown and the 18 body
keypoints, and, from randomly degraded copies of the frames, how much blur and how much noise they carry.
Its features must therefore resolve exactly what samplers get wrong: colours, patterns, the back, the
pose, and the two ways few-step samplers fail (blur from a conditional mean, residual noise). A
classifier alone learns to ignore noise (measured: noise of std 0.1 moved the distance by 0.35, a 3-pixel
blur by 18), hence the degradation head. The Frechet distance between the feature distributions of
generated and real frames is reported as ``fd`` (lower is better).

Train it with ``python -m dancelcm.tools.feature_net root=data/synthetic out=checkpoints/feature_net``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dancelcm.cli import MissingPathError

log = logging.getLogger(__name__)

HEADS = ("identity", "front_pattern", "back_pattern", "hair_style", "turned")
MAX_BLUR, MAX_NOISE = 2.5, 0.25  # Gaussian blur sigma (pixels at 64 px) and noise std (on [-1, 1]) ranges


def gaussian_blur(frames: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-frame separable Gaussian blur: frames (N, C, H, W), sigma (N,) in pixels (0: unchanged)."""
    n, c, h, w = frames.shape
    r = int(np.ceil(3 * float(sigma.max()))) if len(sigma) else 0
    if r == 0:
        return frames
    x = torch.arange(-r, r + 1, dtype=frames.dtype, device=frames.device)
    k = torch.exp(-0.5 * (x[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)  # (N, 2r + 1); sigma -> 0 gives a delta
    k = k.repeat_interleave(c, 0)  # one kernel per (frame, channel)
    y = nn.functional.pad(frames.reshape(1, n * c, h, w), (r, r, r, r), mode="replicate")
    y = nn.functional.conv2d(y, k[:, None, None, :], groups=n * c)
    y = nn.functional.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def degrade(frames: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random degradations of frames in [-1, 1]: a third clean, a third blurred, a third noisy (some both).
    Returns the frames and the targets (N, 2): blur sigma / MAX_BLUR, noise std / MAX_NOISE."""
    n = len(frames)
    kind = torch.randint(0, 3, (n,), generator=generator)
    both = torch.rand(n, generator=generator) < 0.2
    blur = torch.rand(n, generator=generator) * MAX_BLUR * ((kind == 1) | ((kind == 2) & both))
    noise = torch.rand(n, generator=generator) * MAX_NOISE * ((kind == 2) | ((kind == 1) & both))
    out = gaussian_blur(frames, blur)
    out = out + noise[:, None, None, None] * torch.randn(out.shape, generator=generator)
    return out, torch.stack([blur / MAX_BLUR, noise / MAX_NOISE], 1)


class FrameEncoder(nn.Module):
    def __init__(self, feature_dim: int = 64, heads: dict[str, int] | None = None, width: int = 16):
        super().__init__()
        w = width
        self.config = {"feature_dim": feature_dim, "heads": dict(heads or {}), "width": width}

        def block(i, o):
            return nn.Sequential(
                nn.Conv2d(i, o, 3, padding=1),
                nn.GroupNorm(8, o),
                nn.SiLU(),
                nn.Conv2d(o, o, 3, padding=1),
                nn.GroupNorm(8, o),
                nn.SiLU(),
                nn.AvgPool2d(2),
            )

        stem = nn.Sequential(nn.Conv2d(3, w, 4, stride=2, padding=1), nn.SiLU())  # 64 -> 32 px
        self.body = nn.Sequential(stem, block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 4 * w))  # -> 4 x 4
        self.project = nn.Linear(4 * w * 4, feature_dim)  # pooled to 2 x 2
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.heads = nn.ModuleDict({k: nn.Linear(feature_dim, n) for k, n in (heads or {}).items()})

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, feature_dim). Frames are resized to 64 x 64 first."""
        if frames.shape[-2:] != (64, 64):
            frames = nn.functional.interpolate(
                frames, size=(64, 64), mode="bilinear", antialias=True, align_corners=False
            )
        return self.project(self.pool(self.body(frames.float())).flatten(1))

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        f = nn.functional.silu(self.features(frames))
        return {k: head(f) for k, head in self.heads.items()}

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(self.config, indent=1))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / "model.safetensors"))

    @classmethod
    def load(cls, directory: str | Path) -> FrameEncoder:
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / "config.json").is_file():
            raise MissingPathError(
                f"{d}: no feature network here. Train it with "
                f"`python -m dancelcm.tools.feature_net root=data/synthetic out={d}`"
            )
        m = cls(**json.loads((d / "config.json").read_text()))
        m.load_state_dict(load_file(str(d / "model.safetensors")))
        return m.eval()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D), computed in float64."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    # tr sqrt(ca cb) = sum sqrt(eig(sqrt(ca) cb sqrt(ca))) with sqrt(ca) from its eigendecomposition
    w, v = torch.linalg.eigh(ca)
    sa = (v * w.clamp_min(0).sqrt()) @ v.T
    m = sa @ cb @ sa
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + ca.trace() + cb.trace() - 2 * tr_sqrt)


def _load_frames(root: Path, split: str, max_videos: int | None = None):
    from dancelcm.data import layout
    from dancelcm.data.reader import read_frames, read_ground_truth, read_keypoints, read_meta

    ids = layout.read_split(root, split)[:max_videos]
    metas = [read_meta(layout.video_dir(root, v)) for v in ids]
    vocab = {
        "front_pattern": sorted({m["appearance"]["front_pattern"] for m in metas}),
        "back_pattern": sorted({m["appearance"]["back_pattern"] for m in metas}),
        "hair_style": sorted({m["appearance"]["hair_style"] for m in metas}),
        "identity": sorted({m["identity"] for m in metas}),
    }
    frames, labels, keypoints = [], {k: [] for k in HEADS}, []
    for vid, meta in zip(ids, metas):
        d = layout.video_dir(root, vid)
        v = read_frames(d)
        gt = read_ground_truth(d, len(v))
        body, _ = read_keypoints(d, len(v))
        h, w = v.shape[1:3]
        keypoints.append(body / np.array([w, h, 1.0], np.float32))  # x, y in [0, 1], confidence
        frames.append(v)
        n = len(v)
        labels["identity"] += [vocab["identity"].index(meta["identity"])] * n
        for k in ("front_pattern", "back_pattern", "hair_style"):
            labels[k] += [vocab[k].index(meta["appearance"][k])] * n
        labels["turned"] += gt["turned"].astype(int).tolist()
    x = torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2).contiguous()  # uint8
    y = {k: torch.tensor(v) for k, v in labels.items()}
    y["keypoints"] = torch.from_numpy(np.concatenate(keypoints))  # (N, 18, 3)
    sizes = {k: len(vocab[k]) for k in vocab} | {"turned": 2, "keypoints": 36, "degradation": 2}
    return x, y, sizes


def train_feature_net(
    root: str, out: str, steps: int = 1500, batch_size: int = 32, lr: float = 2e-3, seed: int = 0
) -> dict:
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    x, y, sizes = _load_frames(Path(root), "train")
    model = FrameEncoder(heads=sizes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="feature net")
    acc = {}
    for step in bar:
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        clean = x[idx].float() / 127.5 - 1
        bad, level = degrade(clean, g)
        out_ = model(torch.cat([clean, bad]))
        sem = {k: v[:batch_size] for k, v in out_.items()}
        loss = sum(nn.functional.cross_entropy(sem[k], y[k][idx]) for k in HEADS)
        kp = y["keypoints"][idx]
        kp_err = (sem["keypoints"].view(-1, 18, 2) - kp[..., :2]).square().sum(-1)
        loss = loss + 10 * (kp_err * (kp[..., 2] > 0)).mean()
        level = torch.cat([torch.zeros_like(level), level])
        loss = loss + 10 * (out_["degradation"] - level).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            acc = {k: (sem[k].argmax(1) == y[k][idx]).float().mean().item() for k in HEADS}
            acc["keypoint_rmse_px"] = (kp_err.sqrt() * 64)[kp[..., 2] > 0].mean().item()
            acc["degradation_rmse"] = (out_["degradation"] - level).square().mean().sqrt().item()
            bar.set_postfix(loss=f"{loss.item():.3f}", id_acc=f"{acc['identity']:.2f}")
    model.heads = nn.ModuleDict()  # only the features ship
    model.config["heads"] = {}
    model.save(out)
    summary = {"steps": steps, "train_batch_accuracy": acc, "frames": len(x), "root": str(root)}
    (Path(out) / "training.json").write_text(json.dumps(summary, indent=1))
    return summary


@torch.no_grad()
def frame_features(model: FrameEncoder, video: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(B, F, 3, H, W) in [-1, 1] -> (B * F, D)."""
    frames = video.flatten(0, 1)
    return torch.cat([model.features(frames[i : i + batch]) for i in range(0, len(frames), batch)])
