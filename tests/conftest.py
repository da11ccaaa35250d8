"""Shared fixtures: small synthetic datasets generated once per test session (seconds on 2 CPUs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from dancelcm.data.synthesize import SynthesisConfig, synthesize  # noqa: E402


def make_dataset(path: Path, **overrides) -> Path:
    cfg = dict(out_dir=str(path), num_videos=10, num_frames=24, resolution=32, num_workers=1, preview=False)
    cfg.update(overrides)
    synthesize(SynthesisConfig(**cfg))
    return path


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """10 videos x 24 frames at 32x32 (8 train / 2 test). Read-only: copy it before damaging files."""
    return make_dataset(tmp_path_factory.mktemp("synthetic") / "data")


@pytest.fixture
def fresh_copy(synthetic_root, tmp_path) -> Path:
    """A private copy of the session dataset that a test may corrupt."""
    dst = tmp_path / "data"
    shutil.copytree(synthetic_root, dst)
    return dst


def run_module(args: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    """``python -m <args>`` as a user would run it; with ``ok`` the exit code must be 0."""
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=900)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
