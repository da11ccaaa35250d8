"""LightningDataModule over pose-video-face triplets (real or synthetic, same layout and reader)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from dancelcm.cli import ConfigError, MissingPathError, PathExistsError
from dancelcm.data.dataset import ClipSampler, ClipSpec, ScanReport, TripletDataset, scan_videos
from dancelcm.data.reader import DataError

log = logging.getLogger(__name__)


class PoseVideoDataModule(L.LightningDataModule):
    """Scans the train and validation splits once in ``setup`` (bad videos skipped and summarised, or
    raised, per ``on_error``), then serves clips through ``ClipSampler`` (sharded by rank, deterministic
    per seed and epoch) and DataLoader workers. See ``dancelcm/data/dataset.py`` for the batch keys.

    ``synthesize``: optional options for ``dancelcm.data.synthesize``; when given and ``root`` holds no
    dataset yet, ``prepare_data`` (rank 0 only) generates it there.

    ``allow_upsample``: frames smaller than ``resolution`` (in either dimension) stop ``setup`` with an error,
    since a model trained on upsampled frames learns their blur; with ``True`` they are upsampled with a warning.
    """

    def __init__(
        self,
        root: str,
        num_frames: int = 8,
        stride: int = 2,
        resolution: int | tuple[int, int] = 64,
        face_size: int = 32,
        face_scale: float = 1.5,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        clips_per_video: int = 1,
        val_clips_per_video: int = 1,
        train_split: str = "train",
        val_split: str = "test",
        seed: int = 0,
        on_error: str = "skip",
        scan: str = "header",
        pin_memory: bool = False,
        decoded_cache_mb: float = 0.0,
        synthesize: dict | None = None,
        generate: str | bool = "auto",
        default_root: str | None = None,
        allow_upsample: bool = False,
    ):
        super().__init__()
        self.root = str(root)
        self.clip = ClipSpec(num_frames, stride)
        self.resolution = resolution if isinstance(resolution, int) else tuple(resolution)
        self.face_size, self.face_scale = face_size, face_scale
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.clips_per_video, self.val_clips_per_video = clips_per_video, val_clips_per_video
        self.train_split, self.val_split = train_split, val_split
        self.seed, self.on_error, self.scan = seed, on_error, scan
        self.pin_memory = pin_memory
        self.decoded_cache_mb = decoded_cache_mb
        self.synthesize = dict(synthesize) if synthesize else None
        self.allow_upsample = allow_upsample
        if generate not in ("auto", True, False):
            raise ConfigError(f"data.generate={generate!r}: choose auto, true or false")
        self.generate, self.default_root = generate, default_root
        self._resume_position: tuple[int, int] | None = None
        self.reports: dict[str, ScanReport] = {}
        self.train_dataset: TripletDataset | None = None
        self.val_dataset: TripletDataset | None = None

    def prepare_data(self) -> None:
        """Generate the synthetic dancers on first use, but only where that cannot overwrite anything: at the
        configured default location (``data.generate=auto``) or where ``data.generate=true`` asks for it, and
        only into a missing or empty folder. A ``data.root`` the user names that holds no dataset stops here."""
        if self.synthesize is None:
            return
        from dancelcm.data.synthesize import SynthesisConfig, synthesize

        root = Path(self.root)
        info = root / "dataset.json"
        if info.exists():
            self._check_generator(info, SynthesisConfig(**{**self.synthesize, "out_dir": self.root}))
            return
        at_default = self.default_root is not None and root.resolve() == Path(self.default_root).resolve()
        if self.generate is False or (self.generate == "auto" and not at_default):
            raise MissingPathError(
                f"data.root={root}: no dataset there (no dataset.json). Point data.root at a dataset folder, make "
                f"one with `python -m dancelcm.data.synthesize out_dir={root}` (synthetic dancers) or "
                "`python -m dancelcm.data.prepare` (real videos), or add data.generate=true to generate the "
                "synthetic dancers there (an empty or new folder only)"
            )
        if root.is_dir() and any(root.iterdir()):
            raise PathExistsError(
                f"data.root={root}: the folder holds files but no dataset.json; the synthetic dancers are only "
                "generated into a missing or empty folder, never over other files. Choose another data.root"
            )
        log.info("no dataset at %s: generating the synthetic dancers there (%s)", self.root, self.synthesize)
        synthesize(SynthesisConfig(**{**self.synthesize, "out_dir": self.root}))

    @staticmethod
    def _check_generator(info: Path, wanted) -> None:
        """Warn when an existing synthetic dataset was made with other settings than the configured ones (for
        example the 4:2:0 videos of earlier versions: the shipped teacher and feature network saw 4:4:4)."""
        import json

        made = json.loads(info.read_text()).get("generator")
        if made is None:
            return  # not a synthetic dataset
        keys = ("resolution", "crf", "pix_fmt")  # how the frames look (a smaller or other-seed set is fine)
        old = {k: made.get(k, "yuv420p" if k == "pix_fmt" else None) for k in keys}
        diff = {k: (old[k], getattr(wanted, k)) for k in keys if old[k] != getattr(wanted, k)}
        if diff:
            log.warning(
                "%s was generated with other settings than data.synthesize (%s; made, configured). Metrics and "
                "the shipped checkpoints assume the configured data: regenerate with `python -m "
                "dancelcm.data.synthesize out_dir=%s overwrite=true`",
                info,
                ", ".join(f"{k}: {a} vs {b}" for k, (a, b) in diff.items()),
                info.parent,
            )

    def dataset(self, split: str, train: bool, clips_per_video: int) -> TripletDataset:
        """The clips of one split (scanned now): random windows when ``train``, else fixed, evenly spaced ones."""
        report = scan_videos(self.root, split, self.clip, mode=self.scan, on_error=self.on_error)
        self.reports[split] = report
        (log.warning if report.skipped or report.without_keypoints else log.info)(report.summary())
        self._check_resolution(report)
        return TripletDataset(
            report.entries,
            self.clip,
            resolution=self.resolution,
            face_size=self.face_size,
            face_scale=self.face_scale,
            clips_per_video=clips_per_video,
            train=train,
            seed=self.seed,
            on_error=self.on_error,
            decoded_cache_mb=self.decoded_cache_mb,
        )

    def _check_resolution(self, report: ScanReport) -> None:
        """Stop (or, with ``allow_upsample``, warn) when stored frames are smaller than ``resolution``."""
        th, tw = (self.resolution, self.resolution) if isinstance(self.resolution, int) else self.resolution
        small = [e for e in report.entries if e.height < th or e.width < tw]
        if not small:
            return  # downsampling (or none) is what resize-and-crop is for
        sizes = ", ".join(f"{h}x{w}" for h, w in sorted({(e.height, e.width) for e in small}))
        shown = self.resolution if isinstance(self.resolution, int) else list(self.resolution)
        problem = (
            f"data.resolution={shown} ({th}x{tw}, H x W) is larger than the stored frames of {len(small)} "
            f"of {len(report.entries)} videos of split '{report.split}' ({sizes}; e.g. {small[0].video}): they "
            "would be upsampled"
        )
        if self.allow_upsample:
            log.warning("%s (data.allow_upsample=true)", problem)
            return
        max_h, max_w = min(e.height for e in report.entries), min(e.width for e in report.entries)
        raise DataError(
            report.root,
            f"{problem}. Set data.resolution to at most [{max_h},{max_w}], prepare the dataset from source videos "
            f"of at least {th}x{tw} (`python -m dancelcm.data.prepare ... resolution=[{th},{tw}]`), or upsample "
            "anyway with data.allow_upsample=true",
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self.dataset(self.train_split, True, self.clips_per_video)
        if stage in (None, "fit", "validate", "test", "predict") and self.val_dataset is None:
            self.val_dataset = self.dataset(self.val_split, False, self.val_clips_per_video)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, problem) of every video left out by the scans so far."""
        return [s for r in self.reports.values() for s in r.skipped]

    def _loader(self, dataset: TripletDataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=ClipSampler(dataset, shuffle=shuffle, seed=self.seed),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        loader = self._loader(self.train_dataset, self.batch_size, shuffle=True)
        if self._resume_position is not None:
            epoch, batches = self._resume_position
            loader.sampler.resume(epoch, batches * self.batch_size)
            log.info("resuming the training data at epoch %d, batch %d", epoch, batches)
            self._resume_position = None
        return loader

    # -- exact resume: Lightning saves this in checkpoints and restores it before building the loaders ----
    def state_dict(self) -> dict:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        # batches of the current epoch whose optimizer step is done (checkpoints are written after it); none when
        # the last epoch has just ended (a checkpoint at the end of training): its batch count is not reset yet
        epochs = trainer.fit_loop.epoch_progress.current
        between = epochs.processed == epochs.started
        batches = 0 if between else int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        return {"epoch": int(trainer.current_epoch), "batches": batches}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._resume_position = (int(state["epoch"]), int(state["batches"]))

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        return self._loader(self.val_dataset, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
