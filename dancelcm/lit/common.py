"""Pieces shared by the LightningModules: conditions from a batch, timestep sampling, optimisers."""

from __future__ import annotations

import math

import torch


def make_conditions(batch: dict, autoencoder, names: list[str]) -> dict:
    """The condition dict the animator's embedders read, from a batch of the datamodule."""
    cond: dict = {"drop": {}}
    if "pose" in names:
        cond["pose"] = batch["pose"]
    if "reference" in names:
        cond["reference_latent"] = autoencoder.encode_images(batch["reference"])
    if "face" in names:
        cond["face_latent"] = autoencoder.encode_images(batch["face"])
        cond["face_valid"] = batch["face_valid"]
    return cond


def with_dropped(cond: dict, names: list[str] | tuple[str, ...], mask: torch.Tensor | None = None) -> dict:
    """A copy of ``cond`` with the named conditions dropped (for all samples, or where ``mask``)."""
    b = next(v for v in cond.values() if torch.is_tensor(v)).shape[0]
    device = next(v for v in cond.values() if torch.is_tensor(v)).device
    drop = dict(cond.get("drop", {}))
    for n in names:
        m = torch.ones(b, dtype=torch.bool, device=device) if mask is None else mask
        drop[n] = drop[n] | m if n in drop else m
    return {**cond, "drop": drop}


def random_condition_dropout(cond: dict, probs: dict[str, float], generator: torch.Generator | None = None) -> dict:
    """Drop each condition independently with its probability (so CFG has an unconditional model)."""
    out = cond
    b = next(v for v in cond.values() if torch.is_tensor(v)).shape[0]
    device = next(v for v in cond.values() if torch.is_tensor(v)).device
    for name, p in probs.items():
        if p > 0:
            mask = (torch.rand(b, generator=generator) < p).to(device)
            out = with_dropped(out, [name], mask)
    return out


def sample_timesteps(batch: int, num_train_timesteps: int, power: float = 1.0, device=None) -> torch.Tensor:
    """``t = floor(T u^power)``: power > 1 draws more low-noise timesteps (which learn last)."""
    u = torch.rand(batch, device=device)
    return (num_train_timesteps * u.pow(power)).long().clamp_(0, num_train_timesteps - 1)


def warmup_constant(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / max(1, warmup_steps))


def warmup_cosine(warmup_steps: int, total_steps: int, floor: float = 0.1):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f
