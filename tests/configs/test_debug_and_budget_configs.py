"""``+debug=micro`` and ``+budget=cpu150``: they compose with every synthetic experiment, leave what they do not
size alone, and the ablation study, which spells the budget out, keeps its job folder names."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SYNTHETIC = sorted(p.stem for p in (CONF / "experiment").glob("synthetic_*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_debug_micro_sizes_every_synthetic_experiment_and_leaves_its_method_alone(name):
    cfg = _compose([f"+experiment={name}", "+debug=micro"])
    plain = _compose([f"+experiment={name}"])
    assert cfg.model == _compose([f"+experiment={name}", "model=animator_micro"]).model
    # the teacher's and the distillation's options differ: none is set (refine's init_from follows paths.output_dir)
    assert OmegaConf.to_container(cfg.method) == OmegaConf.to_container(plain.method)
    assert cfg.name == plain.name and cfg.paths.output_dir.endswith("/micro")  # runs/micro/<name>
    assert (cfg.data.resolution, cfg.data.num_frames, cfg.data.batch_size, cfg.data.num_workers) == (32, 4, 2, 0)
    assert cfg.data.root == cfg.data.default_root and cfg.data.root.endswith("/synthetic_micro")
    assert cfg.trainer.max_steps == 4 and cfg.trainer.val_check_interval == 2 and not cfg.trainer.enable_progress_bar
    assert cfg.callbacks.checkpoint_every_n_steps == cfg.callbacks.export_every_n_steps == 2


def test_debug_micro_generates_its_dancers_on_first_use(tmp_path):
    cfg = _compose(["+experiment=synthetic_k4", "+debug=micro", f"paths.data_dir={tmp_path}"])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    made = json.loads((tmp_path / "synthetic_micro" / "dataset.json").read_text())["generator"]
    assert (made["num_videos"], made["num_frames"], made["resolution"]) == (10, 24, 32)


BUDGET = {
    "trainer.max_steps": 150,
    "data.batch_size": 4,
    "method.warmup_steps": 20,
    "trainer.limit_val_batches": 0,
    "trainer.num_sanity_val_steps": 0,
    "trainer.log_every_n_steps": 10,
    "callbacks.checkpoint_every_n_steps": 50,
    "data.num_workers": 0,
}


@pytest.mark.parametrize("name", SYNTHETIC)
def test_cpu150_budget_composes_with_every_synthetic_experiment(name):
    cfg = _compose([f"+experiment={name}", "+budget=cpu150"])
    assert {k: OmegaConf.select(cfg, k) for k in BUDGET} == BUDGET
    spelled_out = _compose([f"+experiment={name}", *(f"{k}={v}" for k, v in BUDGET.items())])
    assert cfg == spelled_out


def test_the_demo_distils_on_the_cpu150_budget():
    demo = OmegaConf.load(CONF / "demo.yaml")
    assert list(demo.train_overrides) == ["+budget=cpu150"] and demo.distill_steps is None


def _ablation_job(tmp_path, **env) -> str:
    """The folder name experiments/synthetic_ablation/run.sh gives full DanceLCM's seed-0 job: its training command
    goes to a Hydra app of the same config that prints the job's folder instead of training."""
    tmp_path.mkdir()
    app = tmp_path / "train.py"
    app.write_text(
        "import hydra\n"
        "from hydra.core.hydra_config import HydraConfig\n\n"
        "import dancelcm.train  # noqa: F401  (registers ${sweep_job_id:})\n\n\n"
        f"@hydra.main(version_base='1.3', config_path={str(CONF)!r}, config_name='train')\n"
        "def main(cfg):\n"
        "    print('JOB', HydraConfig.get().sweep.subdir)\n\n\n"
        "main()\n"
    )
    py = tmp_path / "python"
    py.write_text(
        f'#!/usr/bin/env bash\n[[ "$1 $2" == "-m dancelcm.train" ]] && shift 2 && set -- {app} "$@"\n'
        f'exec {sys.executable} "$@"\n'
    )
    py.chmod(0o755)
    env = {**os.environ, "PY": str(py), "STAGES": "train", "VARIANTS": "full", "SEEDS": "0", **env}
    env["SWEEP"] = str(tmp_path / "sweep")
    script = ROOT / "experiments" / "synthetic_ablation" / "run.sh"
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    jobs = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("JOB ")]
    assert len(jobs) == 1, proc.stdout[-2000:]
    return jobs[0]


def test_the_ablation_study_keeps_its_job_folder_names(tmp_path):
    # The study's jobs (runs/synthetic_ablation/variant=...,seed=N__740911a9, kept in
    # experiments/synthetic_ablation/jobs) are named by a hash of the command line's science overrides: run.sh
    # gives the budget as its key=value overrides, so the names stay. More steps (not in the hash; 151, so that
    # no job kept in the repository at 150 steps is skipped) resume the same jobs, another batch starts new ones.
    assert _ablation_job(tmp_path / "a", STEPS="151") == "variant=full,seed=0__740911a9"
    assert _ablation_job(tmp_path / "b", STEPS="151", BATCH="8").split("__")[1] != "740911a9"
