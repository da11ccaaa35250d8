"""Animate a reference image with a pose sequence:

    python -m dancelcm.animate model_dir=checkpoints/synthetic_teacher reference=ref.png pose=pose.mp4 out=out.mp4

``pose`` is a DWPose-style pose video (mp4) or a folder of pose frames. The model is a bundle folder:
a teacher samples with DDIM ``steps`` and CFG ``guidance`` (defaults from the bundle); an exported
student (``<run>/export``) samples segment-wise in ``steps`` = 1, 2 or 4 (up to its K; more steps use the
multistep consistency sampler), without CFG. A student trained with face injection reads the face from
``face_box=[x0,y0,x1,y1]`` (pixels of the reference image); without it the face condition is left out
(the student was trained with face dropout). Long pose sequences are generated in consecutive windows
of ``window`` frames (default: the training clip length). ``layout=side_by_side`` writes
reference | pose | result.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from dancelcm.cli import UserError, command

log = logging.getLogger(__name__)


class InputError(UserError, ValueError):
    """A user input (file or option) is unusable; the message names it and the fix."""


def load_reference(path: str | Path, size: tuple[int, int], box=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An image file -> ((3, H, W) in [-1, 1] resized to cover ``size`` and centre-cropped, the face box
    ``[x0, y0, x1, y1]`` given in the image's own pixels, mapped onto that crop (None without a box))."""
    from PIL import Image

    from dancelcm.data.dataset import resize_center_crop

    p = Path(path)
    if not p.is_file():
        raise InputError(f"reference={p}: no such image file")
    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as e:
        raise InputError(f"reference={p}: cannot be read as an image ({e})") from e
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1
    img, (sx, sy, ox, oy) = resize_center_crop(x, size)
    face_box = None
    if box is not None:
        h, w = arr.shape[:2]
        if len(box) != 4:
            raise InputError(f"face_box={list(box)}: give four numbers [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise InputError(f"face_box={list(box)}: not a box [x0, y0, x1, y1] inside the {w}x{h} reference image")
        face_box = torch.tensor([x0 * sx - ox, y0 * sy - oy, x1 * sx - ox, y1 * sy - oy])
    return img[0].clamp(-1, 1), face_box


def load_pose(path: str | Path, size: tuple[int, int], max_frames: int | None = None) -> torch.Tensor:
    """A pose video or frames folder -> (F, 3, H, W) in [-1, 1]."""
    from dancelcm.data.dataset import resize_center_crop
    from dancelcm.data.reader import DataError, FrameSource

    p = Path(path)
    if not p.exists():
        raise InputError(f"pose={p}: no such video or folder")
    try:
        src = FrameSource(p)
        n = len(src) if max_frames is None else min(len(src), max_frames)
        frames = src.get(range(n))
    except DataError as e:
        raise InputError(f"pose={p}: {e.problem}") from e
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    return resize_center_crop(x, size)[0].clamp(-1, 1)


def make_sampler(
    bundle,
    steps: int,
    guidance: float,
    window: int = 8,
    overlap: int = 2,
    weights: str = "triangular",
    uncond: list[str] | None = None,
    seed: int = 0,
):
    """The bundle's long-video sampler (:func:`dancelcm.sampling.long_video_sampler`: overlapping windows fused at
    every step); a bad choice is an :class:`InputError`."""
    from dancelcm.sampling import long_video_sampler

    try:
        return long_video_sampler(bundle, steps, guidance, window, overlap, weights, uncond, progress=True, seed=seed)
    except ValueError as e:
        raise InputError(str(e)) from e


@torch.no_grad()
def animate(
    bundle,
    reference: torch.Tensor,
    pose: torch.Tensor,
    steps: int,
    guidance: float,
    window: int,
    seed: int = 0,
    face_box: torch.Tensor | None = None,
    uncond: list[str] | None = None,
    overlap: int = 2,
    weights: str = "triangular",
) -> torch.Tensor:
    """(3, H, W) reference + (F, 3, H, W) pose -> (F, 3, H, W) video in [-1, 1]: the whole video's noise drawn
    once from ``seed``, windows of ``window`` frames overlapping by ``overlap`` and fused at every step."""
    from dancelcm.data.dataset import crop_square

    sampler = make_sampler(bundle, steps, guidance, window, overlap, weights, uncond, seed)
    fac, c = bundle.autoencoder.factor, bundle.animator.latent_channels
    h, w = pose.shape[-2:]
    extra = {}
    if "face" in bundle.animator.condition_names:
        data = bundle.meta.get("data", {})
        size = int(data.get("face_size", 32))
        if face_box is None:
            log.warning("the student reads a face crop but no face_box was given: sampling without the face")
            extra = {"face": torch.zeros(1, 3, size, size), "face_valid": torch.tensor([False])}
        else:
            face = crop_square(reference, face_box.tolist(), float(data.get("face_scale", 1.5)), size)
            extra = {"face": face[None], "face_valid": torch.tensor([True])}
    batch = {"pose": pose[None], "reference": reference[None], **extra}
    noise = torch.randn(1, c, len(pose), h // fac, w // fac, generator=torch.Generator().manual_seed(seed))
    return sampler(batch, noise)[0]


def run(cfg) -> None:
    """The command's work on a composed config (``conf/animate.yaml``): callable in-process."""
    from dancelcm.data.layout import write_video
    from dancelcm.media import to_uint8
    from dancelcm.models.bundle import load_bundle

    for key in ("reference", "pose"):
        if not cfg.get(key):
            raise InputError(f"{key}=... is required (see `python -m dancelcm.animate --help`)")
    bundle = load_bundle(cfg.model_dir, option="model_dir")
    data = bundle.meta.get("data", {})
    res = data.get("resolution", 64)
    size = (res, res) if isinstance(res, int) else tuple(res)
    student = bundle.meta.get("kind") == "student"
    default_steps = bundle.meta["segments"]["num_segments"] if student else 50
    steps = int(cfg.steps or bundle.meta.get("sampling", {}).get("steps", default_steps))
    guidance = float(cfg.guidance if cfg.guidance is not None else bundle.meta.get("sampling", {}).get("guidance", 1.0))
    if steps < 1:
        raise InputError(f"steps={steps}: must be >= 1")
    window = int(cfg.window or data.get("num_frames", 8))
    reference, face_box = load_reference(cfg.reference, size, cfg.get("face_box"))
    pose = load_pose(cfg.pose, size, cfg.max_frames)
    sampler = f"the student, {steps} steps, no CFG" if student else f"DDIM-{steps}, CFG {guidance:g}"
    overlap = int(cfg.get("overlap", 0) or 0)
    log.info(
        "animating %d frames at %dx%d with %s, windows of %d overlapping by %d (%s weights)",
        len(pose), *size, sampler, window, overlap, cfg.get("weights", "triangular"),
    )  # fmt: skip
    uncond = None if cfg.get("uncond") is None else list(cfg.uncond)
    video = animate(
        bundle, reference, pose, steps, guidance, window, cfg.seed, face_box, uncond, overlap,
        cfg.get("weights", "triangular"),
    )  # fmt: skip
    frames = to_uint8(video[None])[0]
    if cfg.layout == "side_by_side":
        ref = to_uint8(reference[None, None].expand(1, len(pose), -1, -1, -1))[0]
        frames = np.concatenate([ref, to_uint8(pose[None])[0], frames], axis=2)
    elif cfg.layout != "video":
        raise InputError(f"layout={cfg.layout!r}: choose video or side_by_side")
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, frames, fps=cfg.fps, crf=16)
    log.info("wrote %s (%d frames)", out, len(frames))


main = command("animate", run, __doc__, config_name="animate")


if __name__ == "__main__":
    main()
