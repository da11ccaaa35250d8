"""The variance-preserving noise schedule and the two functions everything else is built from.

``x_t = a_t x0 + s_t eps`` with ``a_t = sqrt(abar_t)``, ``s_t = sqrt(1 - abar_t)``.

- :meth:`NoiseSchedule.to_x0_eps` turns a network output (``epsilon``, ``v_prediction`` or ``sample``)
  into ``(x0, eps)``;
- :meth:`NoiseSchedule.jump` is one deterministic DDIM step: ``jump(x0, eps, s) = a_s x0 + s_s eps``.

The teacher's ODE step, the student's consistency function, the EMA target and every sampler reuse
these two. Timesteps are integers in ``[0, T)``; ``CLEAN = -1`` is the clean end (``a = 1, s = 0``),
the state DDIM lands in after its last step (diffusers' ``set_alpha_to_one=True``).
The tables come from the teacher's diffusers scheduler config (never hard-coded betas), are computed
in float64 and stored in float32.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

CLEAN = -1
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class NoiseSchedule:
    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str = "v_prediction"):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={prediction_type!r}: choose one of {PREDICTION_TYPES}")
        abar = alphas_cumprod.to(torch.float64)
        if abar.ndim != 1 or not torch.all(abar[1:] <= abar[:-1]) or abar.max() > 1 or abar.min() < 0:
            raise ValueError("alphas_cumprod must be a non-increasing 1-D table in [0, 1]")
        if prediction_type == "epsilon" and abar[-1] <= 1e-12:
            raise ValueError(
                "epsilon prediction with a zero-terminal-SNR schedule divides by zero at the top timestep "
                "(x0 = (x - s eps) / a with a = 0): use prediction_type=v_prediction, or a schedule without "
                "rescale_betas_zero_snr"
            )
        self.prediction_type = prediction_type
        self.num_train_timesteps = len(abar)
        full = torch.cat([torch.ones(1, dtype=torch.float64), abar])  # index t + 1; index 0 is CLEAN
        self._a = full.sqrt().float()
        self._s = (1 - full).clamp_min(0).sqrt().float()

    @classmethod
    def from_scheduler_config(cls, config: dict[str, Any] | Any, prediction_type: str | None = None) -> NoiseSchedule:
        """Build from a diffusers scheduler config (a dict, a scheduler, or a folder with scheduler_config.json).

        The betas come from diffusers' ``DDPMScheduler`` (beta_schedule, rescale_betas_zero_snr, ...).
        """
        from diffusers import DDPMScheduler

        if isinstance(config, str):
            sched = DDPMScheduler.from_pretrained(config)
        elif isinstance(config, dict):
            sched = DDPMScheduler.from_config(config)
        else:
            sched = DDPMScheduler.from_config(config.config)
        ptype = prediction_type or sched.config.prediction_type
        schedule = cls(sched.alphas_cumprod, ptype)
        if schedule.terminal_signal > 0.01:
            warnings.warn(
                f"the noise schedule keeps {schedule.terminal_signal:.1%} of the signal at its top timestep "
                f"t={schedule.num_train_timesteps - 1} (a_T = sqrt(alphas_cumprod[-1])), while every sampler starts "
                "there from pure noise: a train/sample mismatch at the first step (Stable Diffusion's schedule has "
                "it too). The exact fix is a teacher trained with rescale_betas_zero_snr=true and "
                "prediction_type=v_prediction; see conf/model/animator_animatediff.yaml",
                stacklevel=2,
            )
        return schedule

    @property
    def terminal_signal(self) -> float:
        """``a_T`` at the top timestep: 0 for a zero-terminal-SNR schedule (pure noise is then exact there)."""
        return float(self._a[-1])

    # -- tables --------------------------------------------------------------------------------------
    def _index(self, t: torch.Tensor | int) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.long)
        if torch.any(t < CLEAN) or torch.any(t >= self.num_train_timesteps):
            raise ValueError(f"timesteps must lie in [{CLEAN}, {self.num_train_timesteps - 1}], got {t.tolist()}")
        return t + 1

    def coefficients(
        self, t: torch.Tensor | int, like: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a_t, s_t)`` as float32, shaped to broadcast against ``like`` (batch on dim 0)."""
        i = self._index(t).cpu()
        a, s = self._a[i], self._s[i]
        if like is not None:
            shape = (-1,) + (1,) * (like.ndim - 1) if a.ndim else ()
            a = a.reshape(shape).to(like.device)
            s = s.reshape(shape).to(like.device)
        return a, s

    def snr(self, t: torch.Tensor | int) -> torch.Tensor:
        a, s = self.coefficients(t)
        return a**2 / s.clamp_min(1e-20) ** 2

    # -- the two building blocks -------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        return self.jump(x0, eps, t)

    def jump(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The state at ``t`` on the DDIM path through ``(x0, eps)``: ``a_t x0 + s_t eps`` (``t=CLEAN`` gives x0)."""
        a, s = self.coefficients(t, like=x0)
        return a * x0.float() + s * eps.float()

    def to_x0_eps(
        self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert a raw network output at ``(x_t, t)`` into ``(x0, eps)`` (float32)."""
        a, s = self.coefficients(t, like=x_t)
        out, x = output.float(), x_t.float()
        if self.prediction_type == "v_prediction":
            return a * x - s * out, s * x + a * out
        if self.prediction_type == "epsilon":
            return (x - s * out) / a, out
        # sample: eps is undefined at s = 0 (the clean end), where nothing is ever predicted
        return out, (x - a * out) / s.clamp_min(1e-8)

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """What the network should output for ``x_t = jump(x0, eps, t)`` (the diffusion training target)."""
        a, s = self.coefficients(t, like=x0)
        if self.prediction_type == "v_prediction":
            return a * eps - s * x0
        if self.prediction_type == "epsilon":
            return eps
        return x0


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """Descending DDIM timesteps with diffusers' ``trailing`` spacing (the first one is T - 1).

    With the default ``leading`` spacing a 1-step sample would run at t ~ 1 (see DESIGN.md pitfalls).
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps={num_steps}: must be in [1, {num_train_timesteps}]")
    ratio = num_train_timesteps / num_steps
    ts = [int(round(num_train_timesteps - i * ratio)) - 1 for i in range(num_steps)]
    return ts
