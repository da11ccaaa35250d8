"""Segments (phases) of the PF-ODE trajectory: one object for training targets and sampler timesteps.

Train steps ``T``; a solver grid of ``N`` points ``tau_n = (n + 1) T / N - 1`` (ascending, the top is
``T - 1``) with skip ``k = T / N``; ``K`` segments whose edges lie on the grid. Segment ``o`` covers
the grid points in ``(b_o, b_{o+1}]`` with edges ``b_o = o T / K - 1`` (``b_0 = CLEAN``, the clean end).

Training draws a grid point ``t_m = tau_n``, the teacher steps to ``t_n = tau_{n-1}`` (``CLEAN`` below
``tau_0``), and the student jumps to the lower edge ``b_o`` of ``t_m``'s segment. Sampling starts at ``T - 1``
and, per segment from the top, jumps from ``b_{o+1}`` to ``b_o``: the sampler visits exactly the edges
training used.

The grid's spacing (``grid``) is free as long as the edges lie on it, with ``N / K`` points in every
segment:

- ``uniform`` (above): one teacher step is ``k = T / N`` timesteps everywhere; a denser uniform grid with the
  same edges is a larger ``N``.
- ``log_snr``: in every segment the points are evenly spaced in the schedule's log-SNR (``log a^2 / s^2``),
  which puts short teacher steps at the clean end of each segment, where the posterior mean changes fastest.
  The top segment's log-SNR is clipped at the point one uniform step below the top (a zero-terminal-SNR
  or flow schedule is ``-inf`` at ``T - 1``).
- ``fine_end``: the lowest segment (the clean end of the trajectory, where one uniform step to the clean end
  returns the posterior mean, a blurred sample) in log-SNR; the others uniform.

The grid only shapes training (the teacher's steps); the student's sampler visits the edges, which every
grid shares, so a student's bundle needs no grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch

from dancelcm.diffusion.schedule import CLEAN, Schedule

GRIDS = ("uniform", "log_snr", "fine_end")


@dataclass(frozen=True)
class Segments:
    num_segments: int = 4  # K
    num_grid: int = 40  # N: solver steps over the whole trajectory (40 serves K = 1, 2, 4, 8)
    num_train_timesteps: int = 1000  # T
    grid_kind: str = "uniform"  # uniform | log_snr | fine_end (see the module docstring)
    # the schedule's log-SNR at t = 0 .. T - 1 (a non-uniform grid needs it: ``Segments.for_schedule``)
    log_snr: Sequence[float] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def for_schedule(cls, schedule: Schedule, grid_kind: str = "uniform", **sizes) -> Segments:
        """Segments whose grid may follow ``schedule``'s log-SNR (``grid_kind`` log_snr / fine_end)."""
        T = sizes.get("num_train_timesteps", 1000)
        lam = None
        if grid_kind != "uniform":
            lam = tuple(float(v) for v in schedule.snr(torch.arange(T)).double().log())
        return cls(grid_kind=grid_kind, log_snr=lam, **sizes)

    def __post_init__(self):
        T, N, K = self.num_train_timesteps, self.num_grid, self.num_segments
        if min(T, N, K) < 1:
            raise ValueError(f"num_train_timesteps={T}, num_grid={N}, num_segments={K} must all be >= 1")
        if T % N:
            raise ValueError(
                f"num_train_timesteps={T} is not divisible by num_grid={N}: the grid would miss the top "
                f"timestep {T - 1}; choose N dividing T (e.g. 20, 40, 50)"
            )
        if N % K:
            raise ValueError(
                f"num_grid={N} is not divisible by num_segments={K}: segment edges must lie on the grid; "
                f"choose K dividing N (N=40 serves K = 1, 2, 4, 8)"
            )
        if self.grid_kind not in GRIDS:
            raise ValueError(f"grid={self.grid_kind!r}: choose one of {', '.join(GRIDS)}")
        if self.log_snr is not None and len(self.log_snr) != T:
            raise ValueError(f"log_snr has {len(self.log_snr)} values: one per timestep, T={T}, expected")

    @property
    def skip(self) -> int:
        """``k``: timesteps between neighbouring points of the uniform grid (one teacher ODE step there)."""
        return self.num_train_timesteps // self.num_grid

    @property
    def grid(self) -> torch.Tensor:
        """``tau_n``, ascending, shape (N,)."""
        return torch.tensor(self._points, dtype=torch.long)

    @cached_property
    def _points(self) -> tuple[int, ...]:
        uniform = [(n + 1) * self.skip - 1 for n in range(self.num_grid)]
        if self.grid_kind == "uniform":
            return tuple(uniform)
        if self.log_snr is None:
            raise ValueError(
                f"grid={self.grid_kind!r} places the points by the schedule's log-SNR: build the segments with "
                f"Segments.for_schedule(schedule, ...)"
            )
        per, e = self.num_grid // self.num_segments, self.edges
        top = self.num_train_timesteps - 1 - self.skip  # where the top segment's log-SNR is clipped
        lam = [max(v, self.log_snr[top]) for v in self.log_snr]  # -inf at T - 1 on zero-SNR / flow schedules
        points: list[int] = []
        for o in range(self.num_segments):
            if self.grid_kind == "fine_end" and o > 0:
                points += uniform[o * per : (o + 1) * per]
            else:
                points += _log_snr_points(lam, 0 if o == 0 else e[o], e[o + 1], per, closed=o == 0)
        return tuple(points)

    @property
    def edges(self) -> list[int]:
        """``[b_0 = CLEAN, b_1, ..., b_K = T - 1]``, ascending."""
        per = self.num_train_timesteps // self.num_segments
        return [CLEAN] + [(o + 1) * per - 1 for o in range(self.num_segments)]

    def segment_of(self, grid_index: torch.Tensor) -> torch.Tensor:
        """Segment index ``o`` of grid points (by index n): every segment holds ``N / K`` of them."""
        return torch.as_tensor(grid_index) // (self.num_grid // self.num_segments)

    def training_points(self, grid_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For grid indices n: ``(t_m, t_n, s_o)`` = (student timestep, teacher target timestep, lower edge)."""
        n = torch.as_tensor(grid_index, dtype=torch.long)
        below = torch.cat([torch.tensor([CLEAN]), self.grid])  # below[n] = tau_{n-1}; CLEAN for n = 0
        t_m, t_n = self.grid[n], below[n]
        lower = torch.tensor(self.edges[:-1], dtype=torch.long)[self.segment_of(n)]
        return t_m, t_n, lower

    def sample_grid_indices(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.num_grid, (batch_size,), generator=generator)

    def sampling_steps(self, num_steps: int | None = None) -> list[tuple[int, int]]:
        """``[(t_from, t_to), ...]`` from ``T - 1`` to ``CLEAN``.

        ``num_steps = K`` (default) visits every edge: ``b_K -> b_{K-1} -> ... -> b_0``. Fewer steps
        jump over edges (an evenly spaced subset of them, always ending at CLEAN); more than K is
        refused because the student was never trained to stop inside a segment.
        """
        K = self.num_segments
        num_steps = K if num_steps is None else num_steps
        if not 1 <= num_steps <= K:
            raise ValueError(f"num_steps={num_steps}: a K={K} student samples with 1..{K} steps")
        e = self.edges
        keep = sorted({round(i * K / num_steps) for i in range(num_steps + 1)})
        visited = [e[i] for i in keep][::-1]
        return list(zip(visited[:-1], visited[1:]))


def _log_snr_points(lam: Sequence[float], low: int, high: int, count: int, closed: bool) -> list[int]:
    """``count`` integer timesteps in ``(low, high]`` (``[low, high]`` when ``closed``), ending at ``high``, evenly
    spaced in the decreasing log-SNR ``lam`` and strictly increasing (a coarse integer table near the clean end can
    map two targets to one timestep: they are pushed apart by one)."""
    lo_lam, hi_lam = lam[low], lam[high]
    if closed:
        targets = [hi_lam + (lo_lam - hi_lam) * j / max(count - 1, 1) for j in range(count)]
    else:
        targets = [hi_lam + (lo_lam - hi_lam) * j / count for j in range(count)]
    first = low if closed else low + 1
    candidates = range(first, high + 1)
    picked = sorted(min(candidates, key=lambda t: (abs(lam[t] - x), t)) for x in targets)
    for j in range(1, count):  # strictly increasing from the bottom ...
        picked[j] = max(picked[j], picked[j - 1] + 1)
    picked[-1] = high
    for j in range(count - 2, -1, -1):  # ... and below the top edge
        picked[j] = min(picked[j], picked[j + 1] - 1)
    if picked[0] < first or not all(math.isfinite(lam[t]) for t in picked[:-1]):
        raise ValueError(f"cannot place {count} grid points in ({low}, {high}]")
    return picked
