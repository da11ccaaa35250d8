import pytest
import torch
from diffusers import DDIMScheduler

from dancelcm.diffusion import CLEAN, NoiseSchedule, Segments
from dancelcm.diffusion.samplers import cat_conditions, ddim_sample, guided_output
from dancelcm.diffusion.schedule import ddim_timesteps

BASE = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def _schedulers(prediction_type, zero_snr):
    cfg = dict(BASE, prediction_type=prediction_type, rescale_betas_zero_snr=zero_snr)
    ref = DDIMScheduler(**cfg, timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False)
    return NoiseSchedule.from_scheduler_config(cfg), ref


@pytest.mark.parametrize(
    "prediction_type,zero_snr", [("epsilon", False), ("v_prediction", False), ("v_prediction", True)]
)
@pytest.mark.parametrize("steps", [50, 25, 10, 4, 2, 1])
def test_ddim_matches_diffusers_step_by_step(prediction_type, zero_snr, steps):
    ours, ref = _schedulers(prediction_type, zero_snr)
    ref.set_timesteps(steps)
    assert ref.timesteps.tolist() == ddim_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 3, 8, 8, generator=g)
    data = torch.randn(2, 4, 3, 8, 8, generator=g).clamp(-2, 2)

    # A realistic denoiser: it points at a fixed data sample, with a small per-step error. Its outputs
    # are recorded and replayed, unchanged, into diffusers' DDIMScheduler.step.
    recorded = []

    def denoiser(x, t, c):
        a, s = ours.coefficients(t, like=x)
        eps = (x - a * data) / s.clamp_min(1e-3)
        out = ours.target(data, eps, t) + 0.05 * torch.randn(x.shape, generator=g)
        recorded.append(out)
        return out

    ddim_out = ddim_sample(denoiser, noise.clone(), ours, steps, cond={})
    x_ref = noise.clone()
    for t, out in zip(ref.timesteps, recorded):
        x_ref = ref.step(out, t, x_ref).prev_sample
    assert (ddim_out - x_ref).abs().max() < 1e-5


def test_schedule_comes_from_the_scheduler_config():
    ours, ref = _schedulers("v_prediction", True)
    a, s = ours.coefficients(torch.tensor([0, 500, 999]))
    torch.testing.assert_close(a**2, ref.alphas_cumprod[[0, 500, 999]].float(), atol=1e-6, rtol=0)
    assert s[-1] == 1 and a[-1] == 0  # zero terminal SNR: pure noise at the top
    assert ours.coefficients(CLEAN) == (1.0, 0.0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_conversion_round_trips_and_jump_to_self_is_identity(prediction_type):
    sched = NoiseSchedule.from_scheduler_config(dict(BASE), prediction_type)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 4, 2, 4, 4, generator=g), torch.randn(3, 4, 2, 4, 4, generator=g)
    t = torch.tensor([0, 400, 999])
    x_t = sched.add_noise(x0, eps, t)
    x0_hat, eps_hat = sched.to_x0_eps(sched.target(x0, eps, t), x_t, t)
    torch.testing.assert_close(x0_hat, x0, atol=2e-4, rtol=0)
    torch.testing.assert_close(eps_hat, eps, atol=2e-4, rtol=0)
    out = torch.randn(3, 4, 2, 4, 4, generator=g)  # any output: jumping from t to t returns x_t
    torch.testing.assert_close(sched.jump(*sched.to_x0_eps(out, x_t, t), t), x_t, atol=1e-5, rtol=0)


def test_v_output_is_never_used_as_eps():
    sched = NoiseSchedule.from_scheduler_config(dict(BASE), "v_prediction")
    x_t, v = torch.randn(1, 4), torch.randn(1, 4)
    _, eps = sched.to_x0_eps(v, x_t, torch.tensor([500]))
    assert not torch.allclose(eps, v)


def test_epsilon_with_zero_terminal_snr_is_refused():
    with pytest.raises(ValueError, match="zero-terminal-SNR"):
        NoiseSchedule.from_scheduler_config(dict(BASE, rescale_betas_zero_snr=True), "epsilon")


@pytest.mark.parametrize(
    "T,N,K,msg",
    [(1000, 30, 2, "not divisible by num_grid"), (1000, 40, 3, "not divisible by num_segments"), (1000, 0, 1, ">= 1")],
)
def test_invalid_segments_are_refused(T, N, K, msg):
    with pytest.raises(ValueError, match=msg):
        Segments(num_segments=K, num_grid=N, num_train_timesteps=T)


def test_segment_grid_and_edges():
    seg = Segments(num_segments=4, num_grid=40)
    assert seg.grid[0] == 24 and seg.grid[-1] == 999 and seg.skip == 25
    assert seg.edges == [CLEAN, 249, 499, 749, 999]
    t_m, t_n, lower = seg.training_points(torch.arange(40))
    assert torch.equal(t_n, t_m - 25)
    # every grid point's lower edge is the segment edge just below it, and edges are on the grid
    assert all(lo < tm <= lo + 250 for tm, lo in zip(t_m.tolist(), lower.tolist()))
    assert set(seg.edges[1:]) <= set(seg.grid.tolist())


@pytest.mark.parametrize("K", [1, 2, 4, 8])
def test_training_edges_equal_sampling_timesteps(K):
    """The known public bug: the sampler must visit exactly the edges the student was trained to reach."""
    seg = Segments(num_segments=K, num_grid=40)
    t_m, _, lower = seg.training_points(torch.arange(40))
    steps = seg.sampling_steps()
    assert len(steps) == K and steps[0][0] == 999 and steps[-1][1] == CLEAN
    trained_pairs = {(int(tm), int(lo)) for tm, lo in zip(t_m, lower)}
    assert set(steps) <= trained_pairs  # each (from, to) is a training (t_m, lower edge) pair
    assert sorted({lo for _, lo in steps}) == sorted(set(lower.tolist()))


def test_fewer_sampling_steps_jump_over_edges():
    seg = Segments(num_segments=4)
    assert seg.sampling_steps(2) == [(999, 499), (499, CLEAN)]
    assert seg.sampling_steps(1) == [(999, CLEAN)]
    with pytest.raises(ValueError, match="1..4"):
        seg.sampling_steps(5)


def test_guidance_runs_one_batched_forward_in_float32():
    calls = []

    def denoiser(x, t, c):
        calls.append(x.shape[0])
        return (x * c["scale"][:, None]).to(torch.bfloat16)

    x = torch.ones(2, 3)
    cond, uncond = {"scale": torch.full((2,), 3.0)}, {"scale": torch.full((2,), 1.0)}
    out = guided_output(denoiser, x, torch.zeros(2, dtype=torch.long), cond, uncond, guidance=2.0)
    assert calls == [4] and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((2, 3), 5.0))  # 1 + 2 * (3 - 1)
    merged = cat_conditions({"a": torch.zeros(1), "k": "x"}, {"a": torch.ones(1), "k": "x"})
    assert merged["a"].tolist() == [0.0, 1.0] and merged["k"] == "x"


def test_guidance_drops_the_condition_in_the_unconditional_half_only():
    # The real CFG path: the conditional half has no "drop" entry, the unconditional half is with_dropped(...).
    # (A bug once kept only the first half's keys, so both halves ran conditioned and CFG did nothing.)
    from dancelcm.models.conditioning import dropped, with_dropped

    def denoiser(x, t, c):
        keep = ~dropped(c, "reference", x.shape[0], x.device)
        return x + c["reference_latent"] * keep[:, None]

    x, ref = torch.zeros(2, 3), torch.ones(2, 3)
    cond = {"reference_latent": ref}
    uncond = with_dropped(cond, ["reference"])
    t = torch.zeros(2, dtype=torch.long)
    torch.testing.assert_close(denoiser(x, t, uncond), x)
    torch.testing.assert_close(guided_output(denoiser, x, t, cond, uncond, guidance=2.0), x + 2 * ref)
    merged = cat_conditions(cond, uncond)
    assert merged["drop"]["reference"].tolist() == [False, False, True, True]
    # both halves dropping different conditions: each mask keeps its own half
    both = cat_conditions(with_dropped(cond, ["pose"]), uncond)
    assert both["drop"]["pose"].tolist() == [True, True, False, False]
    assert both["drop"]["reference"].tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="one CFG half only"):
        cat_conditions({"a": torch.zeros(1), "b": torch.zeros(1)}, {"a": torch.zeros(1)})


def test_a_schedule_with_signal_at_the_top_is_named_where_the_config_is_chosen():
    """SD's epsilon schedule (model=animator_animatediff) keeps 6.8 % signal at t = 999 while samplers start from
    pure noise: building it warns with the figure and the fix; a zero-terminal-SNR schedule does not warn."""
    import warnings
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[2] / "conf" / "model"
    sd = yaml.safe_load((conf / "animator_animatediff.yaml").read_text())["scheduler"]
    with pytest.warns(UserWarning, match=r"keeps 6\.8% of the signal.*rescale_betas_zero_snr=true"):
        schedule = NoiseSchedule.from_scheduler_config(sd)
    assert schedule.terminal_signal == pytest.approx(0.068, abs=5e-4)
    tiny = yaml.safe_load((conf / "animator_tiny.yaml").read_text())["scheduler"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert NoiseSchedule.from_scheduler_config(tiny).terminal_signal < 1e-6
