"""Every data config composes under the primary config and instantiates a datamodule."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dancelcm.data.datamodule import PoseVideoDataModule

CONF = Path(__file__).resolve().parents[2] / "conf"


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_data_config_instantiates(name, tmp_path):
    cfg = _compose([f"data={name}", f"paths.data_dir={tmp_path}"])
    dm = instantiate(cfg.data)
    if name == "precomputed":  # a large teacher's precomputed clips: a missing folder names the command
        from dancelcm.data.precomputed import PrecomputedDataModule

        assert isinstance(dm, PrecomputedDataModule) and dm.root == str(tmp_path / "tiktok/precomputed/wan_animate")
        with pytest.raises(FileNotFoundError, match="data.root=.*python -m dancelcm.precompute"):
            dm.setup("fit")
        return
    assert isinstance(dm, PoseVideoDataModule)
    assert dm.root == str(tmp_path / {"synthetic": "synthetic", "tiktok": "tiktok", "ubc_fashion": "ubc_fashion"}[name])
    assert (dm.synthesize is not None) == (name == "synthetic")


def test_real_data_without_root_says_what_to_set(tmp_path):
    dm = instantiate(_compose(["data=tiktok", f"paths.data_dir={tmp_path}"]).data)
    dm.prepare_data()  # never invents real data
    with pytest.raises(FileNotFoundError, match="data.root="):
        dm.setup("fit")


def test_data_root_override_points_at_a_dataset(synthetic_root):
    cfg = _compose([f"data.root={synthetic_root}", "data.resolution=32", "data.num_workers=0", "data.num_frames=4"])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["video"].shape[1:] == (4, 3, 32, 32)


def test_the_runs_seed_sets_the_data_seed_so_a_seed_sweep_varies_the_data_order(synthetic_root):
    base = [f"data.root={synthetic_root}", "data.resolution=32", "data.num_workers=0", "data.num_frames=4"]
    ids = {}
    for seed in (0, 1):
        cfg = _compose([*base, f"seed={seed}"])
        assert cfg.data.seed == seed
        dm = instantiate(cfg.data)
        dm.setup("fit")
        ids[seed] = [k[0] for k in dm.train_dataloader().sampler]
    assert sorted(ids[0]) == sorted(ids[1]) and ids[0] != ids[1]
    assert _compose([*base, "seed=1", "data.seed=5"]).data.seed == 5  # still settable on its own
