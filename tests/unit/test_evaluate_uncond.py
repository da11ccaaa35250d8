"""Which conditions CFG's unconditional half drops: the bundle's setting, or an override (evaluate / animate)."""

from types import SimpleNamespace

import pytest
import torch

from dancelcm.diffusion.schedule import NoiseSchedule
from dancelcm.models.animator import batch_conditions
from dancelcm.models.autoencoder import PatchAutoencoder
from dancelcm.models.bundle import bundle_uncond
from dancelcm.sampling import teacher_sampler


class _SpyNet(torch.nn.Module):
    """Records, per forward, which conditions were dropped for which samples; outputs x0 = 0."""

    condition_names = ["reference", "pose"]

    def conditions(self, batch, autoencoder):
        return batch_conditions(batch, autoencoder, self.condition_names)

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, cond):
        self.calls.append({k: v.tolist() for k, v in cond.get("drop", {}).items()})
        return torch.zeros_like(x)


def _bundle(meta_uncond=("reference",)):
    schedule = NoiseSchedule(torch.linspace(0.99, 0.01, 10), prediction_type="sample")
    meta = {"sampling": {"uncond": list(meta_uncond)}} if meta_uncond is not None else {}
    return SimpleNamespace(animator=_SpyNet(), schedule=schedule, autoencoder=PatchAutoencoder(factor=4), meta=meta)


def test_the_bundle_setting_is_the_default_and_an_override_wins():
    assert bundle_uncond(_bundle(["pose"])) == ["pose"]
    assert bundle_uncond(_bundle(None)) == ["reference"]  # bundles written before the setting existed
    assert bundle_uncond(_bundle(["reference"]), ["reference", "pose"]) == ["reference", "pose"]


@pytest.mark.parametrize("bad", [["face"], [], ["pose", "refrence"]])
def test_unknown_or_empty_uncond_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"uncond=.*conditions \['reference', 'pose'\]"):
        bundle_uncond(_bundle(), bad)


def test_the_sampler_drops_exactly_the_chosen_conditions_in_the_unconditional_half():
    bundle = _bundle(["reference"])
    batch = {"pose": torch.zeros(2, 3, 3, 16, 16), "reference": torch.zeros(2, 3, 16, 16)}
    spec = teacher_sampler(bundle, 2, 2.0, bundle_uncond(bundle, ["pose"]), show_uncond=True)
    assert spec.name == "teacher DDIM-2 CFG 2 drop pose" and spec.nfe == 4
    spec.fn(batch, torch.randn(2, 48, 3, 4, 4))
    # one batched forward per step: [conditional | unconditional]; only pose is dropped, only in the second half
    assert bundle.animator.calls == [{"pose": [False, False, True, True]}] * 2
    assert teacher_sampler(bundle, 2, 2.0, ["pose"]).name == "teacher DDIM-2 CFG 2"  # the default keeps its name


def test_animate_takes_the_same_override_and_names_a_bad_one():
    from dancelcm.animate import InputError, make_sampler

    bundle = _bundle(["reference"])
    make_sampler(bundle, 2, 2.0, uncond=["pose"]).fn(
        {"pose": torch.zeros(1, 3, 3, 16, 16), "reference": torch.zeros(1, 3, 16, 16)}, torch.randn(1, 48, 3, 4, 4)
    )
    assert bundle.animator.calls[0] == {"pose": [False, True]}
    with pytest.raises(InputError, match=r"uncond=\['face'\]"):
        make_sampler(bundle, 2, 2.0, uncond=["face"])
