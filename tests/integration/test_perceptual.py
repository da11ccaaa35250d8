"""LPIPS / FID / FID-VID / FVD from local TorchScript files: the loading and calling path, proved with tiny
random-weight networks of the real files' signatures (the real weights cannot be downloaded here)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dancelcm.metrics.perceptual import PerceptualMetrics


class TinyInception(nn.Module):  # inception-2015-12-05.pt: net(uint8-valued frames, return_features=True)
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.conv(x / 255.0).mean((2, 3))


class TinyVGG(nn.Module):  # vgg16.pt: net(frames 0..255, resize_images=False, return_lpips=True)
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        f = self.conv(x / 127.5 - 1).flatten(1)
        return f / f.square().sum(1, keepdim=True).sqrt()


class TinyI3D(nn.Module):  # i3d_torchscript.pt: net(videos, rescale=, resize=, return_features=)
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 5, 3, stride=(1, 8, 8))

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False
    ) -> torch.Tensor:
        assert x.shape[-1] == 224 and x.min() >= -1 and x.max() <= 1
        return self.conv(x).mean((2, 3, 4))


class TinyVideoNet(nn.Module):  # FID-VID: net(videos) -> features
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, stride=(1, 4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3, 4))


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    torch.manual_seed(0)
    paths = {}
    for name, cls in (("inception", TinyInception), ("lpips", TinyVGG), ("i3d", TinyI3D), ("fid_vid", TinyVideoNet)):
        torch.jit.save(torch.jit.script(cls()), str(d / f"{name}.pt"))
        paths[name] = str(d / f"{name}.pt")
    return paths


def test_features_and_lpips_from_torchscript_files(nets):
    pm = PerceptualMetrics(nets)
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 4, 3, 32, 32, generator=g) * 2 - 1
    f = pm.features(video)
    assert f["fid"].shape == (8, 8) and f["fvd"].shape == (2, 5) and f["fid_vid"].shape == (2, 4)
    lp = pm.lpips(video, video)
    assert lp.shape == (2,) and torch.allclose(lp, torch.zeros(2), atol=1e-6)  # identical clips
    other = pm.lpips(video, torch.rand(2, 4, 3, 32, 32, generator=g) * 2 - 1)
    assert (other > 0).all()


def test_missing_or_unknown_networks_name_the_option(nets, tmp_path):
    with pytest.raises(FileNotFoundError, match="perceptual.i3d="):
        PerceptualMetrics({"i3d": str(tmp_path / "nope.pt")})
    (tmp_path / "bad.pt").write_text("not torchscript")
    with pytest.raises(ValueError, match="perceptual.inception=.*not a TorchScript"):
        PerceptualMetrics({"inception": str(tmp_path / "bad.pt")})
    with pytest.raises(ValueError, match="perceptual.clip: unknown"):
        PerceptualMetrics({"clip": nets["inception"]})
    assert not PerceptualMetrics({"inception": None})


@pytest.mark.slow  # the evaluate CLI in a subprocess
def test_evaluate_reports_them(nets, micro_teacher, synthetic_root, tmp_path):
    import json

    from tests.conftest import run_module
    from tests.integration.conftest import EVAL_MICRO

    out = tmp_path / "eval"
    run_module(
        [
            "dancelcm.evaluate",
            f"teacher={micro_teacher}",
            f"data.root={synthetic_root}",
            *EVAL_MICRO,
            "teacher_steps=[1]",
            "guidance=[1.0]",
            "vs_teacher=null",
            "feature_net=null",
            *(f"perceptual.{k}={v}" for k, v in nets.items()),
            f"out_dir={out}",
        ],
        tmp_path,
    )
    m = json.loads((out / "metrics.json").read_text())
    for row in m.values():
        assert row["lpips"]["n"] == 2 and row["lpips"]["mean"] > 0
        assert row["fid"] >= 0 and row["fvd"] >= 0 and row["fid_vid"] >= 0
    table = (out / "table.md").read_text()
    assert "| LPIPS | FID | FID-VID | FVD |" in table
