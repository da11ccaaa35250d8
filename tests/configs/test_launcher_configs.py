"""The cluster configs compose: ``+launcher=slurm`` (hydra-submitit-launcher, one task per GPU) and ``trainer=ddp``."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"


def _compose(overrides, hydra=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


@pytest.mark.parametrize("gpus", [8, 4])
def test_slurm_launcher_runs_one_task_per_gpu_with_ddp(gpus):
    cfg = _compose(
        [
            "+launcher=slurm",
            "+experiment=tiktok_k4",
            "+ablation=segments",
            f"hydra.launcher.gpus_per_node={gpus}",
            "hydra.launcher.partition=gpu",
        ],
        hydra=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.tasks_per_node == launcher.gpus_per_node == gpus and launcher.partition == "gpu"
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0  # requeue on preemption / time limit
    assert cfg.hydra.sweeper.params["method.segments.num_segments"] == "1,2,4,8"  # the sweep is untouched
    HydraConfig.instance().set_config(cfg)  # what the job sees at run time: ${hydra:...} resolves
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert trainer["strategy"] == "ddp" and trainer["devices"] == gpus and trainer["num_nodes"] == 1
    assert trainer["precision"] == "bf16-mixed" and cfg.ckpt_path == "auto"


def test_ddp_trainer_config():
    cfg = _compose(["+experiment=synthetic_k4", "trainer=ddp"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == -1
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.method.teacher_dtype == "auto"  # follows the bf16 precision


def test_wandb_group_is_the_ablation_and_config_is_flat():
    from dancelcm.train import flat_config, run_identity

    cfg = _compose(["+experiment=synthetic_k4", "+ablation=face", "logger=wandb"])
    assert run_identity(cfg) == ("face", "synthetic_k4")
    assert run_identity(_compose(["+experiment=synthetic_k4"])) == ("synthetic_k4", "synthetic_k4")
    flat = flat_config(cfg)
    assert flat["method/segments/num_segments"] == 4 and flat["method/face/enabled"] is True
    assert not any(isinstance(v, dict) for v in flat.values())
