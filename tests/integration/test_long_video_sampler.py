"""The long-video sampler on real bundles (micro size): one window is today's teacher / student sampler exactly, and
a clip three windows long samples with the network never seeing more than one window."""

from __future__ import annotations

import torch
from hydra.utils import instantiate

from dancelcm.lit.builders import build_module
from dancelcm.models.bundle import bundle_uncond, load_bundle
from dancelcm.sampling import clip_noise, latent_shape, long_video_sampler, student_sampler, teacher_sampler
from tests.configs.test_experiment_configs import _compose, _micro_training, _save_micro_teacher


def test_teacher_and_student_over_one_window_and_over_three(synthetic_root, tmp_path):
    teacher_dir, _ = _save_micro_teacher(tmp_path / "teacher")
    cfg = _compose([*_micro_training("synthetic_k4", teacher_dir, synthetic_root), "data.num_frames=12"])
    module = build_module(cfg)
    module.write_export(tmp_path / "student")
    teacher, student = load_bundle(teacher_dir), load_bundle(tmp_path / "student")
    dm = instantiate(cfg.data)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    noise = clip_noise(batch["clip_index"], latent_shape(teacher, batch), 0)
    assert noise.shape[2] == 12
    uncond = bundle_uncond(teacher)
    whole = teacher_sampler(teacher, 2, 2.0, uncond)(batch, noise)
    assert torch.equal(long_video_sampler(teacher, 2, 2.0, window=12)(batch, noise), whole)
    for steps in (4, 2):
        one = long_video_sampler(student, steps, window=16, overlap=4)(batch, noise)
        assert torch.equal(one, student_sampler(student, steps)(batch, noise))
    seen = []
    hook = student.animator.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    video = long_video_sampler(student, 4, window=4, overlap=1, weights="cosine")(batch, noise)
    hook.remove()
    assert video.shape == whole.shape and torch.isfinite(video).all() and set(seen) == {4}


def test_a_k1_students_multistep_sampler_over_one_window_is_student_samplers(synthetic_root, tmp_path):
    """The VideoLCM baseline beyond one step re-noises between steps (LCM multistep): in windows too, with the same
    seeded noise over one window giving student_sampler's video."""
    teacher_dir, _ = _save_micro_teacher(tmp_path / "teacher")
    cfg = _compose([*_micro_training("synthetic_lcm", teacher_dir, synthetic_root), "data.num_frames=8"])
    build_module(cfg).write_export(tmp_path / "lcm")
    student = load_bundle(tmp_path / "lcm")
    dm = instantiate(cfg.data)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    noise = clip_noise(batch["clip_index"], latent_shape(student, batch), 0)
    ours = long_video_sampler(student, 3, window=8, seed=5)(batch, noise)
    torch.testing.assert_close(ours, student_sampler(student, 3, seed=5)(batch, noise), rtol=0, atol=1e-5)
    assert torch.isfinite(long_video_sampler(student, 3, window=4, overlap=2, seed=5)(batch, noise)).all()
