"""Clips precomputed by ``python -m dancelcm.precompute`` (Wan2.2-Animate's encoder outputs), served as batches.

A batch holds what the transformer reads, and nothing needs the VAE or the text / image encoders:

- ``latents`` ``(B, C, 1 + T, h, w)``: x0 (the reference latent in frame 0, then the clip's latents);
- ``reference_latents``, ``pose_latents``, ``image_embeds``: as the pipeline builds them;
- ``prompt_embeds`` / ``negative_prompt_embeds``: the clip's prompt's umT5 features (precompute's ``prompt``, or
  the video's own ``prompt.txt``);
- ``face_pixel_values`` ``(B, 3, F, S, S)`` in ``[-1, 1]``: the stored face crops resized to the motion encoder's
  ``S`` by diffusers' ``VideoProcessor`` exactly as ``WanAnimatePipeline`` resizes a face video;
- ``video_id``, ``clip_index``, ``frame_index``, ``reference_index``: where the clip comes from.

With ``frames`` (validation and ``evaluate``: ground truth to score samples against) each item also holds the clip as
the source dataset serves it (``video``, ``pose``, ``reference``, masks, keypoints): the same fixed window,
re-read from ``<manifest data_root>`` by the datamodule's own dataset.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dancelcm.cli import MissingPathError

log = logging.getLogger(__name__)
STORED = ("latents", "reference_latents", "pose_latents", "image_embeds")


def read_manifest(root: str | Path, option: str = "data.root") -> dict:
    mf = Path(root) / "manifest.json"
    if not mf.is_file():
        raise MissingPathError(
            f"{option}={root}: no precomputed clips there (manifest.json missing). Make them with `python -m "
            "dancelcm.precompute model.path=WAN_DIR data.root=DATASET ...`, which writes <DATASET>/precomputed/<name>"
        )
    return json.loads(mf.read_text())


def clip_geometry(root: str | Path) -> dict:
    """The precomputed clips' geometry and prompt as a model bundle records its training data (``resolution`` as
    ``[H, W]``, ``num_frames`` and ``stride`` in source frames, the reference ``face_size`` / ``face_scale``,
    ``prompt``, ``negative_prompt``); {} where there is no manifest yet (the data module names that problem)."""
    try:
        m = read_manifest(root)
    except MissingPathError:
        return {}
    keys = {"num_frames": "num_frames", "stride": "stride", "face_size": "reference_face_size",
            "face_scale": "face_scale", "prompt": "prompt", "negative_prompt": "negative_prompt"}  # fmt: skip
    out = {k: m[src] for k, src in keys.items() if src in m}  # (older manifests lack some)
    if "height" in m and "width" in m:
        out["resolution"] = [m["height"], m["width"]]
    return out


class PrecomputedClips(Dataset):
    def __init__(
        self,
        root: str | Path,
        split: str,
        dtype: torch.dtype = torch.float32,
        frames: bool = False,
        clips_per_video: int | None = None,
    ):
        self.root = Path(root)
        self.manifest = read_manifest(root)
        splits = self.manifest.get("splits", {})
        if split not in splits or not splits[split]["clips"]:
            raise MissingPathError(
                f"data.root={root}: no precomputed clips of split '{split}' (it has {sorted(splits)}); add it with "
                f"`python -m dancelcm.precompute ... splits.{split}=N`"
            )
        self.split, self.per_video = split, int(splits[split]["clips_per_video"])
        # at most clips_per_video of each video's fixed clips (evaluate's one clip per held-out video)
        keep = self.per_video if clips_per_video is None else int(clips_per_video)
        self.clips = [c for c in splits[split]["clips"] if c.get("index", 0) % self.per_video < keep]
        self.dtype = dtype
        self.frames = frames
        self._source = None
        self._prompts: dict[str, dict] = {}
        self._processor = None

    def __len__(self) -> int:
        return len(self.clips)

    def prompt(self, key: str) -> dict[str, torch.Tensor]:
        if key not in self._prompts:
            from safetensors.torch import load_file

            self._prompts[key] = load_file(str(self.root / "prompts" / f"{key}.safetensors"))
        return self._prompts[key]

    def face_pixel_values(self, face_u8: torch.Tensor) -> torch.Tensor:
        """uint8 crops ``(F, 3, s, s)`` -> ``(3, F, S, S)`` in [-1, 1], resized as the pipeline resizes a face video."""
        from diffusers.video_processor import VideoProcessor
        from PIL import Image

        if self._processor is None:
            self._processor = VideoProcessor(vae_scale_factor=8)
        size = int(self.manifest["motion_encoder_size"])
        frames = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in face_u8]
        return self._processor.preprocess_video(frames, height=size, width=size)[0]

    def source(self):
        """The source dataset's clips of this split, cut as ``precompute`` cut them (its fixed windows)."""
        if self._source is None:
            from dancelcm.data.datamodule import PoseVideoDataModule

            m = self.manifest
            dm = PoseVideoDataModule(
                root=m["data_root"], num_frames=m["num_frames"], stride=m["stride"],
                resolution=[m["height"], m["width"]], face_scale=m["face_scale"], num_workers=0, generate=False,
            )  # fmt: skip
            self._source = dm.dataset(self.split, train=False, clips_per_video=self.per_video)
        return self._source

    def __getitem__(self, index: int) -> dict:
        from safetensors.torch import load_file

        clip = self.clips[index]
        stored = load_file(str(self.root / clip["file"]))
        item = {}
        if self.frames:
            if "index" not in clip:
                raise MissingPathError(f"{self.root}: made by an older precompute; run it again to add clip indices")
            item = self.source().load(int(clip["index"]))
            if not torch.equal(item["frame_index"], stored["frame_index"]):
                raise MissingPathError(
                    f"{self.root / clip['file']}: the source dataset at {self.manifest['data_root']} no longer cuts "
                    "this clip as it was precomputed (changed videos?); run precompute again"
                )
        item |= {k: stored[k].to(self.dtype) for k in STORED}
        if "face_latents" in stored:  # the reference face's VAE latents (the student's optional extra face path)
            item["face_latents"] = stored["face_latents"].to(self.dtype)
        item |= {k: v.to(self.dtype) for k, v in self.prompt(clip["prompt"]).items()}
        item["face_pixel_values"] = self.face_pixel_values(stored["face"]).to(self.dtype)
        item["frame_index"] = stored["frame_index"]
        item["reference_index"] = stored["reference_index"][0]
        item["clip_index"] = torch.tensor(index)
        item["video_id"] = clip["video_id"]
        return item


class PrecomputedDataModule(L.LightningDataModule):
    """Batches of precomputed clips (``data=precomputed``): shuffled training clips, fixed validation clips."""

    def __init__(
        self,
        root: str,
        batch_size: int = 1,
        val_batch_size: int = 1,
        num_workers: int = 2,
        val_frames: bool = True,
        val_clips_per_video: int | None = None,
        synthesize: dict | None = None,
        train_split: str = "train",
        val_split: str = "test",
        seed: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.root = root
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self.val_frames, self.val_clips_per_video = val_frames, val_clips_per_video
        if synthesize:
            raise ValueError("data.synthesize: precomputed clips are never generated; leave it unset")
        self.train_split, self.val_split = train_split, val_split
        self.train_dataset: PrecomputedClips | None = None
        self.val_dataset: PrecomputedClips | None = None

    def setup(self, stage: str | None = None) -> None:
        self.manifest = read_manifest(self.root)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = PrecomputedClips(self.root, self.train_split)
        evaluating = stage in (None, "fit", "validate", "test", "predict")
        if evaluating and self.val_dataset is None and self.val_split in self.manifest.get("splits", {}):
            self.val_dataset = PrecomputedClips(
                self.root, self.val_split, frames=self.val_frames, clips_per_video=self.val_clips_per_video
            )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by ``seed`` and sharded over the ranks so that the global batch of a step is the same clips on any
        number of processes (rank r takes every world-th clip of the epoch's permutation)."""
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        sampler = DistributedSampler(
            self.train_dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed, drop_last=True
        )
        return DataLoader(
            self.train_dataset, self.batch_size, sampler=sampler, num_workers=self.num_workers,
            pin_memory=self.pin_memory, drop_last=True, persistent_workers=self.num_workers > 0,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            return []
        return DataLoader(self.val_dataset, self.val_batch_size, num_workers=self.num_workers)
