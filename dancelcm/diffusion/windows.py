"""Long videos from a network that sees windows of a few frames: overlapping windows fused at every step.

A sampler here is a sequence of deterministic steps ``x_t -> x_{t'}`` that each read the network's ``(x0, eps)``
estimate and jump (DDIM, the flow Euler step, the student's segment jumps: ``x_{t'} = a_{t'} x0 + s_{t'} eps``). For a
video longer than the network's window, every step runs the network on overlapping windows of the current latent
video, averages the windows' ``x0`` and ``eps`` frame by frame with weights that fall off toward each window's edges,
and makes one jump for the whole video. Because the jump is linear in ``(x0, eps)``, fusing the estimates is the same
as fusing the windows' next states; with the noise drawn once for the whole video, overlapping windows see the same
noise and the same ``x_t`` in their shared frames, so there is no border to jump across (MimicMotion's progressive
latent fusion; AnimateDiff's context windows). The network's memory is one window's, whatever the video's length.

The method is standard; its arrangement here (one loop for every sampler of the project, fusion on ``(x0, eps)``) is
this project's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from dancelcm.diffusion.schedule import CLEAN, Schedule

WEIGHTS = ("uniform", "triangular", "cosine")


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frames of windows of ``window`` frames, ``window - overlap`` apart, the last one ending on the last
    frame (so it may overlap its neighbour more: with ``overlap=0`` and a length that is not a multiple of the
    window, the last window still overlaps, and is fused); one window when the video is no longer than that."""
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"window={window}, overlap={overlap}: need window >= 1 and 0 <= overlap < window")
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, window - overlap))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return starts


def window_borders(num_frames: int, window: int, overlap: int) -> list[int]:
    """The frame transitions ``i -> i + 1`` that cross a window's edge (where independent windows would jump): the
    seam measure compares the change there with the change elsewhere. Empty for one window."""
    starts = window_starts(num_frames, window, overlap)
    if len(starts) == 1:
        return []
    size = min(window, num_frames)
    edges = {s - 1 for s in starts[1:]} | {s + size - 1 for s in starts if s + size < num_frames}
    return sorted(edges)


def window_weights(window: int, kind: str = "triangular") -> torch.Tensor:
    """Per-frame fusion weights of one window ``(window,)``, all > 0: ``uniform`` (a plain mean over the windows
    covering a frame), ``triangular`` (rising linearly from each edge to the middle) or ``cosine`` (a raised sine)."""
    i = torch.arange(window, dtype=torch.float64)
    if kind == "uniform":
        w = torch.ones(window, dtype=torch.float64)
    elif kind == "triangular":
        w = torch.minimum(i + 1, window - i)
    elif kind == "cosine":
        w = torch.sin(math.pi * (i + 0.5) / window)
    else:
        raise ValueError(f"weights={kind!r}: choose one of {', '.join(WEIGHTS)}")
    return (w / w.max()).float()


Predict = Callable[[torch.Tensor, object, int], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def fused_sample(
    predict: Predict,
    noise: torch.Tensor,
    schedule: Schedule,
    steps: Sequence[tuple],
    window: int,
    overlap: int,
    weights: str = "triangular",
    progress: Callable | None = None,
    fresh_noise: Callable[[torch.Size], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sample a whole latent video ``noise`` ``(B, C, F, h, w)`` through ``steps`` ``[(t, t_next), ...]`` (ending at
    the clean end), the network seen through ``predict(x_window, t, first_frame) -> (x0, eps)`` on each window.
    ``fresh_noise(shape)``: the LCM multistep sampler, which re-noises the fused ``x0`` to ``t_next`` with new noise
    (drawn once for the whole video) instead of following ``eps``. One window (``F <= window``) is exactly the
    unwindowed sampler. Returns float32 ``x0``."""
    x = noise.float()
    num_frames = x.shape[2]
    starts = window_starts(num_frames, window, overlap)
    size = min(window, num_frames)
    w = window_weights(size, weights).to(x.device)
    total = torch.zeros(num_frames, device=x.device)
    for s in starts:
        total[s : s + size] += w
    if len(starts) == 1:
        w = torch.ones_like(w)  # no fusion: the window's own estimate, bit for bit
        total = torch.ones_like(total)
    for t, t_next in steps:
        x0_sum, eps_sum = torch.zeros_like(x), torch.zeros_like(x)
        for s in starts:
            x0, eps = predict(x[:, :, s : s + size], t, s)
            ww = w.view(1, 1, -1, *([1] * (x.ndim - 3)))
            x0_sum[:, :, s : s + size] += ww * x0.float()
            eps_sum[:, :, s : s + size] += ww * eps.float()
            if progress is not None:
                progress()
        norm = total.view(1, 1, -1, *([1] * (x.ndim - 3)))
        x0, eps = x0_sum / norm, eps_sum / norm
        if fresh_noise is not None and t_next != CLEAN:
            eps = fresh_noise(x.shape).to(x.device)
        x = schedule.jump(x0, eps, t_next)
    return x
