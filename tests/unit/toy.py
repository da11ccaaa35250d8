"""A low-dimensional check of the distillation core: a Gaussian-mixture teacher with the *exact* denoiser.

For data ``x0 ~ sum_k pi_k N(mu_k, sigma^2 I)`` the posterior mean ``E[x0 | x_t]`` is closed-form, so the
teacher's probability-flow ODE is known exactly and a distilled student can be compared with the
teacher's own ODE solution from the same noise (tests/unit/test_distill_toy.py; the schedule is shared by
tests/unit/test_distill_core.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dancelcm.diffusion import FlowMatchSchedule, NoiseSchedule, Schedule, Segments
from dancelcm.diffusion.samplers import ddim_sample
from dancelcm.distill.consistency import LossWeights, consistency_sample, consistency_targets, distillation_loss
from dancelcm.models.ema import EMA

SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
)


class MixtureTeacher:
    """Exact denoiser of an isotropic Gaussian mixture in 2 dimensions, in the schedule's parameterisation
    (v-prediction ``a eps - s x0`` for VP, the velocity ``eps - x0`` for flow matching). Like a real network it is
    called with the network timestep (``schedule.network_timestep``: ``sigma * T`` for flow)."""

    def __init__(self, schedule: Schedule, num_modes: int = 8, radius: float = 1.0, sigma: float = 0.15):
        ang = torch.arange(num_modes, dtype=torch.float64) * 2 * math.pi / num_modes
        self.mu = radius * torch.stack([ang.cos(), ang.sin()], 1)  # (K, 2)
        self.sigma, self.schedule = sigma, schedule

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.randint(0, len(self.mu), (n,), generator=generator)
        return (self.mu[k] + self.sigma * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = (c.double()[:, None] for c in self.schedule.coefficients(t))
        x = x_t.double()
        var = a**2 * self.sigma**2 + s**2  # (B, 1)
        d2 = ((x[:, None, :] - a[:, None] * self.mu[None]) ** 2).sum(-1)  # (B, K)
        w = torch.softmax(-d2 / (2 * var), dim=1)
        mean_k = self.mu[None] + (a * self.sigma**2 / var)[:, None] * (x[:, None, :] - a[:, None] * self.mu[None])
        return (w[..., None] * mean_k).sum(1)

    def schedule_time(self, t: torch.Tensor) -> torch.Tensor:
        """The schedule timestep of a network timestep (the inverse of ``schedule.network_timestep``)."""
        if isinstance(self.schedule, FlowMatchSchedule):
            return self.schedule.t_of_sigma(t.double() / self.schedule.num_train_timesteps)
        return t

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        t = self.schedule_time(t)
        x0 = self.posterior_mean(x_t, t)
        a, s = (c.double()[:, None] for c in self.schedule.coefficients(t))
        eps = (x_t.double() - a * x0) / s.clamp_min(1e-12)
        if isinstance(self.schedule, FlowMatchSchedule):
            return (eps - x0).float()  # the velocity
        return (a * eps - s * x0).float()  # v


class ToyStudent(nn.Module):
    """The teacher plus a learned, zero-initialised MLP correction (sinusoidal time embedding). Like the real
    student, it starts as an exact copy of the teacher."""

    def __init__(self, teacher: MixtureTeacher, hidden: int = 128):
        super().__init__()
        self.teacher = teacher
        self.freqs = torch.exp(torch.linspace(0, math.log(100.0), 8))
        self.body = nn.Sequential(
            nn.Linear(2 + 16, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
        )
        self.out = nn.Linear(hidden, 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict):
        tt = (t.float()[:, None] + 1) / 1000.0 * self.freqs[None]
        h = self.body(torch.cat([x_t.float(), tt.sin(), tt.cos()], 1))
        return self.teacher(x_t, t, cond) + self.out(h)


def distill_toy(
    num_segments: int,
    steps: int = 1500,
    batch_size: int = 256,
    lr: float = 2e-3,
    ema_decay: float = 0.95,
    seed: int = 0,
    eval_every: int | None = None,
    num_eval: int = 512,
    flow_shift: float | None = None,
    grid: str = "uniform",
    num_grid: int = 40,
) -> dict:
    """Distil the exact mixture teacher into a K-segment student; returns the error curve.

    Error = mean Euclidean distance between the student's K-step sample and the teacher's DDIM solution
    on the N = 40 grid from the same noise (the trajectory the student distils), data scale = 1.
    ``flow_shift``: the same on a rectified-flow schedule with that shift (the teacher predicts the velocity).
    ``grid`` / ``num_grid``: the segments' grid (``method.segments.grid``); ``exact_error`` is the same distance
    to the exact flow (DDIM over all T timesteps) instead of to the grid's trajectory.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if flow_shift is None:
        schedule = NoiseSchedule.from_scheduler_config(dict(SCHEDULER))
    else:
        schedule = FlowMatchSchedule(1000, flow_shift)
    segments = Segments.for_schedule(schedule, grid, num_segments=num_segments, num_grid=num_grid)
    teacher = MixtureTeacher(schedule)
    student = ToyStudent(teacher)
    ema = EMA(student, ema_decay)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    weights = LossWeights(distance="huber", huber_c=1e-3)
    eval_noise = torch.randn(num_eval, 2, generator=torch.Generator().manual_seed(seed + 1))
    grid = segments.grid.flip(0).tolist()  # the solver grid the student distils (VP: DDIM-40's trailing steps)
    reference = ddim_sample(teacher, eval_noise, schedule, num_grid, cond={}, timesteps=grid)
    exact = exact_flow(teacher, eval_noise)

    def error(against: torch.Tensor = reference) -> float:
        x = consistency_sample(student, eval_noise, schedule, segments, cond={})
        return (x - against).norm(dim=1).mean().item()

    curve = []
    for step in range(steps):
        x0 = teacher.sample_data(batch_size, g)
        n = segments.sample_grid_indices(batch_size, g)
        targets = consistency_targets(
            teacher, ema, schedule, segments, x0, {}, n, torch.randn(batch_size, 2, generator=g)
        )
        out = distillation_loss(student, targets, schedule, x0, {}, weights)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()
        ema.update(student)
        if eval_every and (step + 1) % eval_every == 0:
            curve.append((step + 1, error()))
    return {
        "final_error": error(),
        "curve": curve,
        "exact_error": error(exact),
        "teacher_exact_error": (reference - exact).norm(dim=1).mean().item(),
    }


def exact_flow(teacher: MixtureTeacher, noise: torch.Tensor) -> torch.Tensor:
    """The teacher's probability-flow ODE solved from ``noise`` over every timestep (T DDIM steps of the exact
    denoiser): the reference a grid's trajectory is measured against."""
    T = teacher.schedule.num_train_timesteps
    return ddim_sample(teacher, noise, teacher.schedule, T, cond={}, timesteps=list(range(T - 1, -1, -1)))


def grid_trajectory_errors(schedule: Schedule, grids: list[tuple[str, int]], num: int = 256, seed: int = 1) -> list:
    """Mean distance (data scale 1) between the teacher's DDIM solution on each segments grid ``(kind, N)`` and the
    exact flow, from the same noise."""
    teacher = MixtureTeacher(schedule)
    noise = torch.randn(num, 2, generator=torch.Generator().manual_seed(seed))
    exact = exact_flow(teacher, noise)
    errors = []
    for kind, n in grids:
        segments = Segments.for_schedule(schedule, kind, num_segments=4, num_grid=n)
        x = ddim_sample(teacher, noise, schedule, n, cond={}, timesteps=segments.grid.flip(0).tolist())
        errors.append((x - exact).norm(dim=1).mean().item())
    return errors
