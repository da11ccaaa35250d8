"""The synthetic teacher's output stages: what its network adds after the backbone's output block.

Both are specific to the exact patch autoencoder of the embedded default (latent = ``pixel_unshuffle`` of the
frames) and to an x0 output; a model family with a learned VAE has neither (``Animator.output_stages`` is then
the identity). A second output head (the student's auxiliary head) must pass through them too.
"""

from __future__ import annotations

import torch
from torch import nn

from dancelcm.models.conditioning import dropped


def patch_highpass_kernel(factor: int, sigma: float) -> torch.Tensor:
    """The latent-space conv kernel (C, C, 1, 3, 3) of ``x - gaussian_blur(x, sigma)`` on the frames of the
    exact patch autoencoder (``pixel_unshuffle`` by ``factor``, C = 3 factor^2): built by decoding an
    impulse per latent channel, filtering the pixels and encoding back (the blur reaches the 8 neighbouring
    patches, hence 3x3)."""
    if 3 * sigma >= factor:
        raise ValueError(f"input_skip.blur_sigma={sigma}: the blur must stay within one patch of {factor} px")
    c = 3 * factor * factor
    z = torch.zeros(c, c, 3, 3, dtype=torch.float64)
    z[torch.arange(c), torch.arange(c), 1, 1] = 1.0
    px = nn.functional.pixel_shuffle(z, factor)  # (C_in, 3, 3f, 3f)
    r = int(3 * sigma + 0.5)
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    g = g / g.sum()
    flat = px.reshape(-1, 1, *px.shape[-2:])
    blur = nn.functional.conv2d(flat, g.view(1, 1, 1, -1), padding=(0, r))
    blur = nn.functional.conv2d(blur, g.view(1, 1, -1, 1), padding=(r, 0)).reshape(px.shape)
    out = nn.functional.pixel_unshuffle(px - blur, factor)  # (C_in, C_out, 3, 3): response to each impulse
    # cross-correlation: out[:, :, i, j] = W[:, :, 2 - i, 2 - j] for an impulse at the centre
    return out.permute(1, 0, 2, 3).flip(-1, -2)[:, :, None].float()


def wiener_gain(scheduler: dict, detail_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per training timestep: the gain ``d^2 a_t / (d^2 a_t^2 + s_t^2)`` that recovers a band of std ``d`` from
    ``x_t`` (~1 / a_t while the noise is below the band, 0 at the top), and the noise level ``(s_t, a_t)``."""
    from dancelcm.diffusion import NoiseSchedule
    from dancelcm.diffusion.schedule import is_flow_config

    if is_flow_config(dict(scheduler)):
        raise ValueError(
            "model.animator.input_skip is made for a variance-preserving schedule (its gain is indexed by the "
            "integer timestep); a flow-matching teacher has none: set model.animator.input_skip=null"
        )
    sched = NoiseSchedule.from_scheduler_config(scheduler, prediction_type="sample")  # only its a_t, s_t
    a, s = sched.coefficients(torch.arange(sched.num_train_timesteps))
    d2 = detail_std**2
    return (d2 * a / (d2 * a**2 + s**2)).float(), torch.stack([s, a], -1).float()


class InputSkip(nn.Module):
    """A linear path from ``x_t`` to the x0 output: ``c(t) * P(x_t)`` next to the UNet.

    For x0 output (``prediction_type: sample``) at low noise the clean latent is almost ``x_t`` itself; a UNet
    whose output passes through GroupNorm + SiLU + conv does not copy a 192-dim patch latent through, so its
    x0 estimate stays smooth even at t = 10 (measured: sharpness 0.24 against 1.06 for ``x_t`` itself). This
    path carries the detail; the UNet learns the rest. ``P`` is a learned 3x3 latent conv that starts as
    ``x - blur(x)`` on the frames (``init=highpass``, for the patch autoencoder: the detail band a smooth UNet
    output lacks) or a learned 1x1 identity (``init=identity``). ``c(t) = d^2 a_t / (d^2 a_t^2 + s_t^2)`` is
    the Wiener (EDM c_skip) gain of a band with per-dimension std ``detail_std`` = d: ~1 / a_t while the noise
    is below the detail, 0 at the top. It is fixed: a gate learned per noise level barely moved at low t
    (few samples land there; it reached 0.2 in 500 steps where the least-squares gain is 0.92), and the
    least-squares gains measured on a trained UNet (0.92, 0.55, 0.32, 0.12 at t = 10, 50, 100, 200) fit
    d^2 = 0.06-0.13. Written here: EDM's c_skip applied to a learned detail filter."""

    def __init__(
        self,
        channels: int,
        scheduler: dict | None = None,
        init: str = "highpass",
        factor: int | None = None,
        blur_sigma: float = 1.0,
        detail_std: float = 0.25,
    ):
        super().__init__()
        if scheduler is None:
            raise ValueError("input_skip needs the model's scheduler config (input_skip.scheduler) for its gain")
        if init == "identity":
            self.proj = nn.Conv3d(channels, channels, 1)
            weight = torch.eye(channels)[:, :, None, None, None]
        elif init == "highpass":
            if factor is None or channels != 3 * factor * factor:
                raise ValueError(
                    f"input_skip.init=highpass needs the patch autoencoder's layout (3 x factor^2 channels); "
                    f"got {channels} channels, factor {factor}. Use input_skip.init=identity"
                )
            self.proj = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))
            weight = patch_highpass_kernel(factor, blur_sigma)
        else:
            raise ValueError(f"input_skip.init={init!r}: choose identity or highpass")
        with torch.no_grad():
            self.proj.weight.copy_(weight)
            self.proj.bias.zero_()
        self.register_buffer("gain", wiener_gain(scheduler, detail_std)[0], persistent=False)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device).long().clamp(0, self.gain.numel() - 1)
        return self.gain[t].reshape(-1, 1, 1, 1, 1).to(x_t.dtype) * self.proj(x_t)


class PixelRefiner(nn.Module):
    """A small per-frame CNN at pixel resolution that corrects the x0 output: ``x0 += R([x0, g(t) x_t], t)``.

    For the exact patch autoencoder only (latent = ``pixel_unshuffle`` of the frames by ``factor``). The UNet
    works on an 8x8 grid of 192-dim patch tokens: about three features per pixel at its widest level, too few
    to tell pixel-level noise from detail (measured on the skip teacher: the x0 estimate at t = 10 was 35.7 dB
    against 35.1 dB for x_t itself, so low-noise steps barely denoise). This head gives every pixel ``width``
    features over a (2 layers + 1) x 2 + 1 pixel receptive field; it sees the current x0 estimate and ``x_t``
    scaled by the input skip's Wiener gain ``g(t)`` (bounded at every t), and its hidden features are
    modulated (FiLM) by the noise level. The last conv starts at zero, so a network gains it without change.
    With ``conditions`` it also sees the reference frame and / or the pose map at full resolution (zeros where a
    condition is dropped, as the embedders do): the UNet gets them at its 8x8 grid only, through a 1x1
    projection (reference) and strided convs (pose), which cannot place a background pixel or a limb edge.
    Written here: a pixel-space output stage in the spirit of the full-resolution levels of pixel UNets."""

    PIXEL_CONDITIONS = ("reference", "pose")

    def __init__(
        self,
        channels: int,
        factor: int,
        scheduler: dict | None = None,
        width: int = 32,
        layers: int = 2,
        detail_std: float = 0.25,
        conditions: list[str] | tuple[str, ...] = (),
    ):
        super().__init__()
        if scheduler is None:
            raise ValueError("pixel_refiner needs the model's scheduler config (pixel_refiner.scheduler)")
        unknown = sorted(set(conditions) - set(self.PIXEL_CONDITIONS))
        if unknown:
            raise ValueError(
                f"pixel_refiner.conditions: {unknown} cannot be given at pixel resolution; choose from "
                f"{list(self.PIXEL_CONDITIONS)}"
            )
        self.conditions = [c for c in self.PIXEL_CONDITIONS if c in conditions]  # a fixed channel order
        if channels != 3 * factor * factor:
            raise ValueError(
                f"pixel_refiner works on the patch autoencoder's layout (3 x factor^2 channels); got {channels} "
                f"channels, factor {factor}. Set model.animator.pixel_refiner=null for a learned VAE"
            )
        if layers < 1:
            raise ValueError(f"pixel_refiner.layers={layers}: need at least 1")
        self.factor = factor
        self.conv_in = nn.Conv2d(6 + 3 * len(self.conditions), width, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(layers))
        self.film = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 2 * width * (layers + 1)))
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        nn.init.zeros_(self.film[-1].weight)
        nn.init.zeros_(self.film[-1].bias)
        gain, level = wiener_gain(scheduler, detail_std)
        self.register_buffer("gain", gain, persistent=False)
        self.register_buffer("level", level, persistent=False)

    def forward(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        b, c, f, h, w = x0.shape
        t = torch.as_tensor(t, device=x0.device).long().clamp(0, self.gain.numel() - 1).expand(b)
        gain = self.gain[t].reshape(-1, 1, 1, 1, 1).to(x0.dtype)

        def frames(z):  # (B, C, F, h, w) -> (B F, 3, h f, w f)
            return nn.functional.pixel_shuffle(z.transpose(1, 2).reshape(b * f, c, h, w), self.factor)

        parts = [frames(x0), frames(gain * x_t)]
        if self.conditions and cond is None:
            raise ValueError(f"pixel_refiner.conditions={self.conditions}: the refiner needs the condition dict")
        for name in self.conditions:
            keep = (~dropped(cond, name, b, x0.device)).to(x0.dtype).repeat_interleave(f)[:, None, None, None]
            if name == "reference":  # its latent, at pixel resolution, the same for every frame
                ref = nn.functional.pixel_shuffle(cond["reference_latent"].to(x0.dtype), self.factor)
                parts.append(ref.repeat_interleave(f, dim=0) * keep)
            else:  # the pose map, (B, F, 3, H, W) in [-1, 1]
                parts.append(cond["pose"].to(x0.dtype).reshape(b * f, *cond["pose"].shape[2:]) * keep)
        x = torch.cat(parts, dim=1)
        mod = self.film(self.level[t].to(x0.dtype)).repeat_interleave(f, dim=0)[:, :, None, None]
        scales, shifts = mod.chunk(2, dim=1)
        convs = [self.conv_in, *self.convs]  # each followed by FiLM + SiLU
        hidden = x
        for conv, scale, shift in zip(convs, scales.chunk(len(convs), 1), shifts.chunk(len(convs), 1)):
            hidden = nn.functional.silu(conv(hidden) * (1 + scale) + shift)
        delta = nn.functional.pixel_unshuffle(self.conv_out(hidden), self.factor)
        return x0 + delta.reshape(b, f, c, h, w).transpose(1, 2)
