"""Every experiment and every ablation job composes and instantiates (datamodule and LightningModule)."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dancelcm.lit.builders import animator_kwargs, build_module, plain
from dancelcm.lit.distill import DistillModule
from dancelcm.lit.teacher import TeacherModule
from dancelcm.models.animator import Animator
from dancelcm.models.bundle import save_bundle

CONF = Path(__file__).resolve().parents[2] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
ABLATIONS = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _save_micro_teacher(directory, overrides=(), experiment="synthetic_teacher"):
    """An untrained micro teacher bundle (the experiment's architecture) matching data.resolution=32;
    returns (folder, its animator)."""
    cfg = _compose([f"+experiment={experiment}", "model=animator_micro", "data.resolution=32", *overrides])
    model = plain(cfg.model)
    animator = Animator(**animator_kwargs(model, 32))
    meta = {
        "kind": "teacher",
        "scheduler": model["scheduler"],
        "autoencoder": model["autoencoder"],
        "data": {"resolution": 32, "num_frames": 4, "stride": 2, "face_size": 16},
        "sampling": {"steps": 2},
    }
    return save_bundle(directory, animator, meta), animator


@pytest.fixture(scope="module")
def micro_bundle(tmp_path_factory):
    """What a distillation loads."""
    return _save_micro_teacher(tmp_path_factory.mktemp("bundle") / "teacher")[0]


def _micro_training(name, bundle, root) -> list[str]:
    """A distillation of ``bundle`` on the dataset at ``root`` that trains in seconds (4 frames, batch 2)."""
    return [
        *_small(name, bundle, root.parent),
        f"data.root={root}",
        "data.num_frames=4",
        "data.batch_size=2",
        "data.num_workers=0",
    ]


def _small(name, bundle, tmp_path):
    return [
        f"+experiment={name}",
        "model=animator_micro",
        "data.resolution=32",
        "data.face_size=16",
        f"paths.data_dir={tmp_path}",
        f"method.teacher={bundle}",
    ]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name, micro_bundle, tmp_path):
    cfg = _compose([f"+experiment={name}"])
    assert cfg.name == name and "experiment" not in cfg  # the primary config has no experiment entry
    instantiate(cfg.data)
    if name.startswith("wan_animate"):
        # a local Wan2.2-Animate folder and precomputed clips: without them it stops at once, naming the layout
        assert cfg.trainer.precision == "bf16-mixed" and cfg.method.student == "lora" and cfg.method.guidance == 1.0
        with pytest.raises(FileNotFoundError, match="(?s)method.teacher=.*Wan2.2-Animate-14B-Diffusers.*transformer/"):
            build_module(_compose([f"+experiment={name}", f"paths.data_dir={tmp_path}"]))
        return
    if name.startswith(("tiktok", "ubc")):
        # real-data experiments need local data and a local teacher: they stop at once, naming the option
        assert cfg.model.autoencoder.kind == "diffusers" and cfg.trainer.precision == "bf16-mixed"
        # a teacher experiment starts from local SD / AnimateDiff weights, a distillation from a teacher bundle
        option = "model.autoencoder.pretrained=" if name.endswith("_teacher") else "method.teacher="
        with pytest.raises(FileNotFoundError, match=option):
            build_module(_compose([f"+experiment={name}", f"paths.data_dir={tmp_path}"]))
        return
    overrides = _small(name, micro_bundle, tmp_path)
    if name.startswith("synthetic_teacher"):
        overrides = [o for o in overrides if not o.startswith("method.teacher")]
    if name == "synthetic_teacher_refine":
        # stage 2 starts from stage 1's export: without one it stops at once, naming the folder
        with pytest.raises(FileNotFoundError, match=str(tmp_path / "synthetic_teacher" / "export")):
            build_module(_compose([*overrides, f"paths.output_dir={tmp_path}"]))
        # a micro stage 1 without a refiner (animator_micro has one) stands in for runs/synthetic_teacher/export
        stage1, animator = _save_micro_teacher(tmp_path / "stage1", ["model.animator.pixel_refiner=null"])
        micro_state = animator.state_dict()
        overrides.append(f"method.init_from={stage1}")
    if name == "synthetic_teacher_continue":
        # starts from the shipped bundle (a micro one of stage 2's architecture stands in): every weight,
        # the refiner's included
        assert _compose([f"+experiment={name}"]).method.init_from == "checkpoints/synthetic_teacher"
        shipped, animator = _save_micro_teacher(tmp_path / "shipped", experiment=name)
        with torch.no_grad():  # a trained refiner (a fresh one's last conv is zero)
            animator.pixel_refiner.conv_out.weight.add_(0.5)
        save_bundle(shipped, animator, json.loads((shipped / "bundle.json").read_text()))
        micro_state = animator.state_dict()
        assert any(k.startswith("pixel_refiner.") for k in micro_state)
        overrides.append(f"method.init_from={shipped}")
    module = build_module(_compose(overrides))
    expected = TeacherModule if name.startswith("synthetic_teacher") else DistillModule
    assert isinstance(module, expected)
    if name == "synthetic_teacher_refine":  # stage 1's weights, plus a refiner that starts as a no-op
        assert module.animator.pixel_refiner is not None
        for k, v in module.animator.state_dict().items():
            if not k.startswith("pixel_refiner."):
                assert torch.equal(v, micro_state[k]), k
    if name == "synthetic_teacher_continue":
        assert module.lr_anneal is not None
        for k, v in module.animator.state_dict().items():
            assert torch.equal(v, micro_state[k]), k
    if name == "synthetic_lcm":
        assert module.segments.num_segments == 1 and module.student.aux_head is None
        assert "face" not in module.student.animator.condition_names and module.cfg.loss.motion_weight == 0
    if name == "synthetic_k4":
        assert module.segments.num_segments == 4 and module.student.aux_head is not None
        assert module.student.animator.condition_names[-1] == "face"


def _sweep_jobs(cfg):
    params = cfg.hydra.sweeper.params
    jobs = [[]]
    for key, values in params.items():
        jobs = [j + [f"{key}={v}"] for j in jobs for v in str(values).split(",")]
    return jobs


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_ablation_job_instantiates(ablation, micro_bundle, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["+experiment=synthetic_k4", f"+ablation={ablation}"],
            return_hydra_config=True,
        )
    assert cfg.ablation == ablation
    jobs = _sweep_jobs(cfg)
    assert len(jobs) >= 2
    built = []
    for job in jobs:
        module = build_module(
            _compose(_small("synthetic_k4", micro_bundle, tmp_path) + [f"+ablation={ablation}", *job])
        )
        built.append(
            (
                module.segments.num_segments,
                module.student.aux_head is not None,
                "face" in module.student.animator.condition_names,
                module.cfg.loss.motion_weight,
            )
        )
    assert len(set(built)) == len(jobs), f"jobs of {ablation} do not differ: {built}"


def test_step_schedules_switch_at_their_steps_and_reject_bad_input(micro_bundle, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import torch

    import dancelcm.lit.teacher as teacher_mod

    teacher_overrides = [o for o in _small("synthetic_teacher", micro_bundle, tmp_path) if "method.teacher" not in o]
    teacher = build_module(_compose([*teacher_overrides, "method.timestep_power=[[0,1.0],[100,2.0]]"]))
    powers = []
    real = teacher_mod.sample_timesteps
    monkeypatch.setattr(
        teacher_mod, "sample_timesteps", lambda b, n, power, *a, **k: powers.append(power) or real(b, n, power, *a, **k)
    )
    teacher.log = lambda *a, **k: None
    batch = {
        "video": torch.rand(2, 4, 3, 32, 32) * 2 - 1,
        "pose": torch.rand(2, 4, 3, 32, 32) * 2 - 1,
        "reference": torch.rand(2, 3, 32, 32) * 2 - 1,
    }
    for step in (0, 99, 100, 5000):
        loop = SimpleNamespace(total_batch_idx=step)
        teacher._trainer = SimpleNamespace(global_step=step, world_size=1, global_rank=0, fit_loop=loop)
        assert torch.isfinite(teacher.training_step(batch, 0))
    assert powers == [1.0, 1.0, 2.0, 2.0]

    distill = build_module(
        _compose([*_small("synthetic_k4", micro_bundle, tmp_path), "method.curriculum=[[0,8],[10,4],[20,2]]"])
    )
    ks = []
    for step in (0, 9, 10, 19, 20, 1000):
        distill._trainer = SimpleNamespace(global_step=step)
        ks.append(distill.segments.num_segments)
    assert ks == [8, 8, 4, 4, 2, 2]

    with pytest.raises(ValueError, match="strictly increasing"):
        build_module(_compose([*teacher_overrides, "method.timestep_power=[[100,2.0],[0,1.0]]"]))
    with pytest.raises(ValueError, match="powers must be > 0"):
        build_module(_compose([*teacher_overrides, "method.timestep_power=[[0,0.0]]"]))
    with pytest.raises(ValueError, match="start_step, value"):
        build_module(_compose([*teacher_overrides, "method.timestep_power=[2.0]"]))
    with pytest.raises(ValueError, match="num_segments|K|grid"):  # K = 7 does not divide the 40-step grid
        build_module(_compose([*_small("synthetic_k4", micro_bundle, tmp_path), "method.curriculum=[[0,7]]"]))


def test_face_tokens_follow_the_teacher_bundles_factor_not_the_run_model_config(micro_bundle, tmp_path):
    # The student is rebuilt from the bundle (factor 4 here): a run whose `model` group names another patch
    # factor must still give it 16 px / 4 = 4x4 face tokens, or the first batch fails on the token count.
    module = build_module(_compose([*_small("synthetic_k4", micro_bundle, tmp_path), "model.autoencoder.factor=8"]))
    face = module.student.animator.embedders["face"]
    assert module.autoencoder.factor == 4 and face.num_tokens == (16 // 4) ** 2
    with pytest.raises(ValueError, match="data.face_size=18 is not divisible by the factor 4"):
        build_module(_compose([*_small("synthetic_k4", micro_bundle, tmp_path), "data.face_size=18"]))


def test_lr_anneal_decays_the_lr_by_cosine_and_a_resumed_run_follows_a_new_one(micro_bundle, tmp_path):
    teacher_overrides = [o for o in _small("synthetic_teacher", micro_bundle, tmp_path) if "method.teacher" not in o]
    anneal = "method.lr_anneal={start:100,end:200,floor:0.1}"
    for overrides in (teacher_overrides, _small("synthetic_k4", micro_bundle, tmp_path)):
        module = build_module(_compose([*overrides, "method.warmup_steps=10", anneal]))
        opt = module.configure_optimizers()
        sched = opt["lr_scheduler"]["scheduler"]
        lr = module.cfg.lr
        factors = [sched.lr_lambdas[0](s) for s in (0, 9, 100, 150, 200, 5000)]
        assert factors == pytest.approx([0.1, 1.0, 1.0, 0.55, 0.1, 0.1])
        # a run resumed with the anneal set later: the scheduler state (its step) loads, the new decay applies
        state = {"last_epoch": 150, "base_lrs": [lr] * len(sched.base_lrs), "_last_lr": [lr] * len(sched.base_lrs)}
        plain = build_module(_compose([*overrides, "method.warmup_steps=10"]))
        sched_plain = plain.configure_optimizers()["lr_scheduler"]["scheduler"]
        assert sched_plain.lr_lambdas[0](150) == 1.0
        sched.load_state_dict({**sched_plain.state_dict(), **state})
        sched.optimizer.step()
        sched.step()
        assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(lr * sched.lr_lambdas[0](151))
        assert sched.optimizer.param_groups[0]["lr"] < 0.6 * lr

    bad_values = (("{start:200,end:100}", "start < end"), ("{start:0,end:10,floor:2}", "floor <= 1"), ("0.1", "start"))
    for bad, match in bad_values:
        with pytest.raises(ValueError, match=match):
            build_module(_compose([*teacher_overrides, f"method.lr_anneal={bad}"]))


def test_face_lr_scale_trains_only_the_new_face_path_faster(micro_bundle, tmp_path):
    small = _small("synthetic_k4", micro_bundle, tmp_path)
    module = build_module(_compose([*small, "method.face_lr_scale=10"]))
    face = module.face_parameters()
    names = {n for n, p in module.student.named_parameters() if any(p is q for q in face)}
    # the face tokenizer and every decoupled key/value projection, nothing of the teacher's network
    assert any("embedders.face." in n for n in names) and any("to_v_ip" in n for n in names)
    assert all("embedders.face." in n or "_ip." in n for n in names)
    groups = module.configure_optimizers()["optimizer"].param_groups
    lr = module.cfg.lr
    assert [g["initial_lr"] for g in groups] == [lr, 10 * lr]
    assert len(groups[1]["params"]) == len(face)
    trainable = [p for p in module.student.parameters() if p.requires_grad]
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(trainable)
    # the default is one group; without face injection there is nothing to scale
    assert len(build_module(_compose(small)).configure_optimizers()["optimizer"].param_groups) == 1
    no_face = build_module(_compose([*small, "method.face.enabled=false", "method.face_lr_scale=10"]))
    assert no_face.face_parameters() == [] and len(no_face.configure_optimizers()["optimizer"].param_groups) == 1
    with pytest.raises(ValueError, match="method.face_lr_scale=0"):
        build_module(_compose([*small, "method.face_lr_scale=0"])).configure_optimizers()


# #23 item 12: every method option is range-checked when the module is built, naming the option as typed
BAD_OPTIONS = [
    ("synthetic_k4", "method.loss.motion_weight=-1", "method.loss.motion_weight=-1: must be >= 0 (0 turns"),
    ("synthetic_k4", "method.guidance=-3", "method.guidance=-3: must be >= 1"),
    ("synthetic_k4", "method.guidance=0.5", "method.guidance=0.5: must be >= 1"),
    ("synthetic_k4", "method.segments.num_segments=0", "method.segments.num_segments=0: must be an integer >= 1"),
    ("synthetic_k4", "method.segments.num_grid=0", "method.segments.num_grid=0: must be an integer >= 1"),
    ("synthetic_k4", "method.segments.num_train_timesteps=0", "method.segments.num_train_timesteps=0: must be"),
    ("synthetic_k4", "method.segments.num_segments=2.5", "method.segments.num_segments=2.5: must be an integer"),
    ("synthetic_k4", "method.segments.num_segments=3", "method.segments={num_segments:3,num_grid:40,"),
    ("synthetic_k4", "+method.segments.num_segment=4", "method.segments.num_segment=4: unknown option"),
    ("synthetic_k4", "method.segments.num_train_timesteps=2000", "method.segments.num_train_timesteps=2000: the teach"),
    ("synthetic_k4", "method.teacher=null", "method.teacher=null: must be a teacher bundle folder"),
    ("synthetic_k4", "method.uncond=reference", "method.uncond=reference: must be null"),
    ("synthetic_k4", "method.target.kind=online", "method.target.kind=online: choose ema or student"),
    ("synthetic_k4", "method.target.decay=1", "method.target.decay=1: must be in [0, 1)"),
    ("synthetic_k4", "method.target.decay=-0.1", "method.target.decay=-0.1: must be in [0, 1)"),
    ("synthetic_k4", "method.loss.distance=l1", "method.loss.distance=l1: choose huber or l2"),
    ("synthetic_k4", "method.loss.huber_c=0", "method.loss.huber_c=0: must be > 0"),
    ("synthetic_k4", "method.loss.aux_weight=-0.5", "method.loss.aux_weight=-0.5: must be >= 0"),
    ("synthetic_k4", "method.loss.aux_weighted=2", "method.loss.aux_weighted=2: must be true or false"),
    ("synthetic_k4", "method.loss.motion_delta=0", "method.loss.motion_delta=0: must be in (0, 1)"),
    ("synthetic_k4", "method.loss.motion_delta=1.5", "method.loss.motion_delta=1.5: must be in (0, 1)"),
    ("synthetic_k4", "+method.loss.motion_weigth=2", "method.loss.motion_weigth=2: unknown option"),
    ("synthetic_k4", "method.face.enabled=maybe", "method.face.enabled=maybe: must be true or false"),
    ("synthetic_k4", "method.face.dropout=1.5", "method.face.dropout=1.5: must be in [0, 1]"),
    ("synthetic_k4", "method.face.dropout=-0.1", "method.face.dropout=-0.1: must be in [0, 1]"),
    ("synthetic_k4", "+method.aux_head=true", "method.aux_head=true: unknown option"),  # one switch: loss.aux_weight
    ("synthetic_k4", "~method.lr", "method.lr: missing"),
    ("synthetic_k4", "method.lr=0", "method.lr=0: must be > 0"),
    ("synthetic_k4", "method.lr=-1.0", "method.lr=-1.0: must be > 0"),
    ("synthetic_k4", "method.face_lr_scale=0", "method.face_lr_scale=0: must be > 0"),
    ("synthetic_k4", "method.weight_decay=-0.01", "method.weight_decay=-0.01: must be >= 0"),
    ("synthetic_k4", "method.warmup_steps=-1", "method.warmup_steps=-1: must be an integer >= 0"),
    ("synthetic_k4", "method.warmup_steps=2.5", "method.warmup_steps=2.5: must be an integer >= 0"),
    ("synthetic_k4", "method.teacher_dtype=float16", "method.teacher_dtype=float16: choose auto, float32 or bfloat16"),
    ("synthetic_k4", "method.curriculum=[[0,0]]", "method.curriculum=[[0,0]]: K must be a positive integer"),
    ("synthetic_k4", "method.curriculum=[[0,3]]", "method.curriculum=[[0,3]]: K=3: num_grid=40 is not divisible"),
    ("synthetic_k4", "method.validation.student_steps=[0,2]", "method.validation.student_steps=[0,2]: must be a list"),
    ("synthetic_k4", "method.validation.teacher_steps=0", "method.validation.teacher_steps=0: must be an integer"),
    ("synthetic_k4", "method.validation.teacher_steps=5000", "method.validation.teacher_steps=5000: must be <= the"),
    ("synthetic_k4", "method.nonfinite=ignore", "method.nonfinite=ignore: choose raise or skip"),
    ("synthetic_teacher", "method.lr=0", "method.lr=0: must be > 0"),
    ("synthetic_teacher", "method.skip_lr_scale=0", "method.skip_lr_scale=0: must be > 0"),
    ("synthetic_teacher", "method.weight_decay=-1", "method.weight_decay=-1: must be >= 0"),
    ("synthetic_teacher", "method.warmup_steps=-1", "method.warmup_steps=-1: must be an integer >= 0"),
    ("synthetic_teacher", "method.ema_decay=1", "method.ema_decay=1: must be in [0, 1)"),
    ("synthetic_teacher", "method.condition_dropout.reference=2", "method.condition_dropout.reference=2: must be in"),
    ("synthetic_teacher", "method.loss_weight_gamma=-5", "method.loss_weight_gamma=-5: must be null"),
    ("synthetic_teacher", "method.sampling.steps=0", "method.sampling.steps=0: must be an integer >= 1"),
    ("synthetic_teacher", "method.sampling.guidance=-1", "method.sampling.guidance=-1: must be >= 1"),
    ("synthetic_teacher", "method.sampling.uncond=[]", "method.sampling.uncond=[]: must be a non-empty list"),
    ("synthetic_teacher", "method.nonfinite=ignore", "method.nonfinite=ignore: choose raise or skip"),
]


@pytest.mark.parametrize(
    ("experiment", "override", "message"), BAD_OPTIONS, ids=[f"{e}:{o}" for e, o, _ in BAD_OPTIONS]
)
def test_bad_method_options_stop_at_construction(experiment, override, message, micro_bundle, tmp_path):
    import re

    overrides = _small(experiment, micro_bundle, tmp_path)
    if experiment.startswith("synthetic_teacher"):
        overrides = [o for o in overrides if not o.startswith("method.teacher")]
    with pytest.raises(ValueError, match=re.escape(message)):
        build_module(_compose([*overrides, override]))


def test_method_options_at_the_edges_of_their_ranges_are_accepted(micro_bundle, tmp_path):
    edges = [
        "method.loss.motion_weight=0",  # the motion-focused loss off
        "method.loss.aux_weight=0",
        "method.guidance=1",  # no CFG in the teacher's step
        "method.target.decay=0",
        "method.face.dropout=1",
        "method.warmup_steps=0",
        "method.weight_decay=0",
        "method.segments.num_segments=1",
        "method.validation.teacher_steps=1000",
    ]
    module = build_module(_compose([*_small("synthetic_k4", micro_bundle, tmp_path), *edges]))
    assert module.cfg.loss.motion_weight == 0 and module.segments.num_segments == 1
    assert module.student.aux_head is None  # loss.aux_weight=0: no auxiliary head
    teacher_overrides = [o for o in _small("synthetic_teacher", micro_bundle, tmp_path) if "method.teacher" not in o]
    teacher = build_module(_compose([*teacher_overrides, "method.ema_decay=0", "method.loss_weight_gamma=null"]))
    assert teacher.ema is None
