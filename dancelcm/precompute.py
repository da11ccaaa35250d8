"""``python -m dancelcm.precompute``: Wan2.2-Animate's encoders over a dataset, once, before training.

For every clip of the chosen splits (fixed windows: ``splits.<split>`` evenly spaced clips per video, the first
face-visible frame as reference, as the datamodule's evaluation clips are cut) it runs the model's VAE, CLIP
vision and umT5 encoders through ``WanAnimatePipeline``'s own helpers (:mod:`dancelcm.models.wan.inputs`) and
writes one safetensors file per clip:

    <out>/manifest.json                         model, sizes, prompt, counts (a changed model or size stops a rerun)
    <out>/prompts/<key>.safetensors             prompt_embeds, negative_prompt_embeds  (max_sequence_length, D), one
                                                file per distinct prompt: ``prompt`` for every clip, or a video's
                                                own ``videos/<id>/prompt.txt`` (key: a hash of the text)
    <out>/<split>/<video_id>/clip_000.safetensors
        latents            (C, 1 + T, h, w)    x0: the reference latent, then the clip's VAE latents
        reference_latents  (4 + C, 1 + T, h, w) mask + reference latent, then the first segment's conditioning
        pose_latents       (C, T, h, w)
        image_embeds       (L, D)              CLIP vision features of the reference frame
        face               (F, 3, S, S) uint8  the driving face video (per-frame crops; black without a face)
        face_latents       (C, 1, s/8, s/8)    the reference face crop (data.face_size) through the VAE (the
                                               student's optional extra face path, method.face.enabled)
        frame_index, reference_index           where the clip lies in its video (for ground-truth frames)

``out`` defaults to ``<data.root>/precomputed/<name>``. Resumable: a clip file is written to a temporary name and
renamed, so a finished file is complete and a rerun skips it (``overwrite=true`` redoes them). Clips that fail to
load are counted, listed and skipped; the command exits non-zero if any failed. Training then holds only the
transformer (``model=wan_animate``, ``data=precomputed``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch

from dancelcm.cli import ConfigError, PathExistsError, UserError, command

log = logging.getLogger(__name__)
FORMAT = 1


def model_signature(path: Path) -> dict:
    """What the stored features depend on: the configs of the model's encoders (not their weights' bytes: a 60 GB
    hash per run is too slow; a different checkpoint of the same architecture is the user's responsibility)."""
    sig = {}
    for sub in ("vae/config.json", "text_encoder/config.json", "image_encoder/config.json", "transformer/config.json"):
        f = path / sub
        cfg = json.loads(f.read_text()) if f.is_file() else {}
        sig[sub] = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return sig


def _save(tensors: dict, path: Path, metadata: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def run(cfg) -> dict:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from dancelcm.data.dataset import DataError, face_video_from_clip
    from dancelcm.models.wan.inputs import WanAnimateEncoders, check_model_folder, to_pil

    check_model_folder(cfg.model.path)  # the required option first
    if cfg.latent_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"latent_dtype={cfg.latent_dtype}: choose float32 or bfloat16")
    dm = instantiate(cfg.data)
    if dm.clip.num_frames % 4 != 1:
        raise ConfigError(
            f"data.num_frames={dm.clip.num_frames}: Wan2.2-Animate clips have 4k + 1 frames (the VAE compresses time "
            "4x after the first frame); use e.g. 9, 17, 33 or 77"
        )
    height, width = (dm.resolution, dm.resolution) if isinstance(dm.resolution, int) else tuple(dm.resolution)
    if dm.face_size % 8:
        raise ConfigError(
            f"data.face_size={dm.face_size}: the reference face crop goes through the Wan VAE (8x); use a multiple of 8"
        )
    enc = WanAnimateEncoders(cfg.model.path, device=cfg.device, max_sequence_length=int(cfg.max_sequence_length))
    face_size = int(cfg.face_size or enc.face_size)
    dtype = getattr(torch, cfg.latent_dtype)
    out = Path(cfg.out) if cfg.out else Path(dm.root) / "precomputed" / cfg.name
    manifest = {
        "format": FORMAT,
        "model_path": str(Path(cfg.model.path).resolve()),
        "model": model_signature(Path(cfg.model.path)),
        "data_root": str(Path(dm.root).resolve()),
        "height": height,
        "width": width,
        "num_frames": dm.clip.num_frames,
        "stride": dm.clip.stride,
        "face_size": face_size,
        "reference_face_size": dm.face_size,
        "face_scale": dm.face_scale,
        "prompt": cfg.prompt,
        "negative_prompt": cfg.negative_prompt,
        "max_sequence_length": int(cfg.max_sequence_length),
        "latent_dtype": cfg.latent_dtype,
        "latent_channels": enc.latent_channels,
        "motion_encoder_size": enc.face_size,
    }
    # everything the stored tensors depend on: a rerun with another value would mix clips made two ways
    fixed = ("model", "data_root", "height", "width", "num_frames", "stride", "face_size", "reference_face_size",
             "face_scale", "prompt", "negative_prompt", "max_sequence_length", "latent_dtype")  # fmt: skip
    per_video = {k: int(v) for k, v in OmegaConf.to_container(cfg.splits).items()}
    mf = out / "manifest.json"
    if mf.is_file():
        old = json.loads(mf.read_text())
        changed = [k for k in fixed if old.get(k) != manifest[k]]
        # clip files are named by their slot in the video: another spacing of the windows would reuse them wrongly
        changed += [
            f"splits.{s}={n} (was {old['splits'][s]['clips_per_video']})"
            for s, n in per_video.items()
            if s in old.get("splits", {}) and old["splits"][s]["clips_per_video"] != n
        ]
        if changed:
            raise PathExistsError(
                f"out={out}: holds clips precomputed with other {', '.join(changed)}; they cannot be mixed. Choose "
                "another name= (or out=), or delete that folder to start over"
            )
        manifest["splits"] = old.get("splits", {})
    elif out.exists() and any(out.iterdir()):
        raise PathExistsError(f"out={out}: the folder holds other files and no manifest.json; choose another out=")
    out.mkdir(parents=True, exist_ok=True)
    from dancelcm.data.layout import write_json

    write_json(mf, manifest)  # first: a run stopped part-way resumes (its finished clip files are kept)
    manifest.setdefault("prompts", {})

    def prompt_key(text: str) -> str:
        """The prompt's features, encoded once (``prompts/<key>.safetensors``); returns the key."""
        key = hashlib.sha1(text.encode()).hexdigest()[:16]
        path = out / "prompts" / f"{key}.safetensors"
        if not path.is_file() or cfg.overwrite and key not in encoded:
            pos, neg = enc.encode_prompt(text, cfg.negative_prompt)
            _save(
                {"prompt_embeds": pos[0].to(dtype), "negative_prompt_embeds": neg[0].to(dtype)}, path, {"prompt": text}
            )
        encoded.add(key)
        manifest["prompts"][key] = text
        return key

    encoded: set[str] = set()
    prompt_key(cfg.prompt)

    summary: dict = {"out": str(out), "written": 0, "done_before": 0, "failed": [], "splits": {}}
    started = time.time()
    for split, n_clips in per_video.items():
        ds = dm.dataset(split, train=False, clips_per_video=n_clips)
        clips = []
        bar = tqdm(range(len(ds)), desc=f"precompute {split}", unit="clip", dynamic_ncols=True)
        for i in bar:
            e = ds.entries[i // ds.clips_per_video]
            rel = Path(split) / e.video_id / f"clip_{i % ds.clips_per_video:03d}.safetensors"
            path = out / rel
            own = Path(e.directory) / "prompt.txt"  # a video's own prompt, else the one for every clip
            text = own.read_text().strip() if own.is_file() else cfg.prompt
            if path.is_file() and not cfg.overwrite:
                summary["done_before"] += 1
                clips.append({"file": str(rel), "video_id": e.video_id, "index": i, "prompt": prompt_key(text)})
                continue
            try:
                sample = ds.load(i)
            except DataError as err:
                summary["failed"].append({"video_id": e.video_id, "clip": i % ds.clips_per_video, "error": str(err)})
                log.warning("skipped %s clip %d: %s", e.video_id, i % ds.clips_per_video, err)
                continue
            face = face_video_from_clip(sample["video"], sample["face_boxes"], sample["face_boxes_valid"], face_size)
            inputs = enc.encode_clip(
                to_pil(sample["reference"][None])[0], to_pil(sample["pose"]), to_pil(face), height, width,
                video=to_pil(sample["video"]),
            )  # fmt: skip
            face_u8 = ((face + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # exactly the PIL frames encoded
            tensors = {
                k: inputs[k][0].to(dtype) for k in ("latents", "reference_latents", "pose_latents", "image_embeds")
            }
            # the reference face crop (data.face_size) as VAE latents: the student's optional extra face path
            reference_face = to_pil(sample["face"][None])[0]
            tensors["face_latents"] = enc.encode_face(reference_face, reference_face.size[0])[0].to(dtype)
            tensors |= {
                "face": face_u8,
                "frame_index": sample["frame_index"],
                "reference_index": sample["reference_index"].reshape(1),
            }
            _save(tensors, path, {"video_id": e.video_id, "split": split})
            summary["written"] += 1
            clips.append({"file": str(rel), "video_id": e.video_id, "index": i, "prompt": prompt_key(text)})
        manifest.setdefault("splits", {})[split] = {"clips": clips, "clips_per_video": n_clips}
        write_json(mf, manifest)
        summary["splits"][split] = len(clips)
    manifest["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(mf, manifest)
    log.info(
        "precomputed %s: %d clips written, %d done before, %d failed, %.1f s -> %s",
        summary["splits"], summary["written"], summary["done_before"], len(summary["failed"]),
        time.time() - started, out,
    )  # fmt: skip
    if summary["failed"]:
        raise UserError(
            f"{len(summary['failed'])} clips failed to load (listed above; first: {summary['failed'][0]}); the others "
            f"are in {out}. Fix or remove those videos and run the command again (finished clips are kept)"
        )
    return summary


main = command("precompute", run, __doc__)


if __name__ == "__main__":
    main()
