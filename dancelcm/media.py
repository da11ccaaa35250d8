"""Videos and strips of samples next to their inputs: what training, ``evaluate`` and ``animate`` write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dancelcm.data.layout import write_video


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(B, F, 3, H, W) in [-1, 1] -> (B, F, H, W, 3) uint8."""
    return (
        ((video.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
    )


def sample_panels(batch: dict, samples: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Side-by-side panels per frame: reference | pose | ground truth | each sample.

    Returns (video frames (F, B*H, P*W, 3), strip image, panel names)."""
    ref = to_uint8(batch["reference"][:, None].expand_as(batch["video"]))
    cols = [ref, to_uint8(batch["pose"]), to_uint8(batch["video"])] + [to_uint8(s) for s in samples.values()]
    names = ["reference", "pose", "ground truth", *samples.keys()]
    grid = np.concatenate(cols, axis=3)  # (B, F, H, P*W, 3)
    frames = np.concatenate(list(grid), axis=1)  # (F, B*H, P*W, 3)
    # strip: per clip, one row per panel (pose, gt, samples...) with frames left to right
    rows = []
    for b in range(grid.shape[0]):
        for c in cols[1:]:
            rows.append(np.concatenate([cols[0][b, 0]] + list(c[b]), axis=1))
    return frames, np.concatenate(rows, axis=0), names


def label_rows(strip: np.ndarray, labels: list[str], row_height: int) -> np.ndarray:
    """The strip with a white margin on the left naming each row (the labels repeat for every clip)."""
    from PIL import Image, ImageDraw

    width = 8 + 6 * max(len(t) for t in labels)
    canvas = Image.new("RGB", (width + strip.shape[1], strip.shape[0]), "white")
    canvas.paste(Image.fromarray(strip), (width, 0))
    draw = ImageDraw.Draw(canvas)
    for i in range(strip.shape[0] // row_height):
        draw.text((4, i * row_height + row_height // 2 - 5), labels[i % len(labels)], fill="black")
    return np.asarray(canvas)


def write_samples(
    directory: Path, stem: str, batch: dict, samples: dict[str, torch.Tensor], fps: int = 6, mp4: bool = True
) -> tuple[Path | None, Path]:
    """``<stem>.png`` (the strip) and, with ``mp4=True``, ``<stem>.mp4``; returns (mp4 path or None, png path)."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    frames, strip, names = sample_panels(batch, samples)
    strip = label_rows(strip, names[1:], batch["video"].shape[-2])
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    png = directory / f"{stem}.png"
    Image.fromarray(strip).save(png)
    if not mp4:
        return None, png
    mp4_path = directory / f"{stem}.mp4"
    write_video(mp4_path, frames, fps=fps, crf=18)
    return mp4_path, png
