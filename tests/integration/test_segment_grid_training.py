"""``method.segments.grid`` reaches the distillation: the module's teacher steps follow the chosen grid (built from
the teacher bundle's own schedule), the export's sampler is unchanged, and the bundle records the grid."""

import torch
from hydra.utils import instantiate

from dancelcm.lit.builders import build_module
from tests.configs.test_experiment_configs import _compose, _micro_training, _save_micro_teacher


def test_fine_end_grid_drives_the_teacher_steps_and_leaves_the_sampler_alone(synthetic_root, tmp_path):
    bundle, _ = _save_micro_teacher(tmp_path / "teacher")
    cfg = _compose([*_micro_training("synthetic_k4", bundle, synthetic_root), "method.segments.grid=fine_end"])
    module = build_module(cfg)
    seg = module.segments
    uniform = [(n + 1) * 25 - 1 for n in range(40)]
    assert seg.grid_kind == "fine_end" and seg.grid.tolist()[10:] == uniform[10:]
    assert seg.grid.tolist()[0] == 0 and seg.grid.tolist()[9] == 249  # the lowest segment, finer at the clean end
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    x0 = module.autoencoder.encode(batch["video"])
    n = torch.tensor([0, 1, 5, 20])[: x0.shape[0]]
    _, targets = module.make_targets(batch, x0, seg, n, torch.randn_like(x0), train=False)
    expected_tn = [-1, 0, seg.grid.tolist()[4], uniform[19]][: x0.shape[0]]
    assert targets.t_n.tolist() == expected_tn and torch.isfinite(targets.target).all()
    meta = module.bundle_meta()
    assert meta["training"]["grid"] == "fine_end"
    assert meta["segments"] == {"num_segments": 4, "num_grid": 40, "num_train_timesteps": 1000}
