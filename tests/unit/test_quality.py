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


def test_psnr_vs_teacher_by_region_sees_an_error_only_where_it_is():
    """A student that matches the teacher everywhere but the face scores high whole-frame and in the
    motion region, and low in the face region; an error in the moving pixels shows in the motion column."""
    from dancelcm.metrics.quality import clip_metrics_vs, clip_regions

    g = torch.Generator().manual_seed(0)
    gt = torch.zeros(2, 3, 3, 32, 32)
    gt[:, 1, :, 20:28, 20:28] = 0.8  # a square that appears in frame 1: the motion region (frames 0-2)
    boxes = torch.tensor([0.0, 0.0, 0.25, 0.25]).expand(2, 3, 4)  # face box: the top-left 8x8 pixels
    batch = {"video": gt, "face_boxes": boxes, "face_boxes_valid": torch.ones(2, 3, dtype=torch.bool)}
    regions = clip_regions(batch)
    assert set(regions) == {"motion", "face"} and regions["face"][0, 0, 0, :8, :8].all()
    teacher = torch.rand(2, 3, 3, 32, 32, generator=g) * 2 - 1
    student = teacher.clone()
    student[:, :, :, :8, :8] += 0.5  # wrong face only
    m = clip_metrics_vs(student, teacher, regions)
    assert set(m) == {"psnr_vs_teacher", "psnr_vs_teacher_face", "psnr_vs_teacher_motion"}
    assert (m["psnr_vs_teacher_face"] < 15).all()
    assert (m["psnr_vs_teacher_motion"] > 90).all()  # identical there (capped at 100 dB)
    assert (m["psnr_vs_teacher"] > m["psnr_vs_teacher_face"] + 10).all()  # the face is 1/16 of the frame
    student = teacher.clone()
    student[:, :, :, 20:28, 20:28] += 0.5  # wrong where the figure moved
    m = clip_metrics_vs(student, teacher, regions)
    assert (m["psnr_vs_teacher_motion"] < 15).all() and (m["psnr_vs_teacher_face"] > 90).all()
