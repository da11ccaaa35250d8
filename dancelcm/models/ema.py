"""Exponential moving average of a network's weights, kept in float32 whatever the training precision."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn


def effective_decay(decay: float, warmup: bool, num_updates: torch.Tensor) -> float:
    """The decay of the next update: with ``warmup``, ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates."""
    if not warmup:
        return decay
    n = float(num_updates)
    return min(decay, (1 + n) / (10 + n))


class EMA(nn.Module):
    """``shadow <- decay * shadow + (1 - decay) * online`` after each real optimizer step.

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (diffusers'
    ``EMAModel`` warm-up), so an early shadow is not mostly the initial weights (0.999 ** 500 = 61 %).
    The shadow copy is a frozen fp32 module (a half-precision EMA stops moving once the update falls
    below its resolution). It is a submodule, so it is saved and restored with the checkpoint.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = False):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay} must be in [0, 1)")
        self.decay, self.warmup = decay, warmup
        self.shadow = copy.deepcopy(model).float().eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        d = effective_decay(self.decay if decay is None else decay, self.warmup, self.num_updates)
        online = [p.detach().float() for p in model.parameters()]
        shadow = list(self.shadow.parameters())
        if len(online) != len(shadow):
            raise ValueError("EMA: the online model's parameters do not match the shadow copy")
        torch._foreach_lerp_(shadow, online, 1.0 - d)
        for b_s, b_o in zip(self.shadow.buffers(), model.buffers()):
            b_s.copy_(b_o)
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        return self.shadow(*args, **kwargs)

    def train(self, mode: bool = True):  # the shadow never trains (no dropout)
        super().train(mode)
        self.shadow.eval()
        return self


class ParameterEMA(nn.Module):
    """An fp32 EMA of *some* parameters of a model (the LoRA student's trainable weights), swapped into the model
    for the EMA target's forward (:meth:`swapped_in`): the target costs the size of those parameters, not a copy of
    the network. Same update and warm-up rule as :class:`EMA`. The shadows are frozen parameters (``shadows.i``),
    so they are saved and restored with the checkpoint and FSDP shards them like the weights they follow."""

    def __init__(self, named_parameters: list[tuple[str, nn.Parameter]], decay: float = 0.999, warmup: bool = False):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay} must be in [0, 1)")
        if not named_parameters:
            raise ValueError("ParameterEMA: no parameters to average")
        self.decay, self.warmup = decay, warmup
        self.names = [n for n, _ in named_parameters]
        self.shadows = nn.ParameterList(
            [nn.Parameter(p.detach().float().clone(), requires_grad=False) for _, p in named_parameters]
        )
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _params(self, model: nn.Module) -> list[nn.Parameter]:
        params = dict(model.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ValueError(f"ParameterEMA: the model has no parameters {missing[:3]}")
        return [params[n] for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        d = effective_decay(self.decay if decay is None else decay, self.warmup, self.num_updates)
        torch._foreach_lerp_(list(self.shadows), [p.detach().float() for p in self._params(model)], 1.0 - d)
        self.num_updates += 1

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """The model with the averaged weights in place of its own (cast to each parameter's dtype), restored
        afterwards, also on error. For forward passes without grad (the consistency target)."""
        params = self._params(model)
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                for p, s in zip(params, self.shadows):
                    p.copy_(s)
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
