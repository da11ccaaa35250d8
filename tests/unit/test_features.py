"""The offline distribution distance: its degradations, and the shipped feature network's sensitivity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dancelcm.metrics.features import (
    MAX_BLUR,
    MAX_NOISE,
    FrameEncoder,
    degrade,
    frame_features,
    frechet_distance,
    gaussian_blur,
)
from dancelcm.metrics.quality import laplacian_energy

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "feature_net"


def test_gaussian_blur_is_a_normalised_per_frame_filter():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    same = gaussian_blur(x, torch.zeros(3))
    assert torch.equal(same, x)
    sigma = torch.tensor([0.0, 1.0, 2.0])
    y = gaussian_blur(x, sigma)
    assert torch.allclose(y[0], x[0], atol=1e-6)  # sigma 0 inside a batch with others: a delta kernel
    # constant frames stay constant (kernel sums to one), energy falls with sigma
    assert torch.allclose(gaussian_blur(torch.full((1, 3, 8, 8), 0.3), torch.tensor([1.5])), torch.tensor(0.3))
    e = laplacian_energy(y[:, None])
    assert e[0] > e[1] > e[2]


def test_degrade_targets_match_what_was_done():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(300, 3, 16, 16)
    x[:, :, 4:12, 4:12] = 1.0
    y, level = degrade(x, g)
    assert level.shape == (300, 2) and level.min() >= 0 and level.max() <= 1
    clean = (level == 0).all(1)
    assert 60 < clean.sum() < 140  # about a third untouched
    assert torch.equal(y[clean], x[clean])
    noisy_only = (level[:, 0] == 0) & (level[:, 1] > 0.2)
    resid = (y[noisy_only] - x[noisy_only]).flatten(1).std(1)
    assert torch.allclose(resid, level[noisy_only, 1] * MAX_NOISE, rtol=0.15)
    blurred = (level[:, 0] > 0.2) & (level[:, 1] == 0)
    assert (laplacian_energy(y[blurred][:, None]) < laplacian_energy(x[blurred][:, None])).all()
    assert MAX_BLUR > 0


def test_frechet_distance_zero_for_identical_and_grows_with_shift():
    a = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-6)


@pytest.mark.skipif(not (SHIPPED / "config.json").exists(), reason="no shipped feature net")
def test_shipped_feature_net_sees_noise_and_blur(tmp_path):
    """Held-out synthetic frames: two disjoint halves of the real frames are far closer to each other
    than real frames are to the same frames with residual noise (std 0.1) or a 1.5-pixel blur."""
    from tests.conftest import make_dataset

    root = make_dataset(tmp_path / "d", num_videos=12, num_frames=24, resolution=64, seed=7)
    from dancelcm.data import layout
    from dancelcm.data.reader import read_frames

    frames = np.concatenate([read_frames(layout.video_dir(root, v)) for v in layout.read_split(root, "train")])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    a, b = x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]
    net = FrameEncoder.load(SHIPPED)
    g = torch.Generator().manual_seed(0)

    def fd(u, v):
        return frechet_distance(frame_features(net, u[None]), frame_features(net, v[None]))

    base = fd(a, b)
    noisy = fd(a, b + 0.1 * torch.randn(b.shape, generator=g))
    blurry = fd(a, gaussian_blur(b, torch.full((len(b),), 1.5)))
    assert noisy > 3 * base and blurry > 3 * base, (base, noisy, blurry)
