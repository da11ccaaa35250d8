"""``method.segments.grid``: teacher grids finer at the clean end, with the segment edges (what the student samples)
unchanged. Measured on the exact-teacher toy (tests/unit/toy.py), the teacher's DDIM trajectory on the grid against
the exact flow, % of the data scale, K = 4: VP (the benchmark's zero-SNR scaled-linear schedule) uniform N=40 4.06,
fine_end 2.84, log_snr 2.85, uniform N=200 1.21; rectified flow with shift 3: uniform 2.56, log_snr 5.86 (log-SNR
spacing is the wrong refinement for a flow schedule), uniform N=200 0.45."""

import json

import pytest
import torch

from dancelcm.diffusion import FlowMatchSchedule, NoiseSchedule, Segments
from dancelcm.diffusion.schedule import CLEAN
from tests.unit.toy import SCHEDULER, grid_trajectory_errors

VP = NoiseSchedule.from_scheduler_config(dict(SCHEDULER))
FLOW = FlowMatchSchedule(1000, 3.0)


@pytest.mark.parametrize("schedule", [VP, FLOW], ids=["vp", "flow"])
@pytest.mark.parametrize("kind", ["uniform", "log_snr", "fine_end"])
@pytest.mark.parametrize("K,N", [(1, 40), (2, 40), (4, 40), (8, 40), (4, 200)])
def test_every_grid_keeps_the_edges_and_the_training_to_sampling_contract(schedule, kind, K, N):
    seg = Segments.for_schedule(schedule, kind, num_segments=K, num_grid=N)
    grid = seg.grid.tolist()
    assert len(grid) == N and grid == sorted(set(grid)) and grid[-1] == 999 and grid[0] >= 0
    assert set(seg.edges[1:]) <= set(grid)
    assert seg.edges == Segments(num_segments=K, num_grid=N).edges  # the student's edges do not depend on the grid
    t_m, t_n, lower = seg.training_points(torch.arange(N))
    assert t_n.tolist() == [CLEAN] + grid[:-1]  # the teacher steps to the next grid point down
    per = N // K
    for n in range(N):  # N / K points per segment, each trained towards its segment's lower edge
        o = n // per
        assert seg.edges[o] < t_m[n] <= seg.edges[o + 1] and lower[n] == seg.edges[o]
    trained = {(int(a), int(b)) for a, b in zip(t_m, lower)}
    assert set(seg.sampling_steps()) <= trained  # the sampler visits exactly the training edges


def test_uniform_is_the_original_grid_and_the_fine_grids_are_finer_at_the_clean_end():
    seg = Segments.for_schedule(VP, "uniform", num_segments=4, num_grid=40)
    assert seg.grid.tolist() == [(n + 1) * 25 - 1 for n in range(40)] == Segments().grid.tolist()
    fine = Segments.for_schedule(VP, "fine_end", num_segments=4, num_grid=40).grid.tolist()
    log = Segments.for_schedule(VP, "log_snr", num_segments=4, num_grid=40).grid.tolist()
    assert fine[:3] == [0, 1, 3]  # the last teacher steps: 3 -> 1 -> 0 -> clean, not 24 -> clean
    assert fine[10:] == seg.grid.tolist()[10:]  # fine_end changes the lowest segment only
    assert log[:10] == fine[:10] and log[10:] != fine[10:]
    # every segment of the log-SNR grid is evenly spaced in log-SNR (to the rounding of integer timesteps)
    lam = VP.snr(torch.tensor(log[10:20])).log()
    steps = lam[:-1] - lam[1:]
    assert steps.min() > 0.8 * steps.mean() and steps.max() < 1.2 * steps.mean()


def test_a_non_uniform_grid_needs_the_schedule_and_a_bad_kind_is_named():
    with pytest.raises(ValueError, match="Segments.for_schedule"):
        Segments(grid_kind="fine_end").training_points(torch.arange(4))
    with pytest.raises(ValueError, match="grid='coarse'"):
        Segments(grid_kind="coarse")


def test_a_finer_clean_end_brings_the_teachers_trajectory_closer_to_the_exact_flow():
    """The lead #28 follows: on a VP schedule the uniform 40-point grid's last step (t = 24 -> clean) returns the
    posterior mean; refining the clean end lowers the teacher trajectory's error against the exact flow."""
    uniform, fine, dense = grid_trajectory_errors(VP, [("uniform", 40), ("fine_end", 40), ("uniform", 200)])
    assert fine < 0.8 * uniform and dense < 0.5 * uniform, (uniform, fine, dense)
    coarse, dense = grid_trajectory_errors(FLOW, [("uniform", 40), ("uniform", 200)])
    assert dense < 0.5 * coarse, (coarse, dense)


def test_the_method_option_is_checked_and_reaches_the_training_grid(tmp_path):
    from dancelcm.cli import ConfigError
    from dancelcm.lit.config import SegmentsConfig

    with pytest.raises(ConfigError, match="method.segments.grid=finer: choose one of uniform, log_snr, fine_end"):
        SegmentsConfig.parse(
            {"num_segments": 4, "num_grid": 40, "num_train_timesteps": 1000, "grid": "finer"}, "method.segments"
        )
    cfg = SegmentsConfig.parse(
        {"num_segments": 4, "num_grid": 40, "num_train_timesteps": 1000, "grid": "fine_end"}, "method.segments"
    )
    assert cfg.build(schedule=VP).grid.tolist()[:3] == [0, 1, 3]
    json.dumps(cfg.build().edges)  # buildable without the schedule: sizes checked at parse time
