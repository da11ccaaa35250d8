"""Noise schedules and the two functions everything else is built from.

Every schedule is a path ``x_t = a_t x0 + s_t eps`` over timesteps ``t`` in ``[CLEAN, T - 1]``:

- :class:`NoiseSchedule`, variance preserving (DDPM / Stable Diffusion / AnimateDiff teachers):
  ``a_t = sqrt(abar_t)``, ``s_t = sqrt(1 - abar_t)``, integer timesteps, tables from a diffusers scheduler;
- :class:`FlowMatchSchedule`, rectified flow (Wan, HunyuanVideo, SD3 teachers): ``a_t = 1 - sigma_t``,
  ``s_t = sigma_t``, the network predicting the velocity ``v = eps - x0``; ``sigma_t`` is a continuous function
  of ``t`` (fractional timesteps allowed, so a diffusers flow sampler's sigmas are visited exactly).

- :meth:`NoiseSchedule.to_x0_eps` turns a network output (``epsilon``, ``v_prediction`` or ``sample``)
  into ``(x0, eps)``;
- :meth:`NoiseSchedule.jump` is one deterministic DDIM step: ``jump(x0, eps, s) = a_s x0 + s_s eps``.

The teacher's ODE step, the student's consistency function, the EMA target and every sampler reuse
these two. ``CLEAN = -1`` is the clean end (``a = 1, s = 0``), the state DDIM lands in after its last step
(diffusers' ``set_alpha_to_one=True``). What the *network* is fed as its timestep comes from the schedule
(:meth:`Schedule.network_timestep`: the integer ``t`` for VP, ``sigma_t * T`` as a float for flow matching, as
diffusers' flow schedulers feed it), never from the index directly. Both are built from the teacher's diffusers
scheduler config (:func:`schedule_from_config`; never hard-coded betas or sigmas), computed in float64.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any

import torch

CLEAN = -1
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _broadcast(a: torch.Tensor, s: torch.Tensor, like: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, s)`` shaped to broadcast against ``like`` (batch on dim 0) and on its device; unchanged without it."""
    if like is None:
        return a, s
    shape = (-1,) + (1,) * (like.ndim - 1) if a.ndim else ()
    return a.reshape(shape).to(like.device), s.reshape(shape).to(like.device)


class Schedule(ABC):
    """What samplers and the distillation need of a schedule; the two subclasses fill in the tables."""

    prediction_type: str
    num_train_timesteps: int

    @abstractmethod
    def coefficients(self, t, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a_t, s_t)`` as float32, shaped to broadcast against ``like`` (batch on dim 0)."""

    @abstractmethod
    def network_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """What the network is fed as its timestep at schedule time ``t``."""

    @abstractmethod
    def inference_timesteps(self, num_steps: int) -> list:
        """The teacher sampler's descending timesteps for ``num_steps`` steps (the clean end follows the last)."""

    @abstractmethod
    def to_x0_eps(self, output: torch.Tensor, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert a raw network output at ``(x_t, t)`` into ``(x0, eps)`` (float32)."""

    @abstractmethod
    def target(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """What the network should output for ``x_t = jump(x0, eps, t)`` (the diffusion training target)."""

    def timesteps(self, t, batch_size: int, device=None) -> torch.Tensor:
        """``t`` (a number) as a (B,) tensor: long for an integer, float64 for a fractional flow timestep."""
        dtype = torch.long if float(t) == int(t) else torch.float64
        return torch.full((batch_size,), int(t) if dtype == torch.long else float(t), dtype=dtype, device=device)

    @property
    def terminal_signal(self) -> float:
        """``a_T`` at the top timestep: 0 for a zero-terminal-SNR schedule (pure noise is then exact there)."""
        return float(self.coefficients(self.num_train_timesteps - 1)[0])

    def snr(self, t: torch.Tensor | int) -> torch.Tensor:
        a, s = self.coefficients(t)
        return a**2 / s.clamp_min(1e-20) ** 2

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        return self.jump(x0, eps, t)

    def jump(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The state at ``t`` on the DDIM path through ``(x0, eps)``: ``a_t x0 + s_t eps`` (``t=CLEAN`` gives x0).

        For flow matching this *is* one Euler step of the velocity ``eps - x0`` from any sigma to ``sigma_t``."""
        a, s = self.coefficients(t, like=x0)
        return a * x0.float() + s * eps.float()

    def renoise(self, x_s: torch.Tensor, s, t, noise: torch.Tensor) -> torch.Tensor:
        """Forward-noise a state at ``s`` to the higher level ``t`` (the LCM / TCD re-noising between steps):
        ``x_t = (a_t / a_s) x_s + sqrt(s_t^2 - (a_t / a_s)^2 s_s^2) z``, the marginal of ``jump(x0, eps, t)``."""
        a_s, s_s = self.coefficients(s)
        a_t, s_t = self.coefficients(t)
        ratio = a_t / a_s
        return ratio * x_s + (s_t**2 - ratio**2 * s_s**2).clamp_min(0).sqrt() * noise


class NoiseSchedule(Schedule):
    """Variance preserving: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` over integer ``t`` in ``[0, T)``."""

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

    # -- tables --------------------------------------------------------------------------------------
    def _index(self, t: torch.Tensor | int) -> torch.Tensor:
        t = torch.as_tensor(t)
        if t.is_floating_point():
            if torch.any(t != t.round()):
                raise ValueError(f"a variance-preserving schedule has integer timesteps only, got {t.tolist()}")
            t = t.long()
        if torch.any(t < CLEAN) or torch.any(t >= self.num_train_timesteps):
            raise ValueError(f"timesteps must lie in [{CLEAN}, {self.num_train_timesteps - 1}], got {t.tolist()}")
        return t + 1

    def coefficients(
        self, t: torch.Tensor | int, like: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a_t, s_t)`` as float32, shaped to broadcast against ``like`` (batch on dim 0)."""
        i = self._index(t).cpu()
        a, s = self._a[i], self._s[i]
        return _broadcast(a, s, like)

    def network_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The integer timestep itself (a VP network is trained on the table index)."""
        return torch.as_tensor(t)

    def inference_timesteps(self, num_steps: int) -> list[int]:
        return ddim_timesteps(num_steps, self.num_train_timesteps)

    def renoise(self, x_s: torch.Tensor, s, t, noise: torch.Tensor) -> torch.Tensor:
        """VP: ``s_t^2 - r^2 s_s^2 = 1 - r^2`` exactly; written so, as the LCM sampler always computed it."""
        a_s, _ = self.coefficients(s)
        a_t, _ = self.coefficients(t)
        ratio = a_t / a_s
        return ratio * x_s + (1 - ratio**2).clamp_min(0).sqrt() * noise

    # -- the conversion ----------------------------------------------------------------------------
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


# -- flow matching ---------------------------------------------------------------------------------------------
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "UniPCMultistepScheduler")
# options of diffusers' flow schedulers that change the sigmas in ways this schedule does not reproduce
_UNSUPPORTED_FLOW_OPTIONS = {
    "use_dynamic_shifting": "resolution-dependent shifting (mu from the image sequence length) makes the schedule "
    "depend on the video size; set use_dynamic_shifting=false and a fixed shift (Wan ships shift 5.0 for 720p, "
    "3.0 for 480p)",
    "use_karras_sigmas": "Karras sigmas are an inference-time respacing; distil on the training sigmas",
    "use_exponential_sigmas": "exponential sigmas are an inference-time respacing; distil on the training sigmas",
    "use_beta_sigmas": "beta sigmas are an inference-time respacing; distil on the training sigmas",
    "invert_sigmas": "inverted sigmas (1 = clean) are not a teacher convention this project supports",
    "shift_terminal": "a stretched terminal sigma leaves noise at the clean end; distil without it",
    "stochastic_sampling": "stochastic sampling is not a probability-flow ODE; distillation needs the ODE",
}


class FlowMatchSchedule(Schedule):
    """Rectified flow: ``x_t = (1 - sigma_t) x0 + sigma_t eps``; the network predicts ``v = eps - x0``.

    ``sigma_t = shift u / (1 + (shift - 1) u)`` with ``u = (t + 1) / T``: at the integer timesteps this is
    diffusers' training table (``FlowMatchEulerDiscreteScheduler.sigmas`` read bottom up), ``t = T - 1`` is pure
    noise (``sigma = 1``) and ``CLEAN = -1`` the data. Fractional ``t`` is allowed (a teacher sampler's sigmas
    need not lie on the table; :meth:`t_of_sigma` inverts). The network is fed ``sigma_t * T`` as a float.
    """

    prediction_type = "flow"

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, scheduler_config: dict | None = None):
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps={num_train_timesteps}: must be >= 1")
        if not shift > 0:
            raise ValueError(f"shift={shift}: the flow shift must be > 0 (1.0: no shift)")
        self.num_train_timesteps = int(num_train_timesteps)
        self.shift = float(shift)
        # the scheduler the teacher samples with (its set_timesteps gives the inference sigmas)
        self.scheduler_config = dict(
            scheduler_config
            or {
                "_class_name": "FlowMatchEulerDiscreteScheduler",
                "num_train_timesteps": num_train_timesteps,
                "shift": shift,
            }
        )

    @classmethod
    def from_scheduler_config(cls, config: dict[str, Any]) -> FlowMatchSchedule:
        """From a diffusers ``FlowMatchEulerDiscreteScheduler`` config (``shift``) or a ``UniPCMultistepScheduler``
        one with ``use_flow_sigmas`` (``flow_shift``), as Wan ships. Options that reshape the sigmas beyond a fixed
        shift stop with a message naming them."""
        config = dict(config)
        name = config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
        if name not in FLOW_SCHEDULERS:
            raise ValueError(f"scheduler {name!r} is not a flow-matching scheduler; use one of {FLOW_SCHEDULERS}")
        for key, why in _UNSUPPORTED_FLOW_OPTIONS.items():
            if config.get(key):
                raise ValueError(f"scheduler option {key}={config[key]!r} is not supported: {why}")
        if name == "UniPCMultistepScheduler":
            if not config.get("use_flow_sigmas"):
                raise ValueError("a UniPCMultistepScheduler config is a flow schedule only with use_flow_sigmas=true")
            shift = config.get("flow_shift", 1.0)
        else:
            shift = config.get("shift", 1.0)
        return cls(config.get("num_train_timesteps", 1000), shift, config)

    # -- sigma <-> t ------------------------------------------------------------------------------------
    def sigma(self, t) -> torch.Tensor:
        """``sigma_t`` in float64 for timesteps in ``[CLEAN, T - 1]`` (integer or fractional)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if torch.any(t < CLEAN - 1e-9) or torch.any(t > self.num_train_timesteps - 1 + 1e-9):
            raise ValueError(f"timesteps must lie in [{CLEAN}, {self.num_train_timesteps - 1}], got {t.tolist()}")
        u = (t + 1) / self.num_train_timesteps
        return self.shift * u / (1 + (self.shift - 1) * u)

    def t_of_sigma(self, sigma) -> torch.Tensor:
        """The (fractional) timestep of ``sigma`` in ``[0, 1]``, float64: the inverse of :meth:`sigma`."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if torch.any(sigma < 0) or torch.any(sigma > 1):
            raise ValueError(f"sigmas must lie in [0, 1], got {sigma.tolist()}")
        u = sigma / (self.shift - (self.shift - 1) * sigma)
        return u * self.num_train_timesteps - 1

    # -- the schedule ----------------------------------------------------------------------------------
    def coefficients(self, t, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = self.sigma(torch.as_tensor(t).cpu())
        a, s = (1 - sigma).float(), sigma.float()
        return _broadcast(a, s, like)

    def network_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """``sigma_t * T`` as float32: what diffusers' flow schedulers feed the transformer (``timesteps``)."""
        t = torch.as_tensor(t)
        return (self.sigma(t.cpu()) * self.num_train_timesteps).float().to(t.device)

    def inference_timesteps(self, num_steps: int) -> list[float]:
        """The sigmas of the teacher's diffusers flow scheduler after ``set_timesteps(num_steps)``, as timesteps.

        diffusers' FlowMatchEuler spaces its inference sigmas linearly between the *shifted* table ends and then
        shifts them again; UniPC with flow sigmas spaces them its own way. Reading them from the scheduler keeps
        the teacher's Euler sampler on exactly the pipeline's sigmas."""
        import diffusers

        if num_steps < 1:
            raise ValueError(f"num_steps={num_steps}: must be >= 1")
        name = self.scheduler_config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
        sched = getattr(diffusers, name).from_config(self.scheduler_config)
        sched.set_timesteps(num_steps)
        if float(sched.sigmas[num_steps]) != 0.0:
            raise ValueError(f"{name}.set_timesteps({num_steps}) does not end at sigma = 0 (final_sigmas_type?)")
        return [float(v) for v in self.t_of_sigma(torch.as_tensor(sched.sigmas[:num_steps]).double())]

    def to_x0_eps(self, output: torch.Tensor, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``x0 = x - sigma v``, ``eps = x + (1 - sigma) v`` for the velocity ``v = eps - x0``."""
        a, s = self.coefficients(t, like=x_t)
        v, x = output.float(), x_t.float()
        return x - s * v, x + a * v

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        return eps.float() - x0.float()


def is_flow_config(config: dict[str, Any]) -> bool:
    """Whether a diffusers scheduler config (a dict) describes a flow-matching schedule."""
    return bool(
        config.get("_class_name") == "FlowMatchEulerDiscreteScheduler"
        or config.get("use_flow_sigmas")
        or config.get("prediction_type") == "flow_prediction"
        or "shift" in config  # a FlowMatchEuler config written without its class name (no VP scheduler has it)
    )


def schedule_from_config(config: dict[str, Any] | Any, prediction_type: str | None = None) -> Schedule:
    """The schedule a diffusers scheduler config describes: a flow schedule for ``FlowMatchEulerDiscreteScheduler``,
    a ``UniPCMultistepScheduler`` with ``use_flow_sigmas`` or ``prediction_type: flow_prediction``, otherwise the
    variance-preserving tables. ``config``: a dict, a scheduler, or a folder with scheduler_config.json."""
    if isinstance(config, str):
        import json
        from pathlib import Path

        path = Path(config) / "scheduler_config.json" if Path(config).is_dir() else Path(config)
        config = json.loads(path.read_text())
    elif not isinstance(config, dict):
        config = dict(config.config)
    if is_flow_config(config):
        if prediction_type not in (None, "flow", "flow_prediction"):
            raise ValueError(f"prediction_type={prediction_type!r}: a flow-matching teacher predicts the velocity")
        return FlowMatchSchedule.from_scheduler_config(config)
    return NoiseSchedule.from_scheduler_config(config, prediction_type)
