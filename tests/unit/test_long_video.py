"""The long-video sampler (#27): overlapping windows fused on (x0, eps) at every step.

- one window = today's samplers exactly (the teacher's DDIM + CFG and the student's segments);
- fusing windows that agree changes nothing: a frame-wise network sampled in overlapping windows equals the same
  network on the whole video;
- the network never sees more than a window, whatever the video's length;
- window layout, weights and the NFE count."""

from __future__ import annotations

import pytest
import torch

from dancelcm.diffusion import NoiseSchedule, Segments
from dancelcm.diffusion.samplers import ddim_pairs, ddim_sample
from dancelcm.diffusion.windows import fused_sample, window_starts, window_weights
from dancelcm.distill.consistency import consistency_sample
from dancelcm.sampling import nfe_per_frame
from tests.unit.toy import SCHEDULER

SCHEDULE = NoiseSchedule.from_scheduler_config(dict(SCHEDULER))


class FrameNet(torch.nn.Module):
    """A denoiser whose output at a frame depends on that frame alone (and t): windows of it agree exactly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 1, 1))
        self.seen: list[int] = []

    def forward(self, x, t, cond):
        self.seen.append(x.shape[2])
        return torch.tanh(self.conv(x)) * (t.float().view(-1, 1, 1, 1, 1) / 1000)


class MixNet(FrameNet):
    """A denoiser that mixes frames (a temporal convolution): windows disagree at their borders."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(4, 4, (3, 3, 3), padding=(1, 1, 1))


def _predict(net):
    def predict(x, t, start):
        tt = SCHEDULE.timesteps(t, x.shape[0], x.device)
        return SCHEDULE.to_x0_eps(net(x, SCHEDULE.network_timestep(tt), {}).float(), x, tt)

    return predict


def test_window_layout_weights_and_nfe():
    assert window_starts(48, 8, 0) == [0, 8, 16, 24, 32, 40]
    assert window_starts(48, 8, 2) == [0, 6, 12, 18, 24, 30, 36, 40]  # the last window ends on the last frame
    assert window_starts(5, 8, 2) == [0]
    with pytest.raises(ValueError, match="overlap"):
        window_starts(48, 8, 8)
    for kind in ("uniform", "triangular", "cosine"):
        w = window_weights(8, kind)
        assert w.shape == (8,) and (w > 0).all() and torch.allclose(w, w.flip(0))
    assert window_weights(8, "triangular").tolist()[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert nfe_per_frame(4, 48, 8, 0) == 4.0  # independent windows: the sampler's own NFE per frame
    assert nfe_per_frame(4, 48, 8, 2) == pytest.approx(4 * 8 * 8 / 48)


def test_one_window_is_the_unwindowed_sampler_exactly():
    net = MixNet()
    noise = torch.randn(2, 4, 6, 8, 8, generator=torch.Generator().manual_seed(1))
    steps = ddim_pairs(SCHEDULE.inference_timesteps(5))
    ours = fused_sample(_predict(net), noise, SCHEDULE, steps, window=8, overlap=2)
    assert torch.equal(ours, ddim_sample(net, noise, SCHEDULE, 5, {}))
    seg = Segments(num_segments=4)
    ours = fused_sample(_predict(net), noise, SCHEDULE, seg.sampling_steps(4), window=6, overlap=0)
    assert torch.equal(ours, consistency_sample(net, noise, SCHEDULE, seg, {}))


@pytest.mark.parametrize("weights", ["uniform", "triangular", "cosine"])
def test_fusing_windows_that_agree_changes_nothing_and_the_network_sees_one_window(weights):
    net = FrameNet()
    noise = torch.randn(1, 4, 30, 8, 8, generator=torch.Generator().manual_seed(2))
    steps = ddim_pairs(SCHEDULE.inference_timesteps(4))
    whole = ddim_sample(net, noise, SCHEDULE, 4, {})
    net.seen.clear()
    fused = fused_sample(_predict(net), noise, SCHEDULE, steps, window=8, overlap=3, weights=weights)
    torch.testing.assert_close(fused, whole, rtol=0, atol=1e-5)
    assert max(net.seen) == 8  # memory: never more than one window of frames, for 30 frames as for 8


def test_overlapping_fused_windows_remove_the_jump_at_window_borders():
    """A denoiser that sees its window as one still picture (x0 = the window's mean frame): independent windows give
    a video that jumps at every window border; overlapping windows, fused, blend from one to the next."""

    def still(x, t, start):
        tt = SCHEDULE.timesteps(t, x.shape[0], x.device)
        a, s = SCHEDULE.coefficients(tt, like=x)
        x0 = x.mean(dim=2, keepdim=True).expand_as(x) / a.clamp_min(1e-3)
        return x0, (x - a * x0) / s.clamp_min(1e-6)

    noise = torch.randn(1, 4, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    steps = ddim_pairs(SCHEDULE.inference_timesteps(6))
    borders = [s - 1 for s in window_starts(32, 8, 0)[1:]]  # frame i -> i + 1 crosses an independent window's edge

    def border_change(x):
        d = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4))
        return d[borders].mean().item()

    independent = fused_sample(still, noise, SCHEDULE, steps, window=8, overlap=0)
    fused = fused_sample(still, noise, SCHEDULE, steps, window=8, overlap=4)
    inside = (independent[:, :, 1:8] - independent[:, :, :7]).abs().max().item()
    assert inside < 1e-3 and border_change(independent) > 0.1  # still inside a window, a jump at its edge
    assert border_change(fused) < 0.5 * border_change(independent)


def test_the_weights_matter_where_windows_disagree_and_bad_options_stop_at_once():
    net = MixNet()
    noise = torch.randn(1, 4, 20, 8, 8, generator=torch.Generator().manual_seed(4))
    steps = ddim_pairs(SCHEDULE.inference_timesteps(3))
    runs = {w: fused_sample(_predict(net), noise, SCHEDULE, steps, 8, 4, weights=w) for w in ("uniform", "triangular")}
    assert (runs["uniform"] - runs["triangular"]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="weights='flat'"):
        window_weights(8, "flat")
