"""Pieces shared by the LightningModules: conditions from a batch, timestep sampling, optimisers."""

from __future__ import annotations

import logging
import math

import torch

from dancelcm.cli import ConfigError

log = logging.getLogger(__name__)


def sample_timesteps(batch: int, num_train_timesteps: int, power: float = 1.0, device=None, generator=None):
    """``t = floor(T u^power)``: power > 1 draws more low-noise timesteps (which learn last).

    P(t < a T) = a^(1 / power): with power 2, half the draws land below T / 4 (a quarter when uniform)."""
    u = _uniform(batch, generator)
    return (num_train_timesteps * u.pow(power)).long().clamp_(0, num_train_timesteps - 1).to(device)


def parse_step_schedule(pairs, name: str) -> list[tuple[int, float]]:
    """Validate ``[[start_step, value], ...]`` (a value from each global step on; starts strictly increasing)."""
    try:
        out = [(int(s), float(v)) for s, v in pairs]
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{name}={pairs!r}: expected a list of [start_step, value] pairs, e.g. [[0, 1.0], [4000, 2.0]]"
        ) from e
    starts = [s for s, _ in out]
    if any(s < 0 for s in starts) or starts != sorted(set(starts)):
        raise ConfigError(f"{name}={pairs!r}: start steps must be >= 0 and strictly increasing")
    return out


def value_at(schedule: list[tuple[int, float]], step: int, default: float) -> float:
    """The value of a step schedule at ``step``: that of the last start <= step, ``default`` before the first."""
    value = default
    for start, v in schedule:
        if step >= start:
            value = v
    return value


def _uniform(batch: int, generator) -> torch.Tensor:
    if isinstance(generator, BatchRandom):
        return generator.rand()
    return torch.rand(batch, generator=generator)


class BatchRandom:
    """The randomness of one training batch (noise, timesteps, grid points, condition dropout), drawn per
    sample from a generator keyed by ``(seed, batch number, position of the sample in the global batch)``.

    - exact resume: a resumed run draws what the uninterrupted run drew (no RNG state in checkpoints);
    - DDP: rank ``r`` of ``W`` holds global positions ``W * i + r`` (the ``DistributedSampler``
      interleaving), so a global batch split over ranks draws what one process with the whole batch
      draws, and the losses match.

    Draws happen on the CPU and are moved to the device (a few MB per step for video latents).
    """

    def __init__(self, seed: int, batch_number: int, batch_size: int, rank: int = 0, world_size: int = 1):
        base = (int(seed) * 1_000_003 + int(batch_number)) * 1_000_033
        self.generators = [torch.Generator().manual_seed(base + world_size * i + rank) for i in range(batch_size)]

    def rand(self) -> torch.Tensor:
        return torch.cat([torch.rand(1, generator=g) for g in self.generators])

    def randint(self, high: int) -> torch.Tensor:
        return torch.cat([torch.randint(0, high, (1,), generator=g) for g in self.generators])

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        """(B, *shape[1:]): one standard normal draw per sample (``shape[0]`` is the batch)."""
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in self.generators])


def batch_random(module, batch_size: int) -> BatchRandom:
    """The :class:`BatchRandom` of a LightningModule's current training batch."""
    trainer = getattr(module, "_trainer", None)
    number = int(trainer.fit_loop.total_batch_idx) if trainer is not None else 0
    world = trainer.world_size if trainer is not None else 1
    return BatchRandom(module.hparams.get("seed", 0), number, batch_size, module.global_rank, world)


class NonFinite:
    """What to do with a non-finite loss or gradient norm: ``raise`` (stop with a diagnostic) or ``skip``
    (no update for that batch; stop after ``max_consecutive`` in a row). A stop never writes a checkpoint,
    so the last good ``last.ckpt`` stays as it was; a skipped batch changes no weight. Under DDP the
    decision is taken jointly (one rank skipping alone would hang the gradient all-reduce)."""

    def __init__(self, policy: str = "raise", max_consecutive: int = 10):
        if policy not in ("raise", "skip"):
            raise ConfigError(f"method.nonfinite={policy!r}: choose 'raise' or 'skip'")
        self.policy, self.max_consecutive = policy, max_consecutive
        self.skipped = 0
        self.consecutive = 0

    def check(self, module, value: torch.Tensor, what: str, details=None) -> bool:
        """True when ``value`` is finite on every rank; otherwise logs and returns False (skip) or raises."""
        bad = not bool(torch.isfinite(value).all())
        trainer = getattr(module, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            self.consecutive = 0
            return True
        self.skipped += 1
        self.consecutive += 1
        extra = details() if callable(details) else (details or "")
        value = value.detach().float().cpu().flatten()[:4].tolist()
        msg = f"non-finite {what} at step {module.global_step} (value {value}){extra}"
        if self.policy == "raise" or self.consecutive > self.max_consecutive:
            why = "" if self.policy == "raise" else f" ({self.consecutive} batches in a row)"
            raise FloatingPointError(
                f"{msg}{why}. Training stopped; the last checkpoint is the last good state. Lower the learning "
                "rate, check the data, or set method.nonfinite=skip to skip such batches."
            )
        log.warning("%s: batch skipped (%d so far)", msg, self.skipped)
        module.log("train/nonfinite_skipped", float(self.skipped))
        return False

    def check_gradients(self, module, parameters, optimizer) -> torch.Tensor | None:
        """The total gradient norm when finite; otherwise the gradients are dropped (AdamW then leaves every
        parameter untouched) or the run stops, per the policy. None without gradients or when dropped."""
        norms = [p.grad.detach().norm() for p in parameters if p.grad is not None]
        if not norms:
            return None
        total = torch.stack(norms).norm()
        if self.check(module, total, "gradient norm"):
            return total
        optimizer.zero_grad(set_to_none=True)
        return None


def warmup_constant(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / max(1, warmup_steps))


def parse_anneal(anneal, name: str) -> tuple[int, int, float] | None:
    """Validate ``{start, end, floor}`` (a cosine lr decay to ``floor`` x lr between two global steps) or null."""
    if anneal is None:
        return None
    try:
        start, end, floor = int(anneal["start"]), int(anneal["end"]), float(anneal.get("floor", 0.1))
    except (TypeError, KeyError, ValueError) as e:
        raise ConfigError(f"{name}={anneal!r}: expected {{start: STEP, end: STEP, floor: 0.1}} or null") from e
    if not 0 <= start < end or not 0 <= floor <= 1:
        raise ConfigError(f"{name}={anneal!r}: need 0 <= start < end and 0 <= floor <= 1")
    return start, end, floor


def lr_factor(warmup_steps: int, anneal: tuple[int, int, float] | None = None):
    """The lr multiplier per optimizer step: linear warmup, constant, then (with ``anneal = (start, end, floor)``)
    a cosine from 1 at ``start`` down to ``floor`` at ``end``, held after. A plain function of the step, so a run
    resumed with a different ``anneal`` follows the new one from its current step."""
    warm = warmup_constant(warmup_steps)
    if anneal is None:
        return warm
    start, end, floor = anneal

    def f(step: int) -> float:
        progress = min(1.0, max(0.0, (step - start) / (end - start)))
        return warm(step) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    return f
