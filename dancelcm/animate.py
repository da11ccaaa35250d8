"""Animate a reference image with a pose sequence:

    python -m dancelcm.animate model_dir=checkpoints/synthetic_teacher reference=ref.png pose=pose.mp4 out=out.mp4

``pose`` is a DWPose-style pose video (mp4) or a folder of pose frames. The model is a bundle folder:
a teacher samples with DDIM ``steps`` and CFG ``guidance`` (defaults from the bundle); an exported
student (``<run>/export``) samples segment-wise in ``steps`` = 1, 2 or 4 (up to its K; more steps use the
multistep consistency sampler), without CFG. A student trained with face injection reads the face from
``face_box=[x0,y0,x1,y1]`` (pixels of the reference image); without it the face condition is left out
(the student was trained with face dropout). Long pose sequences are generated in windows of ``window``
frames (default: the training clip length) that share ``overlap`` frames, fused at every step.
``layout=side_by_side`` writes reference | pose | result.

A Wan2.2-Animate model (its diffusers repository as a teacher, or an exported Wan student) runs in diffusers'
``WanAnimatePipeline``: segments of ``window`` frames (4n + 1), each conditioned on the last ``overlap`` (1 or 5)
frames the previous segment generated; ``prompt``, ``negative_prompt`` and ``face_video`` (the driving face crops,
one per pose frame) are read there only.
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


def open_image(path: str | Path, option: str = "reference"):
    """An image file as an RGB PIL image; an unreadable one is an :class:`InputError` naming ``option``."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{option}={p}: no such image file")
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except Exception as e:
        raise InputError(f"{option}={p}: cannot be read as an image ({e})") from e


def read_frames(path: str | Path, option: str, max_frames: int | None = None) -> np.ndarray:
    """A video file or frames folder -> uint8 ``(F, H, W, 3)``; unusable ones are an :class:`InputError`."""
    from dancelcm.data.reader import DataError, FrameSource

    p = Path(path)
    if not p.exists():
        raise InputError(f"{option}={p}: no such video or folder")
    try:
        src = FrameSource(p)
        n = len(src) if max_frames is None else min(len(src), max_frames)
        return src.get(range(n))
    except DataError as e:
        raise InputError(f"{option}={p}: {e.problem}") from e


def load_reference(path: str | Path, size: tuple[int, int], box=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An image file -> ((3, H, W) in [-1, 1] resized to cover ``size`` and centre-cropped, the face box
    ``[x0, y0, x1, y1]`` given in the image's own pixels, mapped onto that crop (None without a box))."""
    from dancelcm.data.dataset import resize_center_crop

    arr = np.asarray(open_image(path))
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

    x = torch.from_numpy(read_frames(path, "pose", max_frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
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


WAN_OVERLAPS = (1, 5)  # the previous-segment frames WanAnimatePipeline can condition a segment on
WAN_OPTIONS = ("prompt", "negative_prompt", "face_video", "size", "device", "dtype")  # read by Wan models only
DEFAULT_PROMPT = "a person is dancing"  # precompute's default, the prompt a Wan student is trained with


def is_wan_model(model_dir: str | Path) -> bool:
    """A Wan2.2-Animate repository or an exported Wan student (``bundle.json`` family ``wan_animate``)."""
    import json

    from dancelcm.models.wan.bundle import is_wan_folder

    d = Path(model_dir)
    if is_wan_folder(d):
        return True
    try:
        return json.loads((d / "bundle.json").read_text()).get("family") == "wan_animate"
    except (OSError, ValueError):
        return False  # no or a broken bundle.json: load_bundle names the problem


def _pil(frames: np.ndarray) -> list:
    from PIL import Image

    return [Image.fromarray(f) for f in frames]


@torch.no_grad()
def animate_wan(
    pipe,
    meta: dict,
    reference,
    pose: np.ndarray,
    face: np.ndarray | None,
    steps: int | None = None,
    guidance: float | None = None,
    window: int | None = None,
    overlap: int | None = None,
    size: tuple[int, int] | None = None,
    prompt: str | None = None,
    negative_prompt: str = "",
    seed: int = 0,
) -> np.ndarray:
    """A Wan2.2-Animate teacher or student (``pipe, meta`` from ``models.wan.bundle.animate_pipeline``) on a PIL
    reference and uint8 ``(F, H, W, 3)`` pose frames -> uint8 ``(F, H', W', 3)``: diffusers' ``WanAnimatePipeline``
    in segments of ``window`` frames, each conditioned on the last ``overlap`` frames of the previous segment's
    output (its ``prev_segment_conditioning_frames``); a student on its segment edges without CFG. ``face``: the
    driving face crops, one per pose frame (None: a blank face, what CFG's unconditional half sees). ``window``,
    ``size`` and ``prompt`` default to the student's training clips (``bundle.json`` ``data``), else the pipeline's
    77 frames, 720x1280 and "a person is dancing"."""
    student = meta.get("kind") == "student"
    sampling = meta.get("sampling", {})
    if student:
        k = int(meta["segments"]["num_segments"])
        steps = int(steps or k)
        if str(steps) not in sampling.get("sigmas", {}):
            raise InputError(f"steps={steps}: this student samples in {sorted(sampling.get('sigmas', {}))} steps")
        if guidance not in (None, 1.0):
            raise InputError(f"guidance={guidance}: a distilled student samples without CFG; leave guidance unset")
        guidance = 1.0
    else:
        steps = int(steps or sampling.get("steps", 20))
        guidance = float(sampling.get("guidance", 1.0) if guidance is None else guidance)
    if steps < 1:
        raise InputError(f"steps={steps}: must be >= 1")
    trained = meta.get("data", {})  # a student's training clips (their precompute manifest); {} for the teacher
    temporal = int(pipe.vae_scale_factor_temporal)
    window = int(window or trained.get("num_frames") or 77)
    if window < 1 or (window - 1) % temporal:
        raise InputError(f"window={window}: a Wan segment is {temporal}n + 1 frames (e.g. 77, 49, 9)")
    overlap = WAN_OVERLAPS[0] if overlap is None else int(overlap)
    if overlap not in WAN_OVERLAPS:
        raise InputError(
            f"overlap={overlap}: Wan2.2-Animate conditions each segment on the last "
            f"{' or '.join(map(str, WAN_OVERLAPS))} frames of the previous one"
        )
    if window < 2 * overlap:  # the pipeline takes them from the previous segment's new frames (window - overlap)
        least = ((2 * overlap - 2) // temporal + 1) * temporal + 1
        raise InputError(f"window={window} with overlap={overlap}: a Wan segment conditioned on {overlap} previous "
                         f"frames needs window >= {least}")  # fmt: skip
    if len(pose) <= overlap:
        raise InputError(f"pose: {len(pose)} frames; a Wan animation needs more than overlap={overlap}")
    motion = int(pipe.transformer.config.motion_encoder_size)
    if face is None:
        log.warning("no face_video given: the driving face is blank (as in CFG's unconditional half)")
        face = np.zeros((len(pose), motion, motion, 3), dtype=np.uint8)
    elif len(face) < len(pose):
        raise InputError(f"face_video: {len(face)} frames for {len(pose)} pose frames; give one face crop per frame")
    if size is None and trained.get("resolution"):
        res = trained["resolution"]
        size = (res, res) if isinstance(res, int) else tuple(res)
    kwargs = {} if size is None else {"height": int(size[0]), "width": int(size[1])}
    log.info(
        "animating %d frames with the %s in WanAnimatePipeline (%d steps, CFG %g): segments of %d frames, each "
        "conditioned on the last %d of the previous one", len(pose), "student" if student else "teacher", steps,
        guidance, window, overlap,
    )  # fmt: skip
    pipe.set_progress_bar_config(desc="denoising a segment", leave=False)
    prompt = prompt or trained.get("prompt") or DEFAULT_PROMPT
    out = pipe(
        image=reference, pose_video=_pil(pose), face_video=_pil(face[: len(pose)]), prompt=prompt,
        negative_prompt=negative_prompt, segment_frame_length=window, prev_segment_conditioning_frames=overlap,
        num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
        output_type="np", **kwargs,
    ).frames[0]  # fmt: skip  # (F, H, W, 3) in [0, 1]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


LAYOUTS = ("video", "side_by_side")


def write_animation(cfg, reference: np.ndarray, pose: np.ndarray, video: np.ndarray) -> None:
    """``cfg.out`` as an mp4 of uint8 frames: the video, or with ``layout=side_by_side`` reference | pose | video
    (``reference`` (H, W, 3) and ``pose`` (F, H, W, 3) at the video's size)."""
    from dancelcm.data.layout import write_video

    if cfg.layout == "side_by_side":
        video = np.concatenate([np.broadcast_to(reference, video.shape), pose, video], axis=2)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, np.ascontiguousarray(video), fps=cfg.fps, crf=16)
    log.info("wrote %s (%d frames)", out, len(video))


def wan_size(value) -> tuple[int, int] | None:
    """``size=`` as ``(H, W)``: one number for a square, or ``[H, W]``, multiples of 16 (the Wan VAE's 8x and the
    transformer's 2x2 patches); None stays None (the default size)."""
    if value is None:
        return None
    values = [value] * 2 if isinstance(value, int) else list(value)
    if len(values) != 2 or any(not isinstance(v, int) or v <= 0 or v % 16 for v in values):
        raise InputError(f"size={value}: give [H, W] (or one number), positive multiples of 16, e.g. size=[480,832]")
    return values[0], values[1]


def run_wan(cfg) -> None:
    """``run`` for a Wan2.2-Animate teacher folder or Wan student export."""
    from dancelcm.data.dataset import resize_center_crop
    from dancelcm.models.wan.bundle import animate_pipeline

    if cfg.get("uncond") is not None or cfg.get("face_box") is not None:
        raise InputError(
            "uncond= / face_box= are read by the project's own animators; Wan2.2-Animate's CFG drops the prompt and "
            "the face video, and its face is face_video="
        )
    device = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device}: CUDA is not available here; use device=cpu")
    name = cfg.get("dtype") or ("bfloat16" if device.startswith("cuda") else "float32")
    if name not in ("float32", "bfloat16", "float16"):
        raise InputError(f"dtype={name}: choose float32, bfloat16 or float16")
    try:
        pipe, meta = animate_pipeline(cfg.model_dir, torch_dtype=getattr(torch, name))
    except ValueError as e:
        raise InputError(f"model_dir={cfg.model_dir}: {e}") from e
    pipe.to(device)
    reference = open_image(cfg.reference)
    pose = read_frames(cfg.pose, "pose", cfg.max_frames)
    face = None if not cfg.get("face_video") else read_frames(cfg.face_video, "face_video")
    size = wan_size(cfg.get("size"))
    video = animate_wan(
        pipe, meta, reference, pose, face, cfg.steps, cfg.guidance, cfg.window, cfg.get("overlap"), size,
        cfg.get("prompt"), cfg.get("negative_prompt") or "", cfg.seed,
    )  # fmt: skip
    h, w = video.shape[1:3]

    def fit(frames: np.ndarray) -> np.ndarray:  # the inputs at the output's size, for the side-by-side layout
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        return resize_center_crop(x, (h, w))[0].clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()

    write_animation(cfg, fit(np.asarray(reference)[None])[0], fit(pose), video)


def run(cfg) -> None:
    """The command's work on a composed config (``conf/animate.yaml``): callable in-process."""
    from dancelcm.media import to_uint8
    from dancelcm.models.bundle import load_bundle

    for key in ("reference", "pose"):
        if not cfg.get(key):
            raise InputError(f"{key}=... is required (see `python -m dancelcm.animate --help`)")
    if cfg.layout not in LAYOUTS:
        raise InputError(f"layout={cfg.layout!r}: choose {' or '.join(LAYOUTS)}")
    if is_wan_model(cfg.model_dir):
        return run_wan(cfg)
    given = [k for k in WAN_OPTIONS if cfg.get(k)]
    if given:
        raise InputError(f"{', '.join(given)}=: read by Wan2.2-Animate models only; {cfg.model_dir} is not one")
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
    overlap = 2 if cfg.get("overlap") is None else int(cfg.overlap)
    log.info(
        "animating %d frames at %dx%d with %s, windows of %d overlapping by %d (%s weights)",
        len(pose), *size, sampler, window, overlap, cfg.get("weights", "triangular"),
    )  # fmt: skip
    uncond = None if cfg.get("uncond") is None else list(cfg.uncond)
    video = animate(
        bundle, reference, pose, steps, guidance, window, cfg.seed, face_box, uncond, overlap,
        cfg.get("weights", "triangular"),
    )  # fmt: skip
    write_animation(cfg, to_uint8(reference[None, None])[0, 0], to_uint8(pose[None])[0], to_uint8(video[None])[0])


main = command("animate", run, __doc__, config_name="animate")


if __name__ == "__main__":
    main()
