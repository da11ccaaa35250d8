"""The LoRA student (``method.student=lora``): one copy of the base weights shared by teacher, student and target.

- the teacher view (adapters and the student's face path off) gives the frozen teacher's output exactly;
- the EMA target is the closed-form fp32 EMA of the trainable weights (adapters, face path, aux head);
- only adapters, face path and aux head train; checkpoints hold no base weight and resume exactly;
- the export holds the adapters in the diffusers / peft format (diffusers' LoRA loader reads them) and a
  reference to the teacher bundle; loaded back, it samples as the training-time student.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from dancelcm.cli import ConfigError, MissingPathError
from dancelcm.lit.builders import build_module
from dancelcm.models.bundle import load_bundle
from dancelcm.models.lora import has_lora
from dancelcm.train import run
from tests.configs.test_experiment_configs import _compose, _micro_training, _save_micro_teacher

LORA = ["method.student=lora", "method.lora.rank=4", "method.lora.alpha=4"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return _save_micro_teacher(tmp_path_factory.mktemp("lora") / "teacher")[0]


def _cfg(root, teacher, *extra):
    return _compose([*_micro_training("synthetic_k4", teacher, root), *LORA, *extra])


def _batch_inputs(module, datamodule):
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    x0 = module.autoencoder.encode(batch["video"])
    return batch, x0


def _perturb(params, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_teacher_view_equals_the_frozen_teacher_exactly(synthetic_root, teacher):
    cfg = _cfg(synthetic_root, teacher)
    module = build_module(cfg)
    assert has_lora(module.student.animator) and "face" in module.student.animator.condition_names
    # a trained student: every adapter and face weight moved (LoRA B starts at zero; the face values too)
    _perturb([p for p in module.student.parameters() if p.requires_grad])
    frozen = load_bundle(teacher).animator.eval()
    batch, x0 = _batch_inputs(module, instantiate(cfg.data))
    t = torch.tensor([999, 400])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    x_t = module.schedule.add_noise(x0, noise, t)
    module.student.train()  # the view must not depend on the student's mode
    with torch.no_grad():
        expected = frozen(x_t, t, frozen.conditions(batch, module.autoencoder))
        got = module.teacher(x_t, t, module.teacher.conditions(batch, module.autoencoder))
        student = module.student(x_t, t, module.student.animator.conditions(batch, module.autoencoder))
    assert torch.equal(got, expected)
    assert (student - expected).abs().max() > 1e-3  # the student itself is not the teacher
    assert module.student.training  # mode restored
    # one copy of the base weights: the teacher view owns none
    assert not any(k.startswith("teacher.") for k in module.state_dict())


def test_only_adapters_face_path_and_aux_head_train(synthetic_root, teacher):
    module = build_module(_cfg(synthetic_root, teacher))
    trainable = [n for n, p in module.student.named_parameters() if p.requires_grad]
    assert trainable and all(
        ("lora_A" in n or "lora_B" in n) or "_ip." in n or ".embedders.face." in f".{n}" or n.startswith("aux_head.")
        for n in trainable
    ), trainable
    assert any("lora_B" in n for n in trainable) and any(n.startswith("aux_head.") for n in trainable)
    assert any("_ip." in n for n in trainable)  # the face path trains in full
    total = sum(p.numel() for p in module.student.parameters())
    assert sum(p.numel() for p in module.student.parameters() if p.requires_grad) < 0.5 * total


class _Weights(L.Callback):
    def __init__(self):
        self.after_step: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step > len(self.after_step):
            self.after_step.append([p.detach().clone() for p in module.target._params(module.student)])


def test_target_is_the_closed_form_ema_of_the_trainable_weights(synthetic_root, teacher):
    cfg = _cfg(synthetic_root, teacher, "method.warmup_steps=0", "method.lr=1e-3")
    module = build_module(cfg)
    decay = module.target.decay
    initial = [s.clone() for s in module.target.shadows]
    weights = _Weights()
    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[weights],
    )
    trainer.fit(module, datamodule=instantiate(cfg.data))
    assert int(module.target.num_updates) == 3 and len(weights.after_step) == 3
    expected = initial
    for step in weights.after_step:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, step)]
    moved = max((w - i).abs().max().item() for w, i in zip(weights.after_step[-1], initial))
    assert moved > 1e-4
    for e, s in zip(expected, module.target.shadows):
        assert s.dtype == torch.float32
        torch.testing.assert_close(s, e, rtol=0, atol=1e-6)
    # the target's forward runs the averaged weights, and leaves the student's own in place
    before = [p.detach().clone() for p in module.target._params(module.student)]
    batch, x0 = _batch_inputs(module, instantiate(cfg.data))
    t = torch.tensor([500, 500])
    cond = module.student.animator.conditions(batch, module.autoencoder)
    with torch.no_grad():
        target_out = module.target_net(x0, t, cond)
        with module.target.swapped_in(module.student):
            module.student.eval()
            by_hand = module.student(x0, t, cond)
    assert torch.equal(target_out, by_hand)
    for b, p in zip(before, module.target._params(module.student)):
        assert torch.equal(b, p)


def _run_cfg(root, teacher, max_steps, *extra):
    return _cfg(
        root,
        teacher,
        "method.segments.num_grid=8",
        "method.warmup_steps=0",  # steps large enough that a lost adapter, EMA or optimizer state shows
        "method.lr=1e-3",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        "callbacks.checkpoint_every_n_steps=2",
        "callbacks.export_every_n_steps=null",
        "callbacks.sample_videos=null",
        f"trainer.max_steps={max_steps}",
        *extra,
    )


def test_checkpoints_hold_no_base_weights_and_resume_exactly(synthetic_root, teacher, tmp_path):
    run_dir = tmp_path / "run"
    run(_run_cfg(synthetic_root, teacher, 2), run_dir)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    keys = list(ckpt["state_dict"])
    assert keys and all("base_layer" not in k for k in keys)
    assert not any(k.startswith(("student.animator.embedders.pose.", "teacher.")) for k in keys)
    assert any("lora_B" in k for k in keys) and any(k.startswith("target.shadows.") for k in keys)
    _, resumed = run(_run_cfg(synthetic_root, teacher, 4, "ckpt_path=auto"), run_dir)
    straight_dir = tmp_path / "straight"
    _, straight = run(_run_cfg(synthetic_root, teacher, 4, "callbacks.export_every_n_steps=100"), straight_dir)
    a, b = resumed.state_dict(), straight.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    # the export (at the end of training): the adapters + the face path + a reference to the base bundle
    d = straight_dir / "export"
    meta = json.loads((d / "bundle.json").read_text())
    assert meta["format"] == "lora" and meta["kind"] == "student" and Path(meta["base"]) == Path(teacher).resolve()
    assert not (d / "unet").exists()  # no copy of the base weights
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin

    read, _ = StableDiffusionLoraLoaderMixin.lora_state_dict(str(d))  # diffusers' own reader
    assert read and all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in read)
    bundle = load_bundle(d)
    assert has_lora(bundle.animator) and bundle.meta["sampling"]["scheduler"] == "TCDScheduler"
    batch, x0 = _batch_inputs(straight, instantiate(_run_cfg(synthetic_root, teacher, 4).data))
    t = torch.tensor([999, 249])
    net = straight.student.animator.eval()
    with torch.no_grad():
        trained = net(x0, t, net.conditions(batch, straight.autoencoder))
        loaded = bundle.animator(x0, t, bundle.animator.conditions(batch, bundle.autoencoder))
        base = straight.teacher(x0, t, straight.teacher.conditions(batch, straight.autoencoder))
    assert (trained - base).abs().max() > 0  # the student moved away from its teacher
    assert torch.equal(loaded, trained)
    # evaluate reads it like any student bundle (in-process, as `python -m dancelcm.evaluate` runs it)
    from dancelcm import evaluate
    from tests.unit.test_evaluation_commands import _compose as _compose_command

    ecfg = _compose_command(
        "evaluate",
        [
            f"teacher={teacher}",
            f"students={{lora:'{d}'}}",
            f"data.root={synthetic_root}",
            "data.resolution=32",
            "data.num_frames=4",
            "data.face_size=16",
            "data.val_batch_size=2",
            "data.num_workers=0",
            "max_clips=2",
            "teacher_steps=[2]",
            "vs_teacher.steps=2",
            "student_steps=[1,4]",
            "feature_net=null",
            "sample_clips=0",
            "reference_baseline=false",
            f"out_dir={tmp_path / 'eval'}",
        ],
    )
    assert {"lora 1-step", "lora 4-step"} <= set(evaluate.run(ecfg)["samplers"])
    # a moved base is named with the field to edit
    moved = tmp_path / "moved"
    shutil.copytree(d, moved)
    meta["base"] = str(tmp_path / "nowhere")
    (moved / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(MissingPathError, match="bundle.json 'base'"):
        load_bundle(moved)
    # a base that changed since (retrained or re-exported in place) is refused: the adapters would sit on other weights
    changed = tmp_path / "changed_teacher"
    shutil.copytree(teacher, changed)
    bj = json.loads((changed / "bundle.json").read_text())
    (changed / "bundle.json").write_text(json.dumps({**bj, "note": "re-exported"}))
    meta["base"] = str(changed)
    (moved / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="fingerprint"):
        load_bundle(moved)
    # resuming with other adapter settings, or on a changed teacher, stops naming the option
    with pytest.raises(ConfigError, match="method.lora.alpha=8"):
        run(_run_cfg(synthetic_root, teacher, 6, "ckpt_path=auto", "method.lora.alpha=8"), run_dir)
    with pytest.raises(ConfigError, match="another version of that bundle"):
        run(_run_cfg(synthetic_root, changed, 6, "ckpt_path=auto"), run_dir)


@pytest.mark.parametrize(
    "override,message",
    [
        ("method.student=half", "method.student=half: choose full"),
        ("method.lora.rank=0", "method.lora.rank=0: must be an integer >= 1"),
        ("method.lora.dropout=1.0", "method.lora.dropout=1.0: must be in [0, 1)"),
        ("method.lora.target_modules=[to_qq]", "target_modules: ['to_qq'] match no linear layer"),
    ],
)
def test_bad_lora_options_are_named(override, message, synthetic_root, teacher):
    with pytest.raises((ConfigError, ValueError)) as e:
        build_module(_cfg(synthetic_root, teacher, override))
    assert message in str(e.value)
