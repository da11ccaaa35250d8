"""A K > 1 student samples in at most K steps: its prediction is clean only in the lowest segment, so the LCM
re-noising sampler (which reads every prediction as clean) is refused beyond K; a K = 1 student may use it."""

from types import SimpleNamespace

import pytest
import torch

from dancelcm.diffusion.schedule import NoiseSchedule
from dancelcm.models.autoencoder import PatchAutoencoder
from dancelcm.sampling import student_sampler


class _Zero(torch.nn.Module):
    condition_names: list[str] = []

    def conditions(self, batch, autoencoder):
        return {"drop": {}}

    def forward(self, x, t, cond):
        return torch.zeros_like(x)


def _student(k: int):
    schedule = NoiseSchedule(torch.linspace(0.999, 0.01, 1000), prediction_type="sample")
    meta = {"kind": "student", "segments": {"num_segments": k, "num_grid": 40, "num_train_timesteps": 1000}}
    return SimpleNamespace(animator=_Zero(), schedule=schedule, autoencoder=PatchAutoencoder(factor=4), meta=meta)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_up_to_k_steps_sample(steps):
    spec = student_sampler(_student(4), steps)
    assert spec.nfe == steps
    out = spec.fn({"video": torch.zeros(1, 2, 3, 16, 16)}, torch.randn(1, 48, 2, 4, 4))
    assert out.shape == (1, 2, 3, 16, 16)


@pytest.mark.parametrize("steps", [5, 8])
def test_more_steps_than_k_is_refused_with_the_option_named(steps):
    with pytest.raises(ValueError, match=rf"steps={steps}: this student has K=4 segments.*steps <= 4"):
        student_sampler(_student(4), steps)


def test_a_k1_student_samples_more_steps_with_the_lcm_sampler():
    assert student_sampler(_student(1), 4).nfe == 4
    with pytest.raises(ValueError, match="steps=0"):
        student_sampler(_student(1), 0)


def test_animate_says_it_as_an_input_error():
    from dancelcm.animate import InputError, make_sampler

    with pytest.raises(InputError, match="steps=8: this student has K=4"):
        make_sampler(_student(4), 8, 1.0)
