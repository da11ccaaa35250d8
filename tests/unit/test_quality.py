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
