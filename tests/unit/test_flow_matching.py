"""Flow matching in the schedule: rectified flow ``x_t = (1 - sigma) x0 + sigma eps`` with velocity prediction.

The schedule must reproduce diffusers' flow schedulers (training table, inference sigmas, what the network is fed),
its Euler step must be the DDIM jump, the teacher's Euler + CFG sampler must equal a diffusers scheduler loop, and
the segment machinery must behave exactly as on the VP schedule.
"""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from torch import nn

from dancelcm.diffusion import CLEAN, FlowMatchSchedule, NoiseSchedule, Segments, schedule_from_config
from dancelcm.diffusion.samplers import ddim_sample
from dancelcm.distill.consistency import consistency_sample, consistency_targets, multistep_consistency_sample
from tests.unit.toy import SCHEDULER

FLOW = dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=3.0)
WAN_UNIPC = dict(  # the scheduler_config.json Wan2.x ships (the keys that matter here)
    _class_name="UniPCMultistepScheduler",
    num_train_timesteps=1000,
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    flow_shift=5.0,
)


def test_the_table_is_diffusers_training_table_and_the_network_gets_sigma_times_1000():
    ours = schedule_from_config(dict(FLOW))
    assert isinstance(ours, FlowMatchSchedule) and ours.shift == 3.0
    ref = FlowMatchEulerDiscreteScheduler.from_config(FLOW)  # sigmas and timesteps from the top (noise) down
    t = torch.arange(1000)
    torch.testing.assert_close(ours.sigma(t).float(), ref.sigmas.flip(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.network_timestep(t), ref.timesteps.flip(0), atol=0, rtol=1e-6)  # 1 ulp
    assert ours.network_timestep(t).dtype == torch.float32
    a, s = ours.coefficients(torch.tensor([CLEAN, 999]))
    assert a.tolist() == [1.0, 0.0] and s.tolist() == [0.0, 1.0]
    assert ours.terminal_signal == 0.0


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_conversions_both_ways(shift):
    sched = FlowMatchSchedule(1000, shift)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 4, 3, generator=g), torch.randn(6, 4, 3, generator=g)
    t = torch.tensor([0, 10, 250.5, 499, 900.25, 999])  # fractional timesteps are points of the flow too
    x_t = sched.jump(x0, eps, t)
    v = sched.target(x0, eps, t)
    torch.testing.assert_close(v, eps - x0)
    x0_back, eps_back = sched.to_x0_eps(v, x_t, t)
    torch.testing.assert_close(x0_back, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(eps_back, eps, atol=1e-5, rtol=0)
    # sigma <-> t both ways
    sig = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(sched.sigma(sched.t_of_sigma(sig)), sig, atol=1e-12, rtol=0)
    torch.testing.assert_close(sched.t_of_sigma(sched.sigma(t)), t.double(), atol=1e-9, rtol=0)


def test_one_euler_step_is_the_jump():
    sched = FlowMatchSchedule(1000, 3.0)
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    for t, s in [(999, 749), (749, 0), (300.5, 12.25), (24, CLEAN)]:
        tt = torch.full((5,), float(t))
        sig_t, sig_s = sched.sigma(t).float(), sched.sigma(s).float()
        euler = x + (sig_s - sig_t) * v
        torch.testing.assert_close(sched.jump(*sched.to_x0_eps(v, x, tt), s), euler, atol=2e-6, rtol=0)


class Velocity(nn.Module):
    """A fixed, non-linear conditional velocity field ``(x, network timestep, cond) -> v``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8 + 1 + 8, 32), nn.Tanh(), nn.Linear(32, 8))

    def forward(self, x, t, cond):
        return self.net(torch.cat([x, t.float()[:, None] / 1000, cond["c"]], 1))


@pytest.mark.parametrize("config", [FLOW, dict(FLOW, shift=1.0), WAN_UNIPC], ids=["shift3", "shift1", "wan_unipc"])
def test_teacher_euler_cfg_sampler_equals_a_diffusers_scheduler_loop(config):
    net = Velocity()
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(3, 8, generator=g)
    cond, uncond = {"c": torch.randn(3, 8, generator=g)}, {"c": torch.zeros(3, 8)}
    steps, guidance = 12, 3.5
    ours = ddim_sample(net, noise, schedule_from_config(dict(config)), steps, cond, uncond, guidance)

    # the reference: diffusers' Euler scheduler on the sigmas the teacher's scheduler would use
    if config["_class_name"] == "UniPCMultistepScheduler":
        unipc = UniPCMultistepScheduler.from_config(config)
        unipc.set_timesteps(steps)
        ref_sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
        ref_sched.set_timesteps(sigmas=unipc.sigmas[:-1].tolist())
        # diffusers re-shifts passed sigmas by the Euler scheduler's own shift (1 here): they stay as given
        torch.testing.assert_close(ref_sched.sigmas, unipc.sigmas.float(), atol=1e-6, rtol=0)
    else:
        ref_sched = FlowMatchEulerDiscreteScheduler.from_config(config)
        ref_sched.set_timesteps(steps)
    x = noise.clone()
    with torch.no_grad():
        for t in ref_sched.timesteps:
            tt = t.expand(3)
            v_c, v_u = net(x, tt, cond), net(x, tt, uncond)
            x = ref_sched.step(v_u + guidance * (v_c - v_u), t, x).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=0)


def test_unsupported_options_stop_with_a_message():
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        schedule_from_config(dict(FLOW, use_dynamic_shifting=True))
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        schedule_from_config(dict(FLOW, use_karras_sigmas=True))
    with pytest.raises(ValueError, match="use_flow_sigmas"):
        FlowMatchSchedule.from_scheduler_config(dict(WAN_UNIPC, use_flow_sigmas=False))
    with pytest.raises(ValueError, match="shift"):
        FlowMatchSchedule(1000, 0.0)
    with pytest.raises(ValueError, match="velocity"):
        schedule_from_config(dict(FLOW), prediction_type="epsilon")
    # the VP schedule keeps integer timesteps
    with pytest.raises(ValueError, match="integer"):
        NoiseSchedule.from_scheduler_config(dict(SCHEDULER)).coefficients(torch.tensor([10.5]))


def test_wan_unipc_config_reads_flow_shift():
    sched = schedule_from_config(dict(WAN_UNIPC))
    assert isinstance(sched, FlowMatchSchedule) and sched.shift == 5.0 and sched.prediction_type == "flow"
    ts = sched.inference_timesteps(4)
    unipc = UniPCMultistepScheduler.from_config(WAN_UNIPC)
    unipc.set_timesteps(4)
    torch.testing.assert_close(sched.sigma(torch.tensor(ts)).float(), unipc.sigmas[:4].float(), atol=1e-6, rtol=0)


# -- the segment machinery on the flow schedule, as on the VP one ----------------------------------------------
class Linear(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.main = nn.Linear(3, 2)

    def forward(self, x, t, cond):
        return self.main(torch.cat([x, t.float()[:, None] / 1000], 1))


def test_segment_targets_and_boundaries_on_the_flow_schedule():
    sched = FlowMatchSchedule(1000, 3.0)
    seg = Segments(num_segments=4, num_grid=40)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g)
    teacher, target_net = Linear(1), Linear(2)
    out = consistency_targets(teacher, target_net, sched, seg, x0, {}, torch.arange(40), eps)
    boundary = out.t_n == out.lower
    assert boundary.sum() == 4
    torch.testing.assert_close(out.target[boundary], out.x_tn[boundary])
    # by hand: the teacher is fed sigma * 1000; one Euler step to t_n; the target network's jump to the edge
    t_m, t_n, lower = seg.training_points(torch.arange(40))
    x_tm = (1 - sched.sigma(t_m).float()[:, None]) * x0 + sched.sigma(t_m).float()[:, None] * eps
    v = teacher(x_tm, sched.sigma(t_m).float() * 1000, {})
    x_tn = x_tm + (sched.sigma(t_n) - sched.sigma(t_m)).float()[:, None] * v
    torch.testing.assert_close(out.x_tn, x_tn, atol=1e-5, rtol=0)
    inner = ~boundary
    v2 = target_net(x_tn[inner], sched.sigma(t_n[inner]).float() * 1000, {})
    step = (sched.sigma(lower[inner]) - sched.sigma(t_n[inner])).float()[:, None]
    torch.testing.assert_close(out.target[inner], x_tn[inner] + step * v2, atol=1e-5, rtol=0)


def test_samplers_feed_the_network_sigma_times_1000_at_the_segment_edges():
    sched = FlowMatchSchedule(1000, 3.0)
    seen = []

    def student(x, t, c):
        seen.append(round(float(t[0]), 3))
        return torch.zeros_like(x)

    consistency_sample(student, torch.randn(2, 2), sched, Segments(num_segments=4, num_grid=40), {})
    edges = [999, 749, 499, 249]
    assert seen == [round(float(sched.sigma(e)) * 1000, 3) for e in edges]
    assert seen[0] == 1000.0
    seen.clear()
    out = multistep_consistency_sample(student, torch.randn(3, 2), sched, 3, {}, torch.Generator().manual_seed(0))
    ref = FlowMatchEulerDiscreteScheduler.from_config(FLOW)
    ref.set_timesteps(3)
    assert seen == [round(float(t), 3) for t in ref.timesteps]
    # v = 0 means x0 = x: every state stays finite and the last step returns x0
    assert torch.isfinite(out).all()


def test_flow_renoise_has_the_marginal_of_the_target_level():
    """Re-noising a state at s to the level t (the LCM / TCD sampler) gives x_t's distribution given x0:
    mean a_t x0, standard deviation s_t (the VP formula sqrt(1 - r^2) would not)."""
    sched = FlowMatchSchedule(1000, 3.0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000,), 0.7)
    s, t = 99, 749
    x_s = sched.jump(x0, torch.randn(x0.shape, generator=g), s)
    x_t = sched.renoise(x_s, s, t, torch.randn(x0.shape, generator=g))
    a_t, s_t = (float(c) for c in sched.coefficients(t))
    assert abs(x_t.mean().item() - a_t * 0.7) < 0.01
    assert abs(x_t.std().item() - s_t) < 0.01


def test_a_flow_config_without_its_class_name_is_still_flow_and_input_skip_refuses_it():
    from dancelcm.models.output_stages import wiener_gain

    sched = schedule_from_config({"num_train_timesteps": 1000, "shift": 3.0})
    assert isinstance(sched, FlowMatchSchedule) and sched.shift == 3.0
    with pytest.raises(ValueError, match="input_skip"):
        wiener_gain(dict(FLOW), 0.1)
