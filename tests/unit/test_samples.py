"""The validation sample writer: the PNG strip always, the mp4 only when asked."""

import numpy as np
import torch
from PIL import Image

from dancelcm.data.reader import FrameSource
from dancelcm.media import write_samples


def _batch(b=2, f=3, h=16, w=16):
    g = torch.Generator().manual_seed(0)
    video = torch.rand(b, f, 3, h, w, generator=g) * 2 - 1
    return {"video": video, "pose": -video, "reference": video[:, 0]}, {"sample": video.flip(-1)}


def test_strip_layout_and_mp4_switch(tmp_path):
    batch, samples = _batch()
    mp4, png = write_samples(tmp_path, "a", batch, samples, mp4=False)
    assert mp4 is None and not (tmp_path / "a.mp4").exists()
    strip = np.asarray(Image.open(png))
    # per clip one row per panel after the reference (pose, ground truth, sample); reference + frames across,
    # after a margin that names each row
    margin = 8 + 6 * len("ground truth")
    assert strip.shape == (2 * 3 * 16, margin + (1 + 3) * 16, 3)
    assert (strip[:, :margin] < 128).any() and (strip[:, :margin] == 255).mean() > 0.8  # dark text on white
    np.testing.assert_array_equal(
        strip[:16, margin + 16 : margin + 32],
        ((-batch["video"][0, 0] + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy(),
    )  # row 1: the pose

    mp4, png2 = write_samples(tmp_path, "b", batch, samples, mp4=True)
    assert mp4 == tmp_path / "b.mp4"
    frames = FrameSource(mp4).get(range(3))
    # frames: clips stacked vertically, panels (reference | pose | gt | sample) side by side
    assert frames.shape == (3, 2 * 16, 4 * 16, 3)
    assert np.array_equal(np.asarray(Image.open(png2)), strip)
