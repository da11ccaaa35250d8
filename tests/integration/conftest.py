"""Shared fixtures of the CLI integration tests: one micro teacher, trained then resumed, per session."""

import pytest

from tests.conftest import run_module

# conf/debug/micro.yaml (after +experiment=), and the teacher's validation samples at DDIM-2
MICRO = ["+debug=micro", "method.sampling.steps=2"]

# evaluate at micro size: 2 held-out clips of 4 frames at 32 px
EVAL_MICRO = [
    "data.resolution=32",
    "data.num_frames=4",
    "data.val_batch_size=2",
    "data.num_workers=0",
    "max_clips=2",
]

_run = run_module


@pytest.fixture(scope="session")
def trained(synthetic_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher") / "run"
    base = [
        "dancelcm.train",
        "+experiment=synthetic_teacher",
        f"data.root={synthetic_root}",
        f"hydra.run.dir={run_dir}",
        *MICRO,
    ]
    first = _run([*base, "trainer.max_steps=2"], run_dir.parent)
    resumed = _run([*base, "trainer.max_steps=4", "ckpt_path=auto"], run_dir.parent)
    return run_dir, first, resumed


@pytest.fixture(scope="session")
def micro_teacher(trained):
    """The micro teacher's exported bundle (what a distillation loads)."""
    return trained[0] / "export"
