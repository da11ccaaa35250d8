"""The sharpness ratio that the teacher's criterion and every table use."""

import torch

from dancelcm.metrics.quality import clip_sharpness, sharpness_ratio


def test_sharpness_is_measured_around_the_figure_so_background_artefacts_do_not_hide_blur():
    g = torch.Generator().manual_seed(0)
    gt = torch.full((1, 2, 3, 32, 32), -0.5)
    gt[..., 8:24, 12:20] = (torch.rand(1, 2, 3, 16, 8, generator=g) > 0.5).float() * 2 - 1  # a textured figure
    mask = torch.zeros(1, 2, 1, 32, 32)
    mask[..., 8:24, 12:20] = 1
    blurred = torch.nn.functional.avg_pool2d(gt.flatten(0, 1), 3, stride=1, padding=1, count_include_pad=False)
    pred = blurred.reshape(gt.shape).clone()
    pred[..., :4, :] += torch.randn(1, 2, 1, 4, 32, generator=g)  # noisy background far from the figure
    batch = {"video": gt, "figure_mask": mask}
    near_figure = clip_sharpness(pred, batch)
    assert near_figure < 0.5  # the blurred figure
    assert sharpness_ratio(pred, gt) > 1.0  # whole frame: the background noise hides the blur
    assert torch.equal(clip_sharpness(pred, {"video": gt}), sharpness_ratio(pred, gt))  # no mask: whole frame


def test_sharpness_calibration_on_rendered_dancers_half_a_pixel_of_blur_halves_it():
    """What the numbers mean (README, Evaluation): the ratio is dominated by the finest detail, so a blur of
    sigma 0.5 px already scores below 0.6, and noise raises it above 1."""
    import numpy as np

    from dancelcm.data.dancers import DanceProgramme, Identity, compute_pose, render_background, render_dancer
    from dancelcm.metrics.features import gaussian_blur

    frames, masks = [], []
    for i in range(4):
        rng = np.random.default_rng(i)
        identity, prog = Identity.sample(rng), DanceProgramme.sample(rng, 2.0)
        frame, cover = render_dancer(identity, compute_pose(identity, prog, 0.5, 64), render_background(rng, 64))
        frames.append(torch.from_numpy(frame).permute(2, 0, 1).float() / 127.5 - 1)
        masks.append(torch.from_numpy(cover > 0.5).float()[None])
    gt = torch.stack(frames)[:, None]  # (B, F=1, 3, H, W)
    batch = {"video": gt, "figure_mask": torch.stack(masks)[:, None]}

    def blurred(sigma):
        return gaussian_blur(gt.flatten(0, 1), torch.full((4,), sigma)).reshape(gt.shape)

    score = {s: clip_sharpness(blurred(s), batch).mean().item() for s in (0.3, 0.5, 1.0)}
    assert score[0.3] > 0.85 and score[0.5] < 0.6 and score[1.0] < 0.2, score
    noisy = (gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert clip_sharpness(noisy, batch).mean() > 1.05
    torch.testing.assert_close(clip_sharpness(gt, batch), torch.ones(4))
