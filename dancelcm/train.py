"""Train: ``python -m dancelcm.train +experiment=NAME [key=value ...]``.

Composes the config, builds the datamodule and the LightningModule, and runs ``Trainer.fit`` with a
run folder ``${paths.output_dir}/${name}`` (checkpoints, CSV metrics, sample videos, exports).
``ckpt_path=auto`` resumes from that folder's newest readable checkpoint (by recorded step) exactly (weights, EMA,
optimizer, LR schedule, step, data position; the training noise is a function of seed and step). SIGTERM / SIGUSR1
write ``last.ckpt`` after the running step and exit with 128 + the signal number.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dancelcm.cli import MissingPathError, command, quiet_library_handlers

log = logging.getLogger(__name__)


def resolve_ckpt(ckpt_path: str | None, run_dir: Path) -> str | None:
    if ckpt_path in (None, "null", ""):
        return None
    if ckpt_path == "auto":  # the readable checkpoint with the highest recorded step
        from dancelcm.callbacks.checkpoints import resume_checkpoint

        found = resume_checkpoint(run_dir / "checkpoints")
        if found is None:
            log.info("ckpt_path=auto: no readable checkpoint in %s yet, starting fresh", run_dir / "checkpoints")
            return None
        return str(found)
    if not Path(ckpt_path).is_file():
        raise MissingPathError(f"ckpt_path={ckpt_path}: no such checkpoint")
    return ckpt_path


def wandb_mode(configured: str | None) -> str:
    """W&B's mode: ``WANDB_MODE`` from the environment first (a cluster or CI job that sets it offline stays
    offline, whatever the config and the API key say; an explicit ``mode`` argument would override W&B's own
    reading of the variable), then ``logger.wandb.mode``, then online when ``WANDB_API_KEY`` is set, else offline
    (no prompt, no network)."""
    return os.environ.get("WANDB_MODE") or configured or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    loggers = []
    if cfg.logger.csv:
        # A new csv/version_N per launch: Lightning's CSV writer deletes an existing metrics.csv, and a
        # resumed run must not lose the history of the launches before it.
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv"))
    if cfg.logger.get("wandb"):
        w = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
        mode = wandb_mode(w.pop("mode", None))
        group, name = run_identity(cfg)
        w["group"] = w.get("group") or group  # the ablation: its jobs side by side in one W&B group
        w["name"] = w.get("name") or name  # the job's overrides
        loggers.append(
            WandbLogger(
                save_dir=str(run_dir),
                mode=mode,
                id=stable_run_id(run_dir),  # a resumed run continues its W&B run
                resume="allow",
                config=flat_config(cfg),  # flat keys: W&B's run table compares K, motion weight, ... directly
                **w,
            )
        )
    return loggers


def sweep_job_id() -> str:
    """The folder name of a sweep job: the swept overrides (readable, e.g. ``method.face.enabled=true``)
    and the seed, plus a short hash of the job's other science overrides when there are any, so two
    sweeps with different settings never share (and resume) each other's folders. Stable across
    re-launches. Registered as the ``${sweep_job_id:}`` resolver used by ``hydra.sweep.subdir``.

    A job cannot tell which of its command-line overrides were swept (``seed=0,1`` reaches it as
    ``seed=0``), so ``seed`` is always named: ``variant=full,seed=1__<hash>``, not a bare hash."""
    import hashlib

    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    swept = {str(k).lstrip("+~") for k in (hc.sweeper.get("params") or {})}
    exclude = set(hc.job.config.override_dirname.exclude_keys)
    named, rest = [], []
    for override in hc.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in swept or key == "seed":
            named.append((key == "seed", override.lstrip("+~")))
        elif key not in exclude and override.split("=", 1)[0] not in exclude:
            rest.append(override)
    job_id = ",".join(o for _, o in sorted(named)) or "job"
    if rest:
        job_id += "__" + hashlib.sha1(",".join(sorted(rest)).encode()).hexdigest()[:8]
    return job_id


OmegaConf.register_new_resolver("sweep_job_id", sweep_job_id, replace=True)


def run_identity(cfg: DictConfig) -> tuple[str, str]:
    """(W&B group, run name): the ablation (or experiment) and, in a sweep, the job's id."""
    name = str(cfg.name)
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            name = sweep_job_id()
    except Exception:  # not inside a Hydra app (tests composing configs)
        pass
    return str(cfg.get("ablation") or cfg.name), name


def stable_run_id(run_dir: Path) -> str:
    """A W&B run id derived from the run folder: a resumed run logs into the same W&B run."""
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]


def flat_config(cfg: DictConfig) -> dict:
    """The config flattened to ``a/b/c`` keys (W&B's run table compares flat keys side by side)."""
    out = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return out


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list:
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from dancelcm.callbacks.checkpoints import FinalCheckpoint
    from dancelcm.callbacks.health import LossSpikes
    from dancelcm.callbacks.preemption import Preemption
    from dancelcm.callbacks.samples import ExportBundle, SampleVideos

    c = cfg.callbacks
    callbacks = [
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"),
            every_n_train_steps=c.checkpoint_every_n_steps,
            save_last=True,
            save_top_k=1,
            filename="step{step:07d}",
            auto_insert_metric_name=False,
            # one last.ckpt, always overwritten (atomically): a last.ckpt this callback did not write (the
            # preemption handler's) would otherwise make it write last-v1.ckpt from then on
            enable_version_counter=False,
        ),
        LearningRateMonitor(logging_interval="step"),
        Preemption(run_dir / "checkpoints" / "last.ckpt"),
        FinalCheckpoint(run_dir / "checkpoints" / "last.ckpt"),
    ]
    if c.get("sample_videos"):
        callbacks.append(SampleVideos(**c.sample_videos))
    if c.get("export_every_n_steps") is not None or c.get("export_at_steps"):
        callbacks.append(
            ExportBundle(every_n_steps=c.get("export_every_n_steps"), keep_at_steps=c.get("export_at_steps"))
        )
    if c.get("loss_spikes"):
        callbacks.append(LossSpikes(**c.loss_spikes))
    for extra in c.get("extra") or []:  # user callbacks: {_target_: module.Class, ...}
        callbacks.append(instantiate(extra))
    return callbacks


def run(cfg: DictConfig, run_dir: Path | None = None):
    """Train what ``cfg`` describes in ``run_dir`` (default: Hydra's run folder, ``${paths.output_dir}/${name}``);
    returns (trainer, module). A preemption ends it with ``SystemExit(128 + signal)``."""
    import lightning as L
    from hydra.utils import instantiate

    from dancelcm.callbacks.checkpoints import AtomicCheckpointIO
    from dancelcm.lit.builders import build_module

    quiet_library_handlers()  # lightning's import gave its logger a console handler: Hydra's prints already
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    if isinstance(trainer_args.get("strategy"), dict):  # e.g. trainer=fsdp: {_target_: ...ModelParallelStrategy}
        trainer_args["strategy"] = instantiate(trainer_args["strategy"])
    trainer = L.Trainer(
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir) or False,
        callbacks=build_callbacks(cfg, run_dir),
        plugins=[AtomicCheckpointIO()],  # temporary files beside the checkpoint, never in $TMPDIR
        **trainer_args,
    )
    # The data position is restored by the datamodule (state_dict), not by a stateful DataLoader.
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt(cfg.ckpt_path, run_dir), weights_only=True)
    return trainer, module


main = command("train", run, __doc__, added_groups=("experiment", "ablation", "variant", "debug", "budget", "launcher"))

if __name__ == "__main__":
    main()
