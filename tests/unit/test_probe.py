"""The denoising probe scores the single-step x0 estimate against x_t / a_t on the same noised clips."""

import pytest
import torch
from torch import nn

from dancelcm.diffusion import NoiseSchedule
from dancelcm.models.autoencoder import PatchAutoencoder
from dancelcm.tools.probe import probe, table

SCHED = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "prediction_type": "sample",
    "rescale_betas_zero_snr": True,
}


class _Net(nn.Module):
    """x0 = x_t / a_t (the naive estimate) or, with ``zero``, the grey frame."""

    condition_names: list[str] = []

    def conditions(self, batch, autoencoder):
        return {"drop": {}}

    def __init__(self, schedule, zero=False):
        super().__init__()
        self.schedule, self.zero, self.dummy = schedule, zero, nn.Parameter(torch.zeros(1))

    def forward(self, x_t, t, cond):
        if self.zero:
            return torch.zeros_like(x_t)
        a, _ = self.schedule.coefficients(t, like=x_t)
        return x_t / a


class _Bundle:
    def __init__(self, zero=False):
        self.schedule = NoiseSchedule.from_scheduler_config(SCHED)
        self.autoencoder = PatchAutoencoder(factor=4, scale=2.0)
        self.animator = _Net(self.schedule, zero)


class _Loader(list):
    @property
    def dataset(self):
        return range(sum(len(b["clip_index"]) for b in self))


def _loader():
    g = torch.Generator().manual_seed(0)
    video = torch.rand(3, 2, 3, 16, 16, generator=g) * 2 - 1
    mask = torch.zeros(3, 2, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    turned = torch.zeros(3, 2, dtype=torch.bool)
    return _Loader([{"video": video, "figure_mask": mask, "turned": turned, "clip_index": torch.arange(3)}])


def test_the_naive_denoiser_scores_exactly_as_x_t_over_a_and_a_constant_one_does_not():
    naive = probe(_Bundle(), _loader(), [10, 500, 999], max_clips=None, seed=0)
    for row in naive[:2]:
        for key in ("psnr", "psnr_figure", "sharpness"):
            assert row[f"model|{key}"] == pytest.approx(row[f"x_t / a_t|{key}"], rel=1e-5)
    assert "x_t / a_t|psnr" not in naive[2]  # a_T = 0: no naive estimate at the top
    assert naive[0]["model|psnr"] > naive[1]["model|psnr"] + 10  # less noise, better estimate
    grey = probe(_Bundle(zero=True), _loader(), [10], max_clips=2, seed=0)[0]
    assert grey["clips"] == 2 and grey["model|psnr"] < grey["x_t / a_t|psnr"] - 10
    assert grey["model|sharpness"] == pytest.approx(0.0, abs=1e-6)
    assert "| 10 |" in table([grey])
    with pytest.raises(ValueError, match="timesteps=\\[1000\\]"):
        probe(_Bundle(), _loader(), [1000], max_clips=None, seed=0)
