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
    # per clip one row per panel after the reference (pose, ground truth, sample); reference + frames across
    assert strip.shape == (2 * 3 * 16, (1 + 3) * 16, 3)

    mp4, png2 = write_samples(tmp_path, "b", batch, samples, mp4=True)
    assert mp4 == tmp_path / "b.mp4"
    frames = FrameSource(mp4).get(range(3))
    # frames: clips stacked vertically, panels (reference | pose | gt | sample) side by side
    assert frames.shape == (3, 2 * 16, 4 * 16, 3)
    assert np.array_equal(np.asarray(Image.open(png2)), strip)
