"""W&B (#23 item 13): the environment's WANDB_MODE wins over the config and the API key, and sample media are
logged against trainer/global_step, never with a W&B step behind the run's (W&B drops those)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    """W&B's folders under tmp, and no W&B variable from the machine."""
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("env_mode", "api_key", "configured", "expected"),
    [
        ("offline", "key", None, "offline"),  # the issue: a key must not override WANDB_MODE=offline
        ("offline", "key", "online", "offline"),  # the environment wins over the config too
        ("disabled", None, "online", "disabled"),
        (None, "key", "offline", "offline"),  # then the config
        (None, None, "online", "online"),
        (None, "key", None, "online"),  # then the key
        (None, None, None, "offline"),
    ],
)
def test_wandb_mode_environment_then_config_then_api_key(wandb_env, tmp_path, env_mode, api_key, configured, expected):
    from dancelcm.train import build_loggers

    if env_mode:
        wandb_env.setenv("WANDB_MODE", env_mode)
    if api_key:
        wandb_env.setenv("WANDB_API_KEY", api_key)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+experiment=synthetic_k4", "logger=wandb"])
    if configured:
        cfg.logger.wandb.mode = configured
    loggers = build_loggers(cfg, tmp_path / "run")  # builds the WandbLogger; W&B starts at its first log
    (wandb,) = [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]
    assert wandb._wandb_init["mode"] == expected


class _FakeRun:
    """W&B's step rule: every ``log`` without ``step`` commits a row and advances the run's step; a ``log`` with a
    step below the run's current one is dropped (W&B: "Tried to log to step N that is less than the current
    step")."""

    def __init__(self):
        self.step, self.rows, self.dropped = 0, [], []

    def log(self, data: dict, step: int | None = None, commit: bool | None = None) -> None:
        if step is not None and step < self.step:
            self.dropped.append((step, data))
            return
        self.step = self.step if step is None else step
        self.rows.append((self.step, data))
        self.step += 1


def test_sample_media_are_never_logged_behind_the_runs_step(wandb_env, tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    from dancelcm.callbacks.samples import SampleVideos

    run = _FakeRun()
    logger = WandbLogger(save_dir=str(tmp_path), experiment=run)
    # trainer.log_every_n_steps=1: metrics and the lr monitor log at every step, each a W&B row
    for step in range(1, 6):
        logger.log_metrics({"train/loss": 1.0}, step=step)
        logger.log_metrics({"lr-AdamW": 1e-4}, step=step)
    assert run.step > 5  # W&B's own step is ahead of global_step

    g = torch.Generator().manual_seed(0)
    video = torch.rand(1, 2, 3, 8, 8, generator=g) * 2 - 1
    batch = {"video": video, "pose": -video, "reference": video[:, 0]}
    module = SimpleNamespace(device=torch.device("cpu"), sample_for_logging=lambda b, seed: {"student": b["video"]})
    trainer = SimpleNamespace(
        global_step=5, sanity_checking=False, is_global_zero=True, default_root_dir=str(tmp_path), loggers=[logger]
    )
    callback = SampleVideos(num_clips=1, mp4=False)
    callback.on_validation_batch_end(trainer, module, None, batch, 0)
    callback.on_validation_epoch_end(trainer, module)

    assert run.dropped == []
    media = [data for _, data in run.rows if "samples/strip" in data]
    assert len(media) == 1 and media[0]["trainer/global_step"] == 5  # plotted against the training step
