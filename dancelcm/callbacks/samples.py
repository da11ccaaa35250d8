"""Fixed-seed sample videos at each validation: mp4 + PNG strip, through every logger."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import lightning as L
import torch

from dancelcm.media import write_samples
from dancelcm.metrics.quality import clip_sharpness, psnr

log = logging.getLogger(__name__)


class SampleVideos(L.Callback):
    """At each validation end (rank 0): sample the first ``num_clips`` validation clips with fixed noise,
    write ``samples/step_XXXXXXX.{mp4,png}`` in the run folder, log PSNR (whole frame and figure), the
    sharpness ratio and the media to the loggers. ``mp4=False`` writes the PNG strip only (a machine
    without an h264 encoder: PyAV is needed for the mp4)."""

    def __init__(self, num_clips: int = 4, every_n_validations: int = 1, seed: int = 0, mp4: bool = True):
        self.num_clips, self.every, self.seed, self.mp4 = num_clips, every_n_validations, seed, mp4
        self._batch: dict | None = None
        self._count = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and self._batch is None:
            self._batch = {
                k: (v[: self.num_clips] if torch.is_tensor(v) or isinstance(v, list) else v) for k, v in batch.items()
            }

    def on_validation_epoch_end(self, trainer, pl_module):
        self._count += 1
        if trainer.sanity_checking or self._batch is None or (self._count - 1) % self.every:
            return
        sharded = getattr(pl_module, "sharded", False)  # FSDP: sampling is a collective; every rank samples
        if not trainer.is_global_zero and not sharded:
            return
        batch = {k: (v.to(pl_module.device) if torch.is_tensor(v) else v) for k, v in self._batch.items()}
        samples = pl_module.sample_for_logging(batch, seed=self.seed)
        if not trainer.is_global_zero:
            return
        out_dir = Path(trainer.default_root_dir) / "samples"
        mp4, png = write_samples(out_dir, f"step_{trainer.global_step:07d}", batch, samples, mp4=self.mp4)
        metrics = {}
        for name, video in samples.items():
            metrics[f"val/psnr_{name}"] = psnr(video, batch["video"]).mean().item()
            # 1 = as sharp as the ground truth, < 1 blurry, > 1 noisy (whole-frame PSNR rewards blur); around
            # the figure when the data has its mask, as the evaluation measures it
            metrics[f"val/sharpness_{name}"] = clip_sharpness(video, batch).mean().item()
            if "figure_mask" in batch:
                metrics[f"val/psnr_figure_{name}"] = psnr(video, batch["video"], batch["figure_mask"]).nanmean().item()
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
            if type(lg).__name__ == "WandbLogger":
                import wandb

                media = {"samples/strip": wandb.Image(str(png))}
                if mp4 is not None:
                    media["samples/video"] = wandb.Video(str(mp4))
                # like the metrics: against the logged key trainer/global_step, never W&B's own step, which is
                # ahead of global_step after a few log calls and drops a log "less than the current step"
                lg.log_metrics(media, step=trainer.global_step)
        log.info(
            "samples at step %d: %s (%s)",
            trainer.global_step,
            mp4 or png,
            ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()),
        )


class ExportBundle(L.Callback):
    """Writes the model (EMA weights when present) as a bundle folder every ``every_n_steps`` and at the
    end of training: ``<run>/export/`` is what gets shipped or loaded by later stages.

    ``keep_at_steps`` also keeps a snapshot at each of those steps in ``<run>/exports/step_NNNNNNN/``, never
    overwritten: a convergence study evaluates one run at several budgets. Lightning runs ``ModelCheckpoint`` after
    this one, but the preemption and final checkpoints may be written before it: a run resumed at exactly a snapshot
    step writes the missing snapshot at once (the loaded weights are that step's); a run resumed past a step whose
    snapshot is missing (an older run) says so rather than pretend."""

    def __init__(self, every_n_steps: int | None = 500, dirname: str = "export", keep_at_steps=()):
        self.every, self.dirname = every_n_steps, dirname
        self.keep = sorted({int(s) for s in keep_at_steps or ()})
        if any(s <= 0 for s in self.keep):
            raise ValueError(f"callbacks.export_at_steps={self.keep}: steps must be positive optimizer steps")

    @staticmethod
    def snapshot_dir(run_dir, step: int) -> Path:
        return Path(run_dir) / "exports" / f"step_{step:07d}"

    def _export(self, trainer, pl_module, d: Path | None = None):
        from dancelcm.models.bundle import save_bundle

        # written beside the export, then swapped in: a kill mid-write never leaves a half-written export
        # (between the two renames the previous one is complete in .export.old)
        d = d or Path(trainer.default_root_dir) / self.dirname
        new, old = d.with_name(f".{d.name}.new"), d.with_name(f".{d.name}.old")
        if trainer.is_global_zero:
            d.parent.mkdir(parents=True, exist_ok=True)
            for stale in (new, old):
                shutil.rmtree(stale, ignore_errors=True)
        if hasattr(pl_module, "write_export"):  # every rank: FSDP gathers the weights (rank 0 writes)
            pl_module.write_export(new)
        elif trainer.is_global_zero:
            save_bundle(new, pl_module.sampling_net, pl_module.bundle_meta(), autoencoder=pl_module.autoencoder)
        if trainer.is_global_zero:
            if d.exists():
                d.rename(old)
            new.rename(d)
            shutil.rmtree(old, ignore_errors=True)
            log.info("exported the model at step %d to %s", trainer.global_step, d)

    def on_train_start(self, trainer, pl_module):
        step = trainer.global_step
        if step in self.keep and not (self.snapshot_dir(trainer.default_root_dir, step) / "bundle.json").exists():
            # resumed from a checkpoint of exactly this step (a preemption's or the final one, which other callbacks
            # write before this one) without its snapshot: the weights now loaded are that step's
            self._export(trainer, pl_module, self.snapshot_dir(trainer.default_root_dir, step))
        missed = [
            s
            for s in self.keep
            if s < trainer.global_step and not (self.snapshot_dir(trainer.default_root_dir, s) / "bundle.json").exists()
        ]
        if missed and trainer.is_global_zero:
            log.warning(
                "resumed at step %d without the export snapshots of steps %s (callbacks.export_at_steps): they "
                "cannot be made any more; train a fresh run to have them",
                trainer.global_step,
                missed,
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == getattr(self, "_done", None):  # gradient accumulation: several batches end at one step
            return
        self._done = step
        if step in self.keep:
            self._export(trainer, pl_module, self.snapshot_dir(trainer.default_root_dir, step))
        if self.every and step % self.every == 0 and step > 0:
            self._export(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._export(trainer, pl_module)
