"""Sampling from a bundle: the one place every command samples (validation in training, ``evaluate``,
``animate``, ``bench``, ``probe``, the demo).

A :class:`Sampler` turns a batch of the datamodule (or an ``animate`` request shaped like one) and the initial
latent noise into a video in ``[-1, 1]``, ``(B, F, 3, H, W)``. The samplers:

- :func:`teacher_sampler`: DDIM with N steps and classifier-free guidance (one batched forward per step);
- :func:`student_sampler`: a distilled student's segment sampler (deterministic, K NFE, no CFG), and for a
  K = 1 student the LCM multistep sampler beyond one step;
- :func:`copy_reference`: the trivial baseline (the reference frame in every frame);
- :func:`bundle_sampler`: the right one of the first two for a bundle (teacher or student).

The noise is drawn here too, in the two ways the project uses: :func:`clip_noise` (one generator per clip,
seeded by the clip's dataset index: every sampler of an evaluation sees the same noise for the same clip) and
:func:`batch_noise` (one generator for a batch: the fixed-seed validation videos of training).

Sampling needs nothing of the training layer: the networks, the schedule and the autoencoder come in a
:class:`dancelcm.models.bundle.Bundle` (a training module builds one of its own networks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dancelcm.diffusion import Segments
from dancelcm.diffusion.samplers import ddim_sample
from dancelcm.distill.consistency import consistency_sample, multistep_consistency_sample
from dancelcm.models.conditioning import with_dropped


@dataclass
class Sampler:
    name: str
    nfe: int
    fn: Callable[[dict, torch.Tensor], torch.Tensor]  # (batch, latent noise) -> video in [-1, 1]
    windows: tuple[int, int] | None = None  # (window, overlap) of a long-video sampler

    def __call__(self, batch: dict, noise: torch.Tensor) -> torch.Tensor:
        return self.fn(batch, noise)


# -- noise --------------------------------------------------------------------------------------------------------
def latent_shape(bundle, batch: dict) -> tuple[int, int, int, int]:
    """``(C, F, h, w)`` of one clip's latent for ``batch`` (its ``video``, or its ``pose`` when it has no video; a
    precomputed clip's ``latents``, or the frames of its ``reference_latents``)."""
    if "latents" in batch:
        return tuple(batch["latents"].shape[1:])
    if "reference_latents" in batch:
        return (bundle.animator.latent_channels, *batch["reference_latents"].shape[2:])
    frames = batch["video"] if "video" in batch else batch["pose"]
    f, _, h, w = frames.shape[1:]
    fac = bundle.autoencoder.factor
    return (bundle.animator.latent_channels, f, h // fac, w // fac)


def clip_noise(clip_index: torch.Tensor, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Initial noise per clip, identical for every sampler (seeded by the clip's dataset index)."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(seed * 100_003 + int(i))) for i in clip_index]
    )


def batch_noise(batch_size: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The noise of a whole batch from one seed: ``(batch_size, *shape)`` (the validation videos of training)."""
    return torch.randn(batch_size, *shape, generator=torch.Generator().manual_seed(seed))


# -- samplers -----------------------------------------------------------------------------------------------------
def teacher_sampler(
    bundle, steps: int, guidance: float, uncond: list[str], show_uncond: bool = False, autocast=None
) -> Sampler:
    """DDIM-``steps`` with CFG ``guidance`` whose unconditional half drops ``uncond``. ``autocast``: a context
    manager factory for the network's forward passes (the distillation runs its teacher in bf16 under a bf16
    trainer; None keeps the caller's precision context); the decoded video is float32."""
    net = bundle.animator.eval()

    def fn(batch: dict, noise: torch.Tensor) -> torch.Tensor:
        cond = net.conditions(batch, bundle.autoencoder)
        un = with_dropped(cond, uncond) if guidance != 1.0 else None
        with autocast() if autocast is not None else contextlib.nullcontext():
            z = ddim_sample(net, noise, bundle.schedule, steps, cond, un, guidance)
        return bundle.autoencoder.decode(z.float()).clamp(-1, 1)

    name = f"teacher DDIM-{steps}" + (f" CFG {guidance:g}" if guidance != 1.0 else "")
    if show_uncond and guidance != 1.0:  # a non-default unconditional half, named in tables
        name += f" drop {'+'.join(uncond)}"
    return Sampler(name, steps * (2 if guidance != 1.0 else 1), fn)


def check_student_steps(k: int, steps: int) -> None:
    """A K > 1 student samples in 1..K steps (its prediction is clean only in the lowest segment); a K = 1 student
    in any number (LCM multistep beyond one)."""
    if steps < 1 or (k > 1 and steps > k):
        raise ValueError(
            f"steps={steps}: this student has K={k} segments and samples in 1 to {k} steps "
            f"(its prediction is clean only in the lowest segment); choose steps <= {k}"
            if steps >= 1
            else f"steps={steps}: must be >= 1"
        )


def student_sampler(bundle, steps: int, seed: int = 0, segments: Segments | None = None, autocast=None) -> Sampler:
    """A distilled student: segment-wise deterministic sampling when ``steps <= K``; for a K = 1 student (plain
    LCM) the LCM multistep sampler (re-noising between steps, seeded by ``seed``) beyond that. No CFG: NFE = steps.

    A K > 1 student predicts its segment's lower edge, not the clean video, except in the lowest segment, so the
    re-noising sampler (which reads every prediction as clean) does not apply: more steps than K is refused.
    ``segments``: the student's segments (default: its bundle's ``segments``); ``autocast`` as for the teacher."""
    net = bundle.animator.eval()
    segments = segments or Segments(**bundle.meta["segments"])
    k = segments.num_segments
    check_student_steps(k, steps)

    def fn(batch: dict, noise: torch.Tensor) -> torch.Tensor:
        batch = student_face(bundle, batch)
        cond = net.conditions(batch, bundle.autoencoder)
        with autocast() if autocast is not None else contextlib.nullcontext():
            if steps <= k:
                z = consistency_sample(net, noise, bundle.schedule, segments, cond, steps)
            else:
                g = torch.Generator().manual_seed(seed)
                z = multistep_consistency_sample(net, noise, bundle.schedule, steps, cond, g)
        return bundle.autoencoder.decode(z.float()).clamp(-1, 1)

    return Sampler(f"{steps}-step", steps, fn)


def student_face(bundle, batch: dict) -> dict:
    """The batch with its face crop at the size the student was trained with (``bundle.json`` ``data.face_size``)."""
    face_size = bundle.meta.get("data", {}).get("face_size")
    if face_size and "face" in batch and batch["face"].shape[-1] != face_size:
        face = torch.nn.functional.interpolate(
            batch["face"], size=(face_size, face_size), mode="bilinear", antialias=True, align_corners=False
        )
        batch = {**batch, "face": face}
    return batch


def copy_reference() -> Sampler:
    """The trivial baseline: the reference frame in every frame."""
    return Sampler(
        "copy reference frame", 0, lambda batch, noise: batch["reference"][:, None].expand_as(batch["video"])
    )


def bundle_sampler(bundle, steps: int, guidance: float, seed: int = 0, uncond: list[str] | None = None) -> Sampler:
    """The bundle's sampler: DDIM + CFG for a teacher (``uncond``: the conditions its unconditional half drops;
    None: the bundle's setting), the consistency sampler (no CFG) for a student. A ValueError names a bad choice."""
    from dancelcm.models.bundle import bundle_uncond

    if bundle.meta.get("kind") == "student":
        if guidance != 1.0:
            raise ValueError(f"guidance={guidance}: a distilled student samples without CFG; leave guidance unset")
        return student_sampler(bundle, steps, seed)
    return teacher_sampler(bundle, steps, guidance, bundle_uncond(bundle, uncond))


# -- long videos: overlapping windows fused at every step (diffusion/windows.py) -----------------------------------
# the batch fields that run along the clip's frames (dim 1), sliced per window; the others (reference, face crop,
# precomputed features of the reference) are the same for every window
PER_FRAME = ("video", "pose", "face_boxes", "face_boxes_valid", "keypoints", "face_keypoints", "frame_index",
             "figure_mask", "turned")  # fmt: skip


def window_batch(batch: dict, start: int, size: int) -> dict:
    """The batch of frames ``start .. start + size`` (per-frame fields sliced, the others shared)."""
    return {k: (v[:, start : start + size] if k in PER_FRAME and torch.is_tensor(v) else v) for k, v in batch.items()}


def long_video_sampler(
    bundle,
    steps: int,
    guidance: float = 1.0,
    window: int = 8,
    overlap: int = 2,
    weights: str = "triangular",
    uncond: list[str] | None = None,
    autocast=None,
    progress: bool = False,
    seed: int = 0,
    show_uncond: bool = False,
) -> Sampler:
    """The bundle's sampler (the teacher's DDIM + CFG, or the student's segments) over a video of any length: windows
    of ``window`` frames, ``overlap`` frames shared by neighbours, their ``(x0, eps)`` fused at every step with
    ``weights`` (:mod:`dancelcm.diffusion.windows`). A video of at most ``window`` frames is sampled exactly as the
    unwindowed sampler does. The sampler's ``nfe`` is per window; per output frame it is ``nfe x windows x window /
    frames`` (:func:`nfe_per_frame`)."""
    from dancelcm.diffusion.samplers import ddim_pairs, guided_output
    from dancelcm.diffusion.windows import fused_sample, window_starts, window_weights
    from dancelcm.models.bundle import bundle_uncond

    window_starts(window + 1, window, overlap)  # bad window / overlap / weights stop here, not mid-sampling
    window_weights(window, weights)
    if getattr(bundle.animator, "family", None) is not None:
        raise ValueError(
            f"{bundle.animator.family}: the windowed sampler drives the project's own animators (a Wan clip has a "
            "reference slot and a temporal VAE); Wan2.2-Animate samples long videos in WanAnimatePipeline's segments, "
            "each conditioned on the previous one's last frames (`python -m dancelcm.animate model_dir=<wan folder>`)"
        )
    net, schedule = bundle.animator.eval(), bundle.schedule
    student = bundle.meta.get("kind") == "student"
    if student:
        if guidance != 1.0:
            raise ValueError(f"guidance={guidance}: a distilled student samples without CFG; leave guidance unset")
        segments = Segments(**bundle.meta["segments"])
        k = segments.num_segments
        check_student_steps(k, steps)
        # a K = 1 student beyond one step: the LCM multistep sampler (re-noising, as student_sampler)
        multistep = k == 1 and steps > 1
        pairs = ddim_pairs(schedule.inference_timesteps(steps)) if multistep else segments.sampling_steps(steps)
        drop = None
    else:
        multistep = False
        pairs = ddim_pairs(schedule.inference_timesteps(steps))
        drop = bundle_uncond(bundle, uncond) if guidance != 1.0 else None
    cfg = drop is not None

    def fn(batch: dict, noise: torch.Tensor) -> torch.Tensor:
        batch = student_face(bundle, batch) if student else batch
        num_frames = noise.shape[2]
        size = min(window, num_frames)
        conds: dict[int, tuple] = {}

        def predict(x: torch.Tensor, t, start: int):
            if start not in conds:  # each window's conditions once, reused at every step
                c = net.conditions(window_batch(batch, start, size), bundle.autoencoder)
                conds[start] = (c, with_dropped(c, drop) if cfg else None)
            c, u = conds[start]
            tt = schedule.timesteps(t, x.shape[0], x.device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                out = guided_output(net, x, schedule.network_timestep(tt), c, u, guidance if cfg else 1.0)
            return schedule.to_x0_eps(out.float(), x, tt)

        bar = None
        if progress:
            from tqdm.auto import tqdm

            from dancelcm.diffusion.windows import window_starts

            n = len(window_starts(num_frames, window, overlap)) * len(pairs)
            bar = tqdm(total=n, desc=f"{num_frames} frames, windows of {size}", unit="window step", leave=False)
        fresh = None
        if multistep:  # seeded like student_sampler's multistep sampler
            g = torch.Generator().manual_seed(seed)
            fresh = lambda shape: torch.randn(shape, generator=g)  # noqa: E731
        z = fused_sample(predict, noise, schedule, pairs, window, overlap, weights, bar.update if bar else None, fresh)
        if bar is not None:
            bar.close()
        video = [bundle.autoencoder.decode(z[:, :, s : s + size]) for s in range(0, num_frames, size)]
        return torch.cat(video, dim=1).clamp(-1, 1)

    per_window = len(pairs) * (2 if cfg else 1)
    name = f"{steps}-step" if student else f"teacher DDIM-{steps}" + (f" CFG {guidance:g}" if cfg else "")
    if show_uncond and cfg:  # a non-default unconditional half, named (and so keyed in the reference cache)
        name += f" drop {'+'.join(drop)}"
    name += f" w{window}o{overlap}" + ("" if weights == "triangular" else f" {weights}")
    return Sampler(name, per_window, fn, windows=(window, overlap))


def nfe_per_frame(nfe_per_window: int, num_frames: int, window: int, overlap: int) -> float:
    """Network evaluations per output frame, counted in frames: each window's ``nfe_per_window`` evaluations process
    ``window`` frames, so independent windows cost ``nfe_per_window`` per frame and overlaps add their share."""
    from dancelcm.diffusion.windows import window_starts

    size = min(window, num_frames)
    return nfe_per_window * len(window_starts(num_frames, window, overlap)) * size / num_frames
