"""Segmented consistency distillation for any denoiser ``(x_t, t, cond) -> raw output``.

For a clean latent ``x0``, grid index ``n`` (timestep ``t_m``) in segment ``o`` with lower edge ``s_o``
and the previous grid point ``t_n = t_m - k`` (see ``diffusion/segments.py``):

1. ``x_tm = a x0 + s eps`` (fresh noise);
2. teacher ODE step with CFG (no grad): ``x_tn = jump(teacher(x_tm), t_n)``;
3. target (no grad): ``x_tn`` if ``t_n == s_o`` (the boundary), else ``jump(target_net(x_tn, t_n), s_o)``;
4. student: ``pred = jump(student(x_tm, t_m), s_o)``, which meets ``f(x_s, s) = x_s`` exactly;
5. ``L_CD = mean(W * d(pred, target))``; with the auxiliary head, ``L = L_CD + lambda_aux * L_aux`` where
   ``L_aux = mean(W_aux * (x0_aux - x0_real)^2)`` supervises the head's x0 with the *real* latents.

K = 1 with no extras is plain latent consistency distillation (the VideoLCM baseline).
A student may return ``(output, aux_output)``; the aux output is read in the same parameterisation.
Every network call gets ``schedule.network_timestep(t)`` (the index itself for VP, ``sigma * T`` for flow
matching); the segment grid, the edges and the jumps stay in schedule timesteps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dancelcm.diffusion.samplers import Denoiser, guided_output
from dancelcm.diffusion.schedule import CLEAN, Schedule
from dancelcm.diffusion.segments import Segments
from dancelcm.distill.losses import distance, weighted_mean


@dataclass
class Targets:
    x_tm: torch.Tensor
    t_m: torch.Tensor
    t_n: torch.Tensor
    lower: torch.Tensor  # s_o, the segment's lower edge
    segment: torch.Tensor  # o
    x_tn: torch.Tensor  # the teacher's ODE step
    target: torch.Tensor  # the consistency target at s_o


@torch.no_grad()
def consistency_targets(
    teacher: Denoiser,
    target_net: Denoiser,
    schedule: Schedule,
    segments: Segments,
    x0: torch.Tensor,
    cond: dict,
    grid_index: torch.Tensor,
    eps: torch.Tensor,
    uncond: dict | None = None,
    guidance: float = 1.0,
    target_cond: dict | None = None,
    every_sample: bool = False,
) -> Targets:
    """Steps 1-3: the noisy input, the teacher's CFG ODE step and the target at the lower edge.

    ``target_cond`` lets the target network see other conditions than the teacher (the student's own,
    e.g. with face tokens); by default both see ``cond``. The target network runs on the samples that are not at
    their segment's boundary only; ``every_sample`` runs it on the whole batch (keeping the same targets), so that
    every process makes the same forward calls whatever its samples: FSDP's forward is a collective.
    """
    t_m, t_n, lower = (v.to(x0.device) for v in segments.training_points(grid_index))
    x_tm = schedule.add_noise(x0, eps, t_m)
    out = guided_output(teacher, x_tm, schedule.network_timestep(t_m), cond, uncond, guidance)
    x_tn = schedule.jump(*schedule.to_x0_eps(out, x_tm, t_m), t_n)
    target = x_tn.clone()
    inner = t_n != lower  # not at the boundary: ask the target network, then jump to the edge
    if every_sample or inner.any():
        idx = torch.arange(len(t_n), device=t_n.device) if every_sample else inner.nonzero().squeeze(1)
        sub_cond = _index_cond(target_cond if target_cond is not None else cond, idx)
        t_sub = t_n[idx]
        o = _main_output(target_net(x_tn[idx], schedule.network_timestep(t_sub), sub_cond)).float()
        jumped = schedule.jump(*schedule.to_x0_eps(o, x_tn[idx], t_sub), lower[idx])
        keep = inner[idx]  # (all True unless every_sample)
        target[idx[keep]] = jumped[keep]
    return Targets(x_tm, t_m, t_n, lower, segments.segment_of(grid_index).to(x0.device), x_tn, target)


def _main_output(out):
    return out[0] if isinstance(out, tuple) else out


def _index_cond(cond: dict, idx: torch.Tensor) -> dict:
    out = {}
    for k, v in cond.items():
        if torch.is_tensor(v):
            out[k] = v[idx]
        elif isinstance(v, dict):
            out[k] = _index_cond(v, idx)
        else:
            out[k] = v
    return out


@dataclass
class LossWeights:
    distance: str = "huber"  # huber | l2
    huber_c: float = 1e-3
    aux: float = 0.0  # lambda_aux; 0 leaves the aux head without gradient
    aux_weighted: bool = False  # apply the motion weight map to L_aux too


@dataclass
class DistillOutput:
    loss: torch.Tensor
    loss_cd: torch.Tensor
    loss_aux: torch.Tensor | None
    per_sample_cd: torch.Tensor
    targets: Targets
    pred: torch.Tensor


def distillation_loss(
    student: Denoiser,
    targets: Targets,
    schedule: Schedule,
    x0: torch.Tensor,
    cond: dict,
    weights: LossWeights,
    weight_map: torch.Tensor | None = None,
) -> DistillOutput:
    """Steps 4-5: the student's jump to the lower edge, ``L_CD`` and (optionally) ``L_aux``."""
    out = student(targets.x_tm, schedule.network_timestep(targets.t_m), cond)
    main, aux = out if isinstance(out, tuple) else (out, None)
    x0_pred, eps_pred = schedule.to_x0_eps(main, targets.x_tm, targets.t_m)
    pred = schedule.jump(x0_pred, eps_pred, targets.lower)
    per_sample = weighted_mean(distance(pred, targets.target, weights.distance, weights.huber_c), weight_map)
    loss_cd = per_sample.mean()
    loss, loss_aux = loss_cd, None
    if aux is not None and weights.aux > 0:
        x0_aux, _ = schedule.to_x0_eps(aux, targets.x_tm, targets.t_m)
        w = weight_map if weights.aux_weighted else None
        loss_aux = weighted_mean((x0_aux - x0.float()) ** 2, w).mean()
        loss = loss_cd + weights.aux * loss_aux
    return DistillOutput(loss, loss_cd, loss_aux, per_sample, targets, pred)


@torch.no_grad()
def consistency_sample(
    student: Denoiser,
    noise: torch.Tensor,
    schedule: Schedule,
    segments: Segments,
    cond: dict,
    num_steps: int | None = None,
) -> torch.Tensor:
    """Deterministic segment-wise sampling from pure noise at ``T - 1``: for each (visited) segment from
    the top, ``x = jump(student(x, top), lower edge)``. NFE = ``num_steps`` (default K), no CFG."""
    x = noise.float()
    for t_from, t_to in segments.sampling_steps(num_steps):
        t = schedule.timesteps(t_from, x.shape[0], x.device)
        out = _main_output(student(x, schedule.network_timestep(t), cond)).float()
        x = schedule.jump(*schedule.to_x0_eps(out, x, t), t_to)
    assert t_to == CLEAN
    return x


@torch.no_grad()
def multistep_consistency_sample(
    student: Denoiser,
    noise: torch.Tensor,
    schedule: Schedule,
    num_steps: int,
    cond: dict,
    generator: torch.Generator | None = None,
    gamma: float = 1.0,
) -> torch.Tensor:
    """The LCM / TCD multistep sampler: at each of ``num_steps`` trailing timesteps predict x0, then
    re-noise to the next timestep with fresh noise (``gamma = 1``: LCM; ``gamma < 1``: TCD keeps part of
    the deterministic path). How a K = 1 student (VideoLCM) samples with more than one step."""
    ts = schedule.inference_timesteps(num_steps)
    x = noise.float()
    for i, t in enumerate(ts):
        tt = schedule.timesteps(t, x.shape[0], x.device)
        out = _main_output(student(x, schedule.network_timestep(tt), cond)).float()
        x0, eps = schedule.to_x0_eps(out, x, tt)
        if i + 1 == len(ts):
            return x0
        t_next = ts[i + 1]
        # TCD: land at s = (1 - gamma) t_next deterministically, then add noise up to t_next
        s = (1 - gamma) * t_next if gamma < 1 else CLEAN
        if gamma < 1 and isinstance(t_next, int):
            s = int(s)
        z = torch.randn(x.shape, generator=generator).to(x.device)
        x = schedule.renoise(schedule.jump(x0, eps, s), s, t_next, z)
    return x
