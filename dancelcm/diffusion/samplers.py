"""Samplers over any denoiser ``(x_t, t, cond) -> raw output``; conditions are dicts of batched tensors.

The denoiser's ``t`` is what the network is fed (``schedule.network_timestep``: the integer timestep of a VP
teacher, ``sigma * T`` of a flow-matching one); the samplers walk the schedule's own timesteps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from dancelcm.diffusion.schedule import CLEAN, Schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]


def _batch_size(cond: dict) -> int:
    for v in cond.values():
        if torch.is_tensor(v):
            return v.shape[0]
        if isinstance(v, dict) and v:
            return _batch_size(v)
    raise ValueError("a condition dict needs at least one batched tensor")


def cat_conditions(a: dict, b: dict) -> dict:
    """Concatenate two condition dicts along the batch (tensors are concatenated, other values must agree).

    ``drop`` (per-condition (B,) bool masks, see ``dancelcm.models.conditioning``) may name a condition in
    one half only: the other half keeps that condition (mask False). This is the CFG case, where the
    unconditional half is ``with_dropped(cond, ...)`` and the conditional half has no ``drop`` at all.
    Any other key must be in both halves.
    """
    out = {}
    for k in dict.fromkeys([*a, *b]):  # a's keys first, then b's own
        if k == "drop":
            da, db = a.get("drop", {}), b.get("drop", {})
            na, nb = _batch_size(a), _batch_size(b)
            out[k] = {}
            for n in dict.fromkeys([*da, *db]):
                ma = da[n] if n in da else torch.zeros(na, dtype=torch.bool, device=db[n].device)
                mb = db[n] if n in db else torch.zeros(nb, dtype=torch.bool, device=da[n].device)
                out[k][n] = torch.cat([ma.bool(), mb.bool()])
            continue
        if k not in a or k not in b:
            raise ValueError(f"condition {k!r} is in one CFG half only; both halves need the same keys")
        v = a[k]
        if torch.is_tensor(v):
            out[k] = torch.cat([v, b[k]], dim=0)
        elif isinstance(v, dict):
            out[k] = cat_conditions(v, b[k])
        else:
            if v != b[k]:
                raise ValueError(f"condition {k!r} differs between the halves: {v!r} vs {b[k]!r}")
            out[k] = v
    return out


def guided_output(
    denoiser: Denoiser,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: dict,
    uncond: dict | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Classifier-free guidance in Imagen form ``o_u + g (o_c - o_u)`` on the raw outputs, in float32.

    The conditional and unconditional halves run as one batched forward.
    """
    if uncond is None or guidance == 1.0:
        return denoiser(x, t, cond).float()
    out = denoiser(torch.cat([x, x]), torch.cat([t, t]), cat_conditions(cond, uncond)).float()
    o_c, o_u = out.chunk(2)
    return o_u + guidance * (o_c - o_u)


def ddim_step(schedule: Schedule, output: torch.Tensor, x: torch.Tensor, t, t_next) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) from ``t`` to ``t_next`` given the raw network output (for a flow
    schedule this is exactly the Euler step ``x + (sigma_next - sigma) v``)."""
    x0, eps = schedule.to_x0_eps(output, x, t)
    return schedule.jump(x0, eps, t_next)


def ddim_pairs(timesteps: Iterable[int]) -> list[tuple[int, int]]:
    ts = list(timesteps)
    return list(zip(ts, ts[1:] + [CLEAN]))


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser,
    noise: torch.Tensor,
    schedule: Schedule,
    num_steps: int,
    cond: dict,
    uncond: dict | None = None,
    guidance: float = 1.0,
    timesteps: list | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM from ``noise`` at the first timestep down to the clean end: the schedule's inference timesteps (VP:
    ``trailing`` spacing from T - 1; flow: the teacher scheduler's sigmas, where DDIM is the Euler sampler).
    With ``guidance != 1`` each step runs the conditional and unconditional halves in one forward.
    Returns float32 ``x0``; NFE = ``num_steps`` x (2 if guided else 1).
    """
    ts = timesteps if timesteps is not None else schedule.inference_timesteps(num_steps)
    x = noise.float()
    pairs = ddim_pairs(ts)
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc=f"DDIM {len(ts)} steps", leave=False)
    for t, t_next in pairs:
        tt = schedule.timesteps(t, x.shape[0], x.device)
        out = guided_output(denoiser, x, schedule.network_timestep(tt), cond, uncond, guidance)
        x = ddim_step(schedule, out, x, t, t_next)
    return x
