"""The evaluation loop: every sampler over the held-out clips from the same initial noise per clip, scored per
clip (:mod:`dancelcm.metrics.quality`) and over all frames (Frechet distances); the samplers an evaluate config
asks for; and the cache of the reference sampler's videos."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig

from dancelcm.cli import ConfigError
from dancelcm.diffusion.windows import window_borders
from dancelcm.evaluation.metrics import check_registered
from dancelcm.metrics.quality import clip_metrics, clip_metrics_vs, clip_regions, seam_ratio
from dancelcm.sampling import (
    Sampler,
    clip_noise,
    copy_reference,
    long_video_sampler,
    nfe_per_frame,
    student_sampler,
    teacher_sampler,
)

log = logging.getLogger(__name__)


class ReferenceCache:
    """The reference sampler's videos per clip index in one file (float16), valid for one ``key``: the teacher,
    its sampler, the seed and the data the clips come from. A file made under another key is not used."""

    def __init__(self, path: str | Path, key: dict):
        self.path, self.key = Path(path), json.dumps(key, sort_keys=True)
        self.videos: dict[int, torch.Tensor] = {}
        self.seconds: dict[int, float] = {}
        self.dirty = False
        if self.path.exists():
            data = torch.load(self.path, weights_only=True)
            if data.get("key") == self.key:
                self.videos, self.seconds = data["videos"], data["seconds"]
                log.info("reference cache %s: %d clips", self.path, len(self.videos))
            else:
                log.warning("reference cache %s was made for another teacher/sampler/data; recomputing", self.path)

    def get(self, clip_index: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        ids = [int(i) for i in clip_index]
        if not all(i in self.videos for i in ids):
            return None
        return torch.stack([self.videos[i] for i in ids]).float(), sum(self.seconds[i] for i in ids)

    def put(self, clip_index: torch.Tensor, video: torch.Tensor, seconds: float) -> None:
        for i, v in zip(clip_index, video):
            self.videos[int(i)] = v.detach().cpu().half()
            self.seconds[int(i)] = seconds / len(video)
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            torch.save({"key": self.key, "videos": self.videos, "seconds": self.seconds}, tmp)
            tmp.replace(self.path)
            self.dirty = False


@torch.no_grad()
def evaluate(
    samplers: list[Sampler],
    loader,
    latent_shape: Callable[[dict], tuple[int, ...]],
    feature_net=None,
    seed: int = 0,
    max_clips: int | None = None,
    device: str = "cpu",
    reference: str | None = None,
    perceptual=None,
    keep_clips: int = 0,
    reference_cache: ReferenceCache | None = None,
) -> dict:
    """Run every sampler over the loader; returns ``{sampler: {metric: {mean, std, n}}, ...}`` and per-clip rows.

    ``reference`` names one of the samplers (e.g. the teacher's DDIM-50 + CFG): every sampler then also
    gets ``psnr_vs_teacher``, its PSNR against that sampler's output from the same noise. With
    ``reference_cache`` the reference's videos (and their measured seconds) are read from there when
    present and added to it otherwise, so evaluating many students against one teacher runs it once.
    """

    order = sorted(samplers, key=lambda s: s.name != reference)  # the reference runs first
    from tqdm.auto import tqdm

    from dancelcm.metrics.features import frame_features, frechet_distance

    results: dict[str, dict] = {
        s.name: {"nfe": s.nfe, "seconds": 0.0, "clips": 0, "per_clip": {}, "video_ids": []} for s in samplers
    }
    feats: dict[str, list[torch.Tensor]] = {s.name: [] for s in samplers} | {"__real__": []}
    # LPIPS / FID / FID-VID / FVD feature sets when their networks were given: {sampler: {metric: [tensors]}}
    pfeats: dict[str, dict[str, list[torch.Tensor]]] = {s.name: {} for s in samplers} | {"__real__": {}}

    def add_perceptual(name: str, video: torch.Tensor) -> None:
        if perceptual:
            for k, v in perceptual.features(video).items():
                pfeats[name].setdefault(k, []).append(v)

    kept: dict[str, torch.Tensor] = {}  # the first keep_clips clips of every sampler, for samples.{mp4,png}
    kept_batch: dict | None = None
    seen = 0
    total = min(len(loader.dataset), max_clips or len(loader.dataset))
    bar = tqdm(total=total * len(samplers), desc="evaluating", unit="clip")
    for batch in loader:
        if max_clips is not None and seen >= max_clips:
            break
        if max_clips is not None:
            keep = max_clips - seen
            batch = {k: v[:keep] for k, v in batch.items()}
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        b = batch["video"].shape[0]
        seen += b
        noise = clip_noise(batch["clip_index"], latent_shape(batch), seed).to(device)
        if feature_net is not None:
            feats["__real__"].append(frame_features(feature_net, batch["video"].cpu()))
        add_perceptual("__real__", batch["video"])
        ref_video = None
        regions = clip_regions(batch)
        if keep_clips and kept_batch is None:
            kept_batch = {k: (v[:keep_clips].cpu() if torch.is_tensor(v) else v[:keep_clips]) for k, v in batch.items()}
        for s in order:
            cached = reference_cache.get(batch["clip_index"]) if (reference_cache and s.name == reference) else None
            if cached is not None:
                video, dt = cached[0].to(device), cached[1]
            else:
                t0 = time.perf_counter()
                video = s.fn(batch, noise)
                dt = time.perf_counter() - t0
                if reference_cache is not None and s.name == reference:
                    video = video.half().float()  # as stored: the run that fills the cache scores what later ones read
                    reference_cache.put(batch["clip_index"], video, dt)
                    reference_cache.save()  # per batch: an interrupted evaluation keeps what the teacher made
            r = results[s.name]
            r["seconds"] += dt
            r["clips"] += b
            metrics = clip_metrics(video, batch, regions)
            if s.windows is not None:  # a long-video sampler: how much it jumps at its window borders
                metrics["seam"] = seam_ratio(video, batch["video"], window_borders(video.shape[1], *s.windows))
                r["frames"] = video.shape[1]
            lp = perceptual.lpips(video, batch["video"]) if perceptual else None
            if lp is not None:
                metrics["lpips"] = lp
            if s.name == reference:
                ref_video = video
            elif ref_video is not None:  # the reference itself would score infinity
                metrics |= clip_metrics_vs(video, ref_video, regions)
            for k, v in metrics.items():
                r["per_clip"].setdefault(k, []).extend(v.cpu().tolist())
            if feature_net is not None:
                feats[s.name].append(frame_features(feature_net, video.cpu()))
            add_perceptual(s.name, video)
            if keep_clips and s.name not in kept:
                kept[s.name] = video[:keep_clips].cpu()
            r["video_ids"].extend(batch["video_id"])
            bar.update(b)
    bar.close()
    if reference_cache is not None:
        reference_cache.save()
    summary = {}
    for s in samplers:
        r = results[s.name]
        entry = {"nfe": r["nfe"], "seconds_per_clip": r["seconds"] / max(r["clips"], 1), "clips": r["clips"]}
        if s.windows is not None and r.get("frames"):
            entry["nfe_per_frame"] = nfe_per_frame(r["nfe"], r["frames"], *s.windows)
            entry["seconds_per_frame"] = entry["seconds_per_clip"] / r["frames"]
        for k, vals in r["per_clip"].items():
            t = torch.tensor(vals, dtype=torch.float64)
            ok = t[~torch.isnan(t)]
            entry[k] = {
                "mean": ok.mean().item() if len(ok) else math.nan,
                "std": ok.std().item() if len(ok) > 1 else math.nan,
                "n": len(ok),
            }
        if feature_net is not None:
            entry["fd"] = frechet_distance(torch.cat(feats[s.name]), torch.cat(feats["__real__"]))
        for k, parts in pfeats[s.name].items():  # fid, fvd, fid_vid
            entry[k] = frechet_distance(torch.cat(parts), torch.cat(pfeats["__real__"][k]))
        check_registered(k for k in entry if k != "clips")  # a number no table would show
        summary[s.name] = entry
    return {
        "kept": ({"batch": kept_batch, "samples": {s.name: kept[s.name] for s in samplers}} if kept else None),
        "samplers": summary,
        "per_clip": {s.name: results[s.name]["per_clip"] for s in samplers},
        "video_ids": {s.name: results[s.name]["video_ids"] for s in samplers},
    }


def build_samplers(cfg: DictConfig, bundle, device: str) -> tuple[list[Sampler], str | None]:
    """The samplers an evaluate config asks for (copy-reference, the teacher's DDIM steps x CFG scales, the
    ``vs_teacher`` reference, each student at each step count) and the reference sampler's name (or None)."""
    from dancelcm.models.bundle import bundle_uncond, load_bundle

    samplers = []
    if cfg.reference_baseline:
        samplers.append(copy_reference())
    override = cfg.get("uncond")
    try:
        uncond = bundle_uncond(bundle, None if override is None else list(override))
        shown = override is not None and uncond != bundle_uncond(bundle)  # named in the table when not default
    except ValueError as e:
        raise ConfigError(str(e)) from e
    long = cfg.get("long_clip")
    if long:  # every sampler over the whole clip, in windows of the bundle's training length, once per overlap
        long = {} if long is True else long
        window = int(long.get("window") or bundle.meta.get("data", {}).get("num_frames", 8))
        overlaps = [int(o) for o in long.get("overlaps", [0, 2, 4])]
        weights = str(long.get("weights", "triangular"))
        if not overlaps:
            raise ConfigError("long_clip.overlaps=[]: give at least one overlap (0: independent windows)")
        frames = int(cfg.data.get("num_frames", 0))
        if frames <= window:
            raise ConfigError(
                f"long_clip with data.num_frames={frames}: a clip no longer than the window ({window}) is one window; "
                f"set data.num_frames to the videos' length (e.g. 24 for the synthetic test split at stride 2)"
            )
        ref = long.get("reference_overlap")
        ref_overlap = int(ref) if ref is not None else max(overlaps)

        def teacher_at(n: int, g: float, overlap: int) -> Sampler:
            try:
                return long_video_sampler(bundle, n, g, window, overlap, weights, uncond, show_uncond=shown)
            except ValueError as e:
                raise ConfigError(f"long_clip: {e}") from e

    for steps in cfg.teacher_steps:
        for g in cfg.guidance:
            if long:
                samplers += [teacher_at(int(steps), float(g), o) for o in overlaps]
            else:
                samplers.append(teacher_sampler(bundle, int(steps), float(g), uncond, shown))
    reference = None
    if cfg.vs_teacher:
        n, g = int(cfg.vs_teacher.steps), float(cfg.vs_teacher.guidance)
        ref = teacher_at(n, g, ref_overlap) if long else teacher_sampler(bundle, n, g, uncond, shown)
        reference = ref.name
        if all(sp.name != ref.name for sp in samplers):
            samplers.append(ref)
    for label, directory in (cfg.students or {}).items():
        sb = load_bundle(directory, option=f"students.{label}").to(device)
        for steps in cfg.student_steps:
            try:
                if long:
                    specs = [
                        long_video_sampler(sb, int(steps), 1.0, window, o, weights, seed=cfg.seed) for o in overlaps
                    ]
                else:
                    specs = [student_sampler(sb, int(steps), cfg.seed)]
            except ValueError as e:
                raise ConfigError(f"students.{label}={directory}, student_steps: {e}") from e
            for spec in specs:
                spec.name = f"{label} {spec.name}"
                samplers.append(spec)
    return samplers, reference


def reference_cache(cfg: DictConfig, reference: str | None) -> ReferenceCache | None:
    """``cfg.reference_cache``'s file for the reference sampler, keyed by the teacher's contents (its bundle
    fingerprint: the same files anywhere, e.g. in a git worktree, share a cache; a retrained teacher does not), the
    sampler, the seed and the clips' data; None without a reference or a file."""
    from dancelcm.models.bundle import bundle_fingerprint

    if not (reference and cfg.get("reference_cache")):
        return None
    d = cfg.data
    key = {
        "teacher": bundle_fingerprint(cfg.teacher),
        "sampler": reference,
        "seed": int(cfg.seed),
        "data": [str(Path(d.root).resolve())]
        + [d.get(k) for k in ("val_split", "val_clips_per_video", "num_frames", "stride", "resolution")],
    }
    return ReferenceCache(cfg.reference_cache, key)
