"""Exactness of the distillation core on small tensors (no video model needed)."""

import pytest
import torch
from torch import nn

from dancelcm.diffusion import CLEAN, NoiseSchedule, Segments
from dancelcm.distill.consistency import LossWeights, consistency_sample, consistency_targets, distillation_loss
from dancelcm.distill.losses import motion_mask_latent, motion_weight, pseudo_huber
from tests.unit.toy import SCHEDULER

SCHED = NoiseSchedule.from_scheduler_config(dict(SCHEDULER))


class Linear(nn.Module):
    """A tiny deterministic denoiser on (B, 2) points with an optional aux head."""

    def __init__(self, seed: int, aux: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.main, self.aux = nn.Linear(3, 2), (nn.Linear(3, 2) if aux else None)

    def forward(self, x, t, cond):
        h = torch.cat([x, t.float()[:, None] / 1000], 1)
        return (self.main(h), self.aux(h)) if self.aux is not None else self.main(h)


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g), torch.arange(n) % 40


def test_k1_reproduces_the_plain_lcm_target():
    teacher, target_net = Linear(1), Linear(2)
    seg = Segments(num_segments=1, num_grid=40)
    x0, eps, n = _batch()
    out = consistency_targets(teacher, target_net, SCHED, seg, x0, {}, n, eps)
    # plain LCM: x_tm -> teacher DDIM step to t_n -> target network's x0 estimate at t_n (x_tn itself at t_n = CLEAN)
    t_m = (n + 1) * 25 - 1
    t_n = t_m - 25
    x_tm = SCHED.add_noise(x0, eps, t_m)
    x_tn = SCHED.jump(*SCHED.to_x0_eps(teacher(x_tm, t_m, {}), x_tm, t_m), t_n)
    lcm = x_tn.clone()
    inner = t_n >= 0
    lcm[inner] = SCHED.to_x0_eps(target_net(x_tn[inner], t_n[inner], {}), x_tn[inner], t_n[inner])[0]
    torch.testing.assert_close(out.target, lcm)
    assert torch.all(out.lower == CLEAN)


def test_target_is_the_teacher_step_at_segment_boundaries():
    seg = Segments(num_segments=4, num_grid=40)
    x0, eps, n = _batch(40)
    out = consistency_targets(Linear(1), Linear(2), SCHED, seg, x0, {}, torch.arange(40), eps)
    boundary = out.t_n == out.lower
    assert boundary.sum() == 4  # the first grid point of each segment
    torch.testing.assert_close(out.target[boundary], out.x_tn[boundary])


def test_student_meets_the_boundary_condition_exactly():
    """f(x_s, s) = x_s: a jump from a timestep to itself returns the input, whatever the network says."""
    student = Linear(3)
    x = torch.randn(8, 2)
    for t in (249, 499, 999):
        tt = torch.full((8,), t)
        torch.testing.assert_close(SCHED.jump(*SCHED.to_x0_eps(student(x, tt, {}), x, tt), tt), x, atol=1e-5, rtol=0)


def test_motion_weight_zero_equals_no_motion_loss_exactly():
    seg = Segments(num_segments=2, num_grid=40)
    x0, eps, n = _batch()
    targets = consistency_targets(Linear(1), Linear(2), SCHED, seg, x0, {}, n, eps)
    mask = torch.rand(16, 2)
    a = distillation_loss(Linear(3), targets, SCHED, x0, {}, LossWeights(), motion_weight(mask, 0.0))
    b = distillation_loss(Linear(3), targets, SCHED, x0, {}, LossWeights(), None)
    assert torch.equal(a.loss, b.loss)
    c = distillation_loss(Linear(3), targets, SCHED, x0, {}, LossWeights(), motion_weight(mask, 2.0))
    assert not torch.equal(a.loss, c.loss)


def test_aux_weight_zero_leaves_no_aux_gradient():
    seg = Segments(num_segments=2, num_grid=40)
    x0, eps, n = _batch()
    targets = consistency_targets(Linear(1), Linear(2), SCHED, seg, x0, {}, n, eps)
    student = Linear(3, aux=True)
    out = distillation_loss(student, targets, SCHED, x0, {}, LossWeights(aux=0.0))
    out.loss.backward()
    assert out.loss_aux is None and student.aux.weight.grad is None and student.main.weight.grad is not None
    student.zero_grad()
    out = distillation_loss(student, targets, SCHED, x0, {}, LossWeights(aux=0.5))
    out.loss.backward()
    assert out.loss_aux is not None and student.aux.weight.grad.abs().sum() > 0


def test_pseudo_huber_and_the_motion_mask():
    a, b = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0])
    torch.testing.assert_close(pseudo_huber(a, b, 1e-3), torch.tensor([0.0, (1 + 1e-6) ** 0.5 - 1e-3]))
    video = -torch.ones(1, 3, 3, 8, 8)
    video[:, 1, :, :4, :4] = 1.0  # a 4x4 square appears in the middle frame only
    m = motion_mask_latent(video, (2, 2), delta=0.1)
    assert m.shape == (1, 1, 3, 2, 2)
    # every frame sees the change (one-sided at the ends); only the top-left latent cell moves
    assert torch.equal(m[0, 0, :, 0, 0], torch.ones(3)) and m[0, 0, :, 1, 1].sum() == 0


def test_consistency_sampler_visits_the_segment_edges():
    seen = []

    def student(x, t, c):
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    seg = Segments(num_segments=4, num_grid=40)
    consistency_sample(student, torch.randn(2, 2), SCHED, seg, {})
    assert seen == [999, 749, 499, 249]
    seen.clear()
    consistency_sample(student, torch.randn(2, 2), SCHED, seg, {}, num_steps=2)
    assert seen == [999, 499]
    with pytest.raises(ValueError):
        consistency_sample(student, torch.randn(2, 2), SCHED, seg, {}, num_steps=8)


def test_multistep_sampler_renoises_between_steps():
    from dancelcm.distill.consistency import multistep_consistency_sample

    seen = []

    def student(x, t, c):  # predicts x0 = 0.5 everywhere (v-parameterisation of that x0)
        seen.append(int(t[0]))
        a, s = SCHED.coefficients(t, like=x)
        x0 = torch.full_like(x, 0.5)
        eps = (x - a * x0) / s
        return SCHED.target(x0, eps, t)

    noise = torch.randn(3, 2)
    out = multistep_consistency_sample(student, noise, SCHED, 4, {}, torch.Generator().manual_seed(0))
    assert seen == [999, 749, 499, 249]
    torch.testing.assert_close(out, torch.full((3, 2), 0.5), atol=1e-4, rtol=0)  # the last step returns x0


def test_every_sample_runs_the_target_on_the_whole_batch_with_the_same_targets():
    """FSDP needs every rank to make the same forward calls: ``every_sample`` runs the target network on the whole
    batch (also when every sample sits on a boundary) and keeps the boundary targets."""
    seg = Segments(num_segments=4, num_grid=40)
    x0, eps, _ = _batch(8)
    calls = []

    class Counting(Linear):
        def forward(self, x, t, cond):
            calls.append(x.shape[0])
            return super().forward(x, t, cond)

    n = torch.tensor([0, 10, 20, 30, 5, 15, 25, 35])  # four on a boundary, four inside
    a = consistency_targets(Linear(1), Counting(2), SCHED, seg, x0, {}, n, eps)
    b = consistency_targets(Linear(1), Counting(2), SCHED, seg, x0, {}, n, eps, every_sample=True)
    assert calls == [4, 8]
    torch.testing.assert_close(a.target, b.target, atol=1e-6, rtol=0)
    calls.clear()
    boundary_only = torch.tensor([0, 10, 20, 30])
    consistency_targets(Linear(1), Counting(2), SCHED, seg, x0[:4], {}, boundary_only, eps[:4])
    consistency_targets(Linear(1), Counting(2), SCHED, seg, x0[:4], {}, boundary_only, eps[:4], every_sample=True)
    assert calls == [4]  # without the flag no call at all


def test_motion_mask_from_latent_frame_differences():
    """Precomputed clips have no frames: the motion map comes from the latents' frame differences, relative to the
    clip's latent std; a static clip has none, a moving block is found in the frames next to its change, and Wan's
    reference slot (frame 0) takes no part."""
    from dancelcm.distill.losses import motion_mask_from_latents

    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 1, 8, 8, generator=g).repeat(1, 1, 5, 1, 1)  # five identical latent frames
    assert motion_mask_from_latents(z, 0.4).sum() == 0
    moving = z.clone()
    moving[:, :, 3:, 2:4, 2:4] += 3.0  # a block changes between frames 2 and 3
    m = motion_mask_from_latents(moving, 0.4)
    assert m.shape == (1, 1, 5, 8, 8)
    assert m[0, 0, 2, 2:4, 2:4].eq(1).all() and m[0, 0, 3, 2:4, 2:4].eq(1).all()
    assert m[0, 0, [0, 1, 4]].sum() == 0 and m[0, 0, :, 5:, 5:].sum() == 0
    ref = moving.clone()
    ref[:, :, 0] += 10.0  # a very different reference frame in slot 0 is not motion
    skipped = motion_mask_from_latents(ref, 0.4, skip_first=1)
    assert skipped[0, 0, 0].sum() == 0 and skipped[0, 0, 1].sum() == 0 and skipped[0, 0, 2, 2:4, 2:4].eq(1).all()


def test_gradient_checkpointing_reaches_the_students_blocks(synthetic_root, tmp_path):
    """method.gradient_checkpointing wraps the student's blocks (a model.* option would not: the distillation builds
    its networks from the teacher bundle)."""
    from dancelcm.lit.builders import build_module
    from tests.configs.test_experiment_configs import _compose, _micro_training, _save_micro_teacher

    bundle, _ = _save_micro_teacher(tmp_path / "teacher")
    base = _micro_training("synthetic_k4", bundle, synthetic_root)
    assert build_module(_compose(base)).checkpointed_blocks == 0
    assert build_module(_compose([*base, "method.gradient_checkpointing=true"])).checkpointed_blocks > 0
