"""Every command once, in-process through its ``run(cfg)`` on a composed config, at micro size (the subprocess runs
of the same commands, as a user types them, are the ``slow`` tests)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from dancelcm.cli import CONF
from tests.configs.test_experiment_configs import _save_micro_teacher

MICRO_DATA = ["data.resolution=32", "data.num_frames=4", "data.face_size=16", "data.num_workers=0"]


def _cfg(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture(scope="module")
def micro_teacher(tmp_path_factory):
    return _save_micro_teacher(tmp_path_factory.mktemp("commands") / "teacher")[0]


def test_animate(micro_teacher, synthetic_root, tmp_path, caplog):
    """A 48-frame pose video, six times the micro teacher's 4-frame window: one long video from overlapping windows
    fused at every step (the default), every frame written."""
    import logging

    import numpy as np

    from dancelcm import animate
    from dancelcm.data.layout import write_video
    from dancelcm.data.reader import FrameSource, read_frames

    video = next((synthetic_root / "videos").iterdir())
    Image.fromarray(read_frames(video)[0]).save(tmp_path / "ref.png")
    pose = FrameSource(video / "pose.mp4").get(range(24))
    write_video(tmp_path / "pose48.mp4", np.concatenate([pose, pose[::-1]]), fps=12, crf=16)
    out = tmp_path / "anim.mp4"
    cfg = _cfg(
        "animate",
        [
            f"model_dir={micro_teacher}",
            f"reference={tmp_path / 'ref.png'}",
            f"pose={tmp_path / 'pose48.mp4'}",
            "steps=2",
            "layout=video",
            f"out={out}",
        ],
    )
    with caplog.at_level(logging.INFO):
        animate.run(cfg)
    assert "animating 48 frames at 32x32" in caplog.text and "windows of 4 overlapping by 2" in caplog.text
    frames = FrameSource(out).get(range(48))
    assert frames.shape == (48, 32, 32, 3) and frames.std() > 0
    # the default fuses overlapping windows: not what independent windows (overlap=0) give from the same noise
    from dancelcm.models.bundle import load_bundle

    bundle = load_bundle(micro_teacher)
    reference = torch.rand(3, 32, 32) * 2 - 1
    pose = torch.rand(12, 3, 32, 32) * 2 - 1
    fused = animate.animate(bundle, reference, pose, 2, 2.0, 4, overlap=2)
    independent = animate.animate(bundle, reference, pose, 2, 2.0, 4, overlap=0)
    assert fused.shape == independent.shape == (12, 3, 32, 32)
    assert (fused - independent).abs().max() > 1e-4
    # reference | pose | result, every frame
    side = tmp_path / "side.mp4"
    args = [f"model_dir={micro_teacher}", f"reference={tmp_path / 'ref.png'}", f"pose={tmp_path / 'pose48.mp4'}"]
    animate.run(_cfg("animate", [*args, "steps=2", "max_frames=8", f"out={side}"]))
    frames = FrameSource(side).get(range(8))
    assert frames.shape == (8, 32, 96, 3)
    assert np.abs(frames[:, :, :32].astype(int) - frames[:1, :, :32]).max() <= 8  # the still reference (mp4 noise)
    # the options only Wan2.2-Animate models read are refused by name, not dropped; a bad layout before sampling
    from dancelcm.animate import InputError

    with pytest.raises(InputError, match="layout='grid': choose video or side_by_side"):
        animate.run(_cfg("animate", [f"model_dir={micro_teacher}", "reference=missing.png", "pose=missing.mp4",
                                     "layout=grid"]))  # fmt: skip

    for extra in ("size=[64,64]", "prompt=a dancer", "face_video=face.mp4", "device=cpu"):
        with pytest.raises(InputError, match=f"{extra.split('=')[0]}=: read by Wan2.2-Animate models only"):
            animate.run(_cfg("animate", [f"model_dir={micro_teacher}", f"reference={tmp_path / 'ref.png'}",
                                         f"pose={tmp_path / 'pose48.mp4'}", extra]))  # fmt: skip


def test_probe(micro_teacher, synthetic_root, tmp_path):
    from dancelcm.tools import probe

    cfg = _cfg(
        "probe",
        [
            f"model_dir={micro_teacher}",
            f"data.root={synthetic_root}",
            *MICRO_DATA,
            "max_clips=2",
            "timesteps=[10,500]",
            f"out_dir={tmp_path}",
        ],
    )
    probe.run(cfg)
    rows = json.loads((tmp_path / "probe.json").read_text())["rows"]
    assert [r["t"] for r in rows] == [10, 500] and all(r["clips"] == 2 for r in rows)


def test_bench(synthetic_root, tmp_path):
    from dancelcm.tools import bench

    out = tmp_path / "bench.json"
    cfg = _cfg(
        "bench",
        [
            "model=animator_micro",
            "model_name=animator_micro",
            f"data.root={synthetic_root}",
            *MICRO_DATA,
            "data.batch_size=2",
            "bench.teacher_steps=2",
            "bench.num_grid=8",
            "bench.train_steps=2",
            "bench.repeats=1",
            "bench.data_clips=4",
            f"output={out}",
        ],
    )
    result = bench.run(cfg)
    assert json.loads(out.read_text())["inference"]["teacher"]["nfe"] == 4 == result["inference"]["teacher"]["nfe"]
    assert out.with_suffix(".md").is_file()


def test_data_benchmark(synthetic_root, tmp_path):
    from dancelcm.data import benchmark

    out = tmp_path / "loader.json"
    cfg = _cfg(
        "benchmark_data",
        [f"root={synthetic_root}", "resolution=32", "num_frames=4", "workers=[0]", "clips=4", f"output={out}"],
    )
    benchmark.run(cfg)
    assert out.is_file()


def test_synthesize_and_feature_net(tmp_path):
    from dancelcm.data import synthesize
    from dancelcm.tools import feature_net

    synthesize.run(
        _cfg(
            "synthesize",
            [
                f"out_dir={tmp_path / 'data'}",
                "num_videos=5",
                "num_frames=12",
                "resolution=32",
                "num_workers=1",
                "preview=false",
            ],
        )
    )
    assert (tmp_path / "data" / "dataset.json").is_file()
    result = feature_net.run(
        _cfg("feature_net", [f"root={tmp_path / 'data'}", f"out={tmp_path / 'net'}", "steps=2", "batch_size=4"])
    )
    assert isinstance(result, dict) and any((tmp_path / "net").iterdir())


def test_bundle_half(micro_teacher, tmp_path):
    from dancelcm.models.bundle import load_bundle
    from dancelcm.tools import half

    kept = half.run(_cfg("bundle_half", [f"src={micro_teacher}", f"dst={tmp_path / 'half'}"]))
    assert kept and load_bundle(tmp_path / "half").animator is not None
    weights = next((tmp_path / "half").rglob("diffusion_pytorch_model.safetensors"))
    from safetensors.torch import load_file

    assert any(v.dtype == torch.float16 for v in load_file(str(weights)).values())
    assert np.isfinite(sum(float(v.float().sum()) for v in load_file(str(weights)).values()))
