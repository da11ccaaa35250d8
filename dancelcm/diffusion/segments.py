"""Segments (phases) of the PF-ODE trajectory: one object for training targets and sampler timesteps.

Train steps ``T``; a solver grid of ``N`` points ``tau_n = (n + 1) T / N - 1`` (ascending, the top is
``T - 1``) with skip ``k = T / N``; ``K`` segments whose edges lie on the grid. Segment ``o`` covers
the grid points in ``(b_o, b_{o+1}]`` with edges ``b_o = o T / K - 1`` (``b_0 = CLEAN``, the clean end).

Training draws a grid point ``t_m = tau_n``, the teacher steps to ``t_n = t_m - k``, and the student
jumps to the lower edge ``b_o`` of ``t_m``'s segment. Sampling starts at ``T - 1`` and, per segment
from the top, jumps from ``b_{o+1}`` to ``b_o``: the sampler visits exactly the edges training used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dancelcm.diffusion.schedule import CLEAN


@dataclass(frozen=True)
class Segments:
    num_segments: int = 4  # K
    num_grid: int = 40  # N: solver steps over the whole trajectory (40 serves K = 1, 2, 4, 8)
    num_train_timesteps: int = 1000  # T

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

    @property
    def skip(self) -> int:
        """``k``: timesteps between neighbouring grid points (one teacher ODE step)."""
        return self.num_train_timesteps // self.num_grid

    @property
    def grid(self) -> torch.Tensor:
        """``tau_n``, ascending, shape (N,)."""
        return (torch.arange(self.num_grid) + 1) * self.skip - 1

    @property
    def edges(self) -> list[int]:
        """``[b_0 = CLEAN, b_1, ..., b_K = T - 1]``, ascending."""
        per = self.num_train_timesteps // self.num_segments
        return [CLEAN] + [(o + 1) * per - 1 for o in range(self.num_segments)]

    def segment_of(self, grid_index: torch.Tensor) -> torch.Tensor:
        """Segment index ``o`` of grid points (by index n)."""
        return torch.as_tensor(grid_index) // (self.num_grid // self.num_segments)

    def training_points(self, grid_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For grid indices n: ``(t_m, t_n, s_o)`` = (student timestep, teacher target timestep, lower edge)."""
        n = torch.as_tensor(grid_index, dtype=torch.long)
        t_m = self.grid[n]
        t_n = t_m - self.skip  # for n = 0 this is CLEAN
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
