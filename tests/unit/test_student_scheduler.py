"""The exported student's ``scheduler/`` (#23 item 15): a diffusers TCDScheduler that, loaded from the bundle
folder and run in a plain diffusers loop, samples exactly as ``consistency_sample`` (the teacher keeps DDIM)."""

import json
import warnings

import pytest
import torch

from dancelcm.diffusion import NoiseSchedule, Segments
from dancelcm.distill.consistency import consistency_sample
from dancelcm.models.bundle import save_bundle

SD = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SCHEDULERS = {
    "sample_zero_snr": {**SD, "prediction_type": "sample", "rescale_betas_zero_snr": True},  # the synthetic teacher
    "v_zero_snr": {**SD, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
    "epsilon_sd": {**SD, "prediction_type": "epsilon"},
}


def _denoiser(x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
    """A fixed function of x and t standing in for the student (its output read in any parameterisation)."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, *[1] * (x.ndim - 1))
    return torch.tanh(0.7 * x) + 0.3 * torch.cos(t / 137.0) * x.flip(-1)


@pytest.fixture(scope="module")
def micro_animator():
    from dancelcm.lit.builders import animator_kwargs, plain
    from dancelcm.models.animator import Animator
    from tests.configs.test_experiment_configs import _compose

    model = plain(_compose(["model=animator_micro", "data.resolution=32"]).model)
    return Animator(**animator_kwargs(model, 32)), model["autoencoder"]


def _meta(kind: str, scheduler: dict, autoencoder: dict, num_segments: int = 4) -> dict:
    meta = {"kind": kind, "scheduler": scheduler, "autoencoder": autoencoder, "data": {"resolution": 32}}
    if kind == "student":
        meta["segments"] = {"num_segments": num_segments, "num_grid": 40, "num_train_timesteps": 1000}
        meta["sampling"] = {"steps": num_segments, "guidance": 1.0}
    return meta


@pytest.mark.parametrize("num_segments", [1, 4, 8])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_exported_student_scheduler_samples_as_the_segment_sampler(micro_animator, tmp_path, name, num_segments):
    from diffusers import TCDScheduler

    animator, autoencoder = micro_animator
    d = save_bundle(tmp_path / "student", animator, _meta("student", SCHEDULERS[name], autoencoder, num_segments))
    meta = json.loads((d / "bundle.json").read_text())
    config = json.loads((d / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "TCDScheduler" and config["clip_sample"] is False
    assert meta["sampling"]["scheduler"] == "TCDScheduler" and meta["sampling"]["eta"] == 0.0
    assert meta["scheduler"] == SCHEDULERS[name]  # the project still reads the teacher's schedule

    scheduler = TCDScheduler.from_pretrained(str(d), subfolder="scheduler")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SD's schedule keeps signal at T - 1 (a warning, not the point here)
        schedule = NoiseSchedule.from_scheduler_config(meta["scheduler"])
    segments = Segments(**meta["segments"])
    noise = torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for steps in range(1, num_segments + 1):
        expected = consistency_sample(_denoiser, noise, schedule, segments, {}, steps)
        scheduler.set_timesteps(timesteps=meta["sampling"]["timesteps"][str(steps)])
        x = noise.clone()
        for t in scheduler.timesteps:  # a plain diffusers loop
            x = scheduler.step(_denoiser(x, t.expand(x.shape[0]), {}), t, x, eta=0.0).prev_sample
        assert len(scheduler.timesteps) == steps
        torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5, msg=f"{steps} steps")


def test_teacher_bundle_keeps_its_ddim_scheduler(micro_animator, tmp_path):
    animator, autoencoder = micro_animator
    d = save_bundle(tmp_path / "teacher", animator, _meta("teacher", SCHEDULERS["sample_zero_snr"], autoencoder))
    config = json.loads((d / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "DDIMScheduler" and config["trained_betas"] is None
    assert config["clip_sample"] is False and config["set_alpha_to_one"] is True  # as the project samples
    assert "timesteps" not in json.loads((d / "bundle.json").read_text()).get("sampling", {})


FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}


@pytest.mark.parametrize("num_segments", [1, 4])
def test_exported_flow_student_scheduler_samples_as_the_segment_sampler(micro_animator, tmp_path, num_segments):
    """A flow-matching student exports diffusers' Euler scheduler with custom sigmas on the segment edges: one Euler
    step of the velocity between edges is the segment sampler's jump, so the plain loop reproduces it."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from dancelcm.diffusion import schedule_from_config

    animator, autoencoder = micro_animator
    d = save_bundle(tmp_path / "student", animator, _meta("student", FLOW, autoencoder, num_segments))
    meta = json.loads((d / "bundle.json").read_text())
    config = json.loads((d / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "FlowMatchEulerDiscreteScheduler" and config["shift"] == 1.0
    assert meta["sampling"]["scheduler"] == "FlowMatchEulerDiscreteScheduler" and meta["scheduler"] == FLOW

    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(d), subfolder="scheduler")
    schedule, segments = schedule_from_config(meta["scheduler"]), Segments(**meta["segments"])
    noise = torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for steps in range(1, num_segments + 1):
        expected = consistency_sample(_denoiser, noise, schedule, segments, {}, steps)
        scheduler.set_timesteps(sigmas=meta["sampling"]["sigmas"][str(steps)])
        x = noise.clone()
        for t in scheduler.timesteps:
            x = scheduler.step(_denoiser(x, t.expand(x.shape[0]), {}), t, x).prev_sample
        assert len(scheduler.timesteps) == steps
        torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5, msg=f"{steps} steps")


def test_flow_teacher_bundle_keeps_its_own_scheduler(micro_animator, tmp_path):
    animator, autoencoder = micro_animator
    unipc = {
        "_class_name": "UniPCMultistepScheduler",
        "num_train_timesteps": 1000,
        "use_flow_sigmas": True,
        "flow_shift": 5.0,
        "prediction_type": "flow_prediction",
    }
    d = save_bundle(tmp_path / "teacher", animator, _meta("teacher", unipc, autoencoder))
    config = json.loads((d / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "UniPCMultistepScheduler" and config["flow_shift"] == 5.0
