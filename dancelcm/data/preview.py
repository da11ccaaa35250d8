"""Contact sheet (PNG) and animated GIF previews of a dataset in the standard layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dancelcm.data import layout
from dancelcm.data.reader import read_faces, read_frames


def _draw_box(img: Image.Image, box, color=(255, 255, 255)) -> None:
    if box is not None:
        ImageDraw.Draw(img).rectangle([float(v) for v in box], outline=color, width=1)


def write_preview(root: str | Path, video_ids: list[str], columns: int = 8, scale: int = 2) -> list[Path]:
    """Write ``preview.png`` (per video: frames with face boxes, then pose maps; turned frames get a red
    bar) and ``preview.gif`` (video | pose side by side) into ``root``; returns their paths."""
    root = Path(root)
    rows, gif_tiles = [], []
    for vid in video_ids:
        d = layout.video_dir(root, vid)
        video = read_frames(d, "video")
        pose = read_frames(d, "pose")
        boxes = read_faces(d, len(video))
        turned = None
        if (d / "ground_truth.npz").exists():
            turned = np.load(d / "ground_truth.npz")["turned"]
        idx = np.linspace(0, len(video) - 1, columns).round().astype(int)
        top, bottom = [], []
        for i in idx:
            im = Image.fromarray(video[i])
            _draw_box(im, boxes[i])
            if turned is not None and turned[i]:
                ImageDraw.Draw(im).rectangle([0, 0, im.width - 1, 2], fill=(255, 0, 0))
            top.append(np.asarray(im))
            bottom.append(pose[i])
        rows.append(np.concatenate(top, axis=1))
        rows.append(np.concatenate(bottom, axis=1))
        gif_tiles.append(np.concatenate([video, pose], axis=2))
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)
    png = root / "preview.png"
    sheet.save(png)
    n = min(len(t) for t in gif_tiles)
    frames = np.concatenate([t[:n] for t in gif_tiles], axis=1)  # videos stacked vertically
    gif_frames = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
    gif = root / "preview.gif"
    gif_frames[0].save(gif, save_all=True, append_images=gif_frames[1:], duration=83, loop=0)
    return [png, gif]
