"""The EMA target follows the student after each real optimizer step: closed form, also under accumulation."""

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from dancelcm.lit.builders import build_module
from tests.configs.test_experiment_configs import _compose, _micro_training, _save_micro_teacher


class _Weights(L.Callback):
    """The student's weights after every optimizer step (global_step counts real steps)."""

    def __init__(self):
        self.after_step: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step > len(self.after_step):
            self.after_step.append([p.detach().clone() for p in module.student.parameters()])


@pytest.mark.parametrize("accumulate", [1, 2])
def test_target_is_the_closed_form_ema_of_the_students_weights(accumulate, synthetic_root, tmp_path):
    bundle, _ = _save_micro_teacher(tmp_path / "teacher")
    cfg = _compose(
        [
            *_micro_training("synthetic_k4", bundle, synthetic_root),
            "method.warmup_steps=0",
            "method.lr=1e-3",
        ]
    )
    module = build_module(cfg)
    decay = module.target.decay
    initial = [p.detach().clone() for p in module.student.parameters()]
    weights = _Weights()
    trainer = L.Trainer(
        max_steps=3,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[weights],
    )
    trainer.fit(module, datamodule=instantiate(cfg.data))
    assert trainer.global_step == 3 and len(weights.after_step) == 3
    assert int(module.target.num_updates) == 3  # one update per optimizer step, none per micro-batch
    expected = initial
    for step in weights.after_step:  # shadow_n = d shadow_{n-1} + (1 - d) w_n, w_n = the weights after step n
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, step)]
    moved = max((w - i).abs().max().item() for w, i in zip(weights.after_step[-1], initial))
    assert moved > 1e-4  # the student did train, so a lagging target would differ
    for e, s in zip(expected, module.target.shadow.parameters()):
        torch.testing.assert_close(s, e, rtol=0, atol=1e-6)
