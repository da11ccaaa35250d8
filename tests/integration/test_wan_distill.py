"""DanceLCM on Wan2.2-Animate, end to end on the CPU with a tiny random model of the real classes.

precompute (the adapter, = the pipeline's inputs) -> distil a few steps through the training entry point (full and
LoRA students, auxiliary head, motion loss on latent frame differences) -> export -> load the export and sample;
and the interop check: the exported student inside diffusers' own ``WanAnimatePipeline`` with a stock flow
scheduler on the student's segment edges gives the project's K-step video from the same noise, to 1e-4.
"""

from __future__ import annotations

import json

import pytest
import torch

from dancelcm.lit.builders import build_module
from dancelcm.models.bundle import load_bundle
from dancelcm.models.wan.tiny import save_tiny_wan_animate
from dancelcm.train import run
from tests.configs.test_experiment_configs import _compose


@pytest.fixture(scope="module")
def wan_setup(synthetic_root, tmp_path_factory):
    """(tiny model folder, precomputed clips folder)."""
    from hydra import compose, initialize_config_dir

    from dancelcm.cli import CONF
    from dancelcm.precompute import run as precompute

    d = tmp_path_factory.mktemp("wan")
    model = save_tiny_wan_animate(d / "Wan2.2-Animate-tiny")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "precompute",
            [f"model.path={model}", f"data.root={synthetic_root}", f"out={d / 'pre'}", "data.num_frames=9",
             "data.resolution=32", "data.num_workers=0", "splits.train=1", "splits.test=1",
             "max_sequence_length=16"],
        )  # fmt: skip
    precompute(cfg)
    return model, d / "pre"


def _train_cfg(model, pre, experiment="wan_animate_k4", *extra):
    return _compose(
        [f"+experiment={experiment}", "trainer=default", f"method.teacher={model}", f"data.root={pre}",
         "data.batch_size=2", "data.num_workers=0", "trainer.max_steps=2", "trainer.limit_val_batches=0",
         "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
         "callbacks.sample_videos=null", "method.warmup_steps=0", "method.lr=1e-3", "method.validation.teacher_steps=2",
         "method.lora.rank=4", "method.lora.alpha=4", "method.frozen_dtype=float32", *extra],
    )  # fmt: skip


def test_the_auxiliary_head_equals_the_main_prediction_at_initialisation(wan_setup):
    model, pre = wan_setup
    for student in ("full", "lora"):
        module = build_module(_train_cfg(model, pre, "wan_animate_k4", f"method.student={student}"))
        from dancelcm.data.precomputed import PrecomputedClips

        item = PrecomputedClips(pre, "train")[0]
        batch = {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in item.items()}
        cond = module.conditions(batch, module.teacher.condition_names)
        x0 = batch["latents"]
        t = module.schedule.network_timestep(torch.tensor([600]))
        x_t = torch.randn_like(x0)
        module.student.return_aux = True
        with torch.no_grad():
            out, aux = module.student(x_t, t, cond)
            teacher_out = module.teacher(x_t, t, cond)
        module.student.return_aux = False
        torch.testing.assert_close(aux, out, rtol=0, atol=1e-5)
        torch.testing.assert_close(out, teacher_out, rtol=0, atol=1e-5)  # the student starts as the teacher
        trainable = {n for n, p in module.student.named_parameters() if p.requires_grad}
        if student == "lora":
            assert trainable and all("lora_" in n or n.startswith("aux_head.") for n in trainable)


@pytest.mark.parametrize("student", [pytest.param("full", marks=pytest.mark.slow), "lora"])
def test_distil_export_and_sample_through_the_training_entry_point(student, wan_setup, tmp_path):
    model, pre = wan_setup
    # the tiny random VAE's latents change little between frames (0.15-0.25 of their std): a lower threshold than the
    # default's estimate for a trained VAE, so that the motion map is not empty
    cfg = _train_cfg(model, pre, "wan_animate_k4", f"method.student={student}", "method.loss.motion_latent_delta=0.15")
    trainer, module = run(cfg, tmp_path / "run")
    assert trainer.global_step == 2
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()) and "train/loss_aux" in metrics
    assert 0 < metrics["train/motion_fraction"] < 1  # moving cells found in the latents' frame differences
    export = tmp_path / "run" / "export"
    meta = json.loads((export / "bundle.json").read_text())
    assert meta["family"] == "wan_animate" and meta["kind"] == "student"
    assert (export / ("pytorch_lora_weights.safetensors" if student == "lora" else "transformer/config.json")).is_file()
    bundle = load_bundle(export)
    from dancelcm.data.precomputed import PrecomputedClips
    from dancelcm.sampling import clip_noise, latent_shape, student_sampler

    clips = PrecomputedClips(pre, "test")
    batch = {k: (torch.stack([clips[0][k], clips[1][k]]) if torch.is_tensor(clips[0][k]) else [clips[0][k]] * 2)
             for k in clips[0]}  # fmt: skip
    noise = clip_noise(batch["clip_index"], latent_shape(bundle, batch), 0)
    for steps in (1, 2, 4):
        video = student_sampler(bundle, steps)(batch, noise)
        assert video.shape == (2, 9, 3, 32, 32) and torch.isfinite(video).all()
    # the exported student is the trained one (not the teacher): its prediction moved
    teacher = load_bundle(model)
    cond = bundle.animator.conditions(batch)
    t = bundle.schedule.network_timestep(torch.tensor([999]))
    with torch.no_grad():
        assert (bundle.animator(noise, t, cond) - teacher.animator(noise, t, cond)).abs().max() > 1e-6


@pytest.mark.slow
def test_k2_and_baseline_experiments_train(wan_setup, tmp_path):
    model, pre = wan_setup
    for name, k in (("wan_animate_k2", 2), ("wan_animate_lcm", 1)):
        trainer, module = run(_train_cfg(model, pre, name, "trainer.max_steps=1"), tmp_path / name)
        assert trainer.global_step == 1 and module.segments.num_segments == k
        assert (module.student.aux_head is None) == (name == "wan_animate_lcm")


@pytest.mark.parametrize("student", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_the_export_runs_in_diffusers_wan_animate_pipeline_like_the_projects_sampler(student, wan_setup, tmp_path):
    """Interop: diffusers' own WanAnimatePipeline with the exported student (its transformer, or the base with the
    LoRA adapters loaded by diffusers' load_lora_weights) and a stock FlowMatchEulerDiscreteScheduler on the
    student's segment edges makes the video the project's K-step sampler makes from the same noise."""
    import numpy as np
    from PIL import Image

    from dancelcm.models.wan.bundle import student_pipeline
    from dancelcm.models.wan.inputs import WanAnimateEncoders
    from dancelcm.sampling import student_sampler

    model, pre = wan_setup
    run(_train_cfg(model, pre, "wan_animate_k4", f"method.student={student}", "trainer.max_steps=1"), tmp_path / "r")
    export = tmp_path / "r" / "export"
    rng = np.random.default_rng(0)
    frames = lambda n, s: [Image.fromarray(rng.integers(0, 255, (s, s, 3), dtype=np.uint8)) for _ in range(n)]  # noqa: E731
    reference, pose, face = frames(1, 32)[0], frames(9, 32), frames(9, 24)
    prompt = "a dancer in a red dress"
    enc = WanAnimateEncoders(model, max_sequence_length=16)
    batch = {k: v for k, v in enc.encode_clip(reference, pose, face, 32, 32).items()}
    pos, neg = enc.encode_prompt(prompt)
    batch |= {"prompt_embeds": pos, "negative_prompt_embeds": neg, "clip_index": torch.tensor([0])}
    noise = torch.randn(1, 16, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    bundle = load_bundle(export)
    pipe = student_pipeline(export)
    pipe.set_progress_bar_config(disable=True)
    for steps in (4, 2, 1):
        ours = student_sampler(bundle, steps)(batch, noise)  # (1, F, 3, H, W) in [-1, 1]
        theirs = pipe(image=reference, pose_video=pose, face_video=face, prompt=prompt, height=32, width=32,
                      segment_frame_length=9, num_inference_steps=steps, guidance_scale=1.0, latents=noise.clone(),
                      max_sequence_length=16, output_type="pt").frames  # fmt: skip  # (1, F, 3, H, W) in [0, 1]
        torch.testing.assert_close(theirs, (ours + 1) / 2, rtol=0, atol=1e-4, msg=f"{steps} steps")
    with pytest.raises(ValueError, match="samples in \\['1', '2', '3', '4'\\] steps"):
        pipe.scheduler.set_timesteps(8)


def test_animate_makes_a_long_wan_video_in_segments_conditioned_on_the_previous_ones_last_frames(
    wan_setup, tmp_path, monkeypatch
):
    """#27 for a model that reads previous frames: `animate` on a Wan student runs diffusers' WanAnimatePipeline
    segment by segment, each segment conditioned on the last `overlap` frames the previous one generated (1 or 5);
    the first segment is the one-segment video of the same seed; bad window / overlap / guidance stop by name; the
    command on the teacher folder (CFG) writes the whole video."""
    import numpy as np
    from diffusers import WanAnimatePipeline
    from PIL import Image

    from dancelcm import animate
    from dancelcm.cli import CONF
    from dancelcm.data.reader import FrameSource
    from dancelcm.models.wan.bundle import animate_pipeline

    model, pre = wan_setup
    run(_train_cfg(model, pre, "wan_animate_k4", "method.student=full", "trainer.max_steps=1"), tmp_path / "r")
    export = tmp_path / "r" / "export"
    rng = np.random.default_rng(0)
    pose = rng.integers(0, 255, (17, 32, 32, 3), dtype=np.uint8)
    face = rng.integers(0, 255, (17, 24, 24, 3), dtype=np.uint8)
    reference = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    seen = []
    original = WanAnimatePipeline.prepare_prev_segment_cond_latents

    def spy(self, prev_segment_cond_video=None, *args, **kwargs):
        seen.append(None if prev_segment_cond_video is None else prev_segment_cond_video.clone())
        return original(self, prev_segment_cond_video, *args, **kwargs)

    monkeypatch.setattr(WanAnimatePipeline, "prepare_prev_segment_cond_latents", spy)
    pipe, meta = animate_pipeline(export)
    # the export records its training clips (from the precompute manifest); size / window / prompt default to them
    assert meta["kind"] == "student"
    assert {k: meta["data"][k] for k in ("resolution", "num_frames", "prompt")} == {
        "resolution": [32, 32], "num_frames": 9, "prompt": "a person is dancing"}  # fmt: skip
    long = animate.animate_wan(pipe, meta, reference, pose, face, steps=2, overlap=1)
    assert long.shape == (17, 32, 32, 3) and len(seen) == 2 and seen[0] is None
    # segment 2 reads the last frame segment 1 generated (the pipeline's [-1, 1] decode; the output is uint8)
    last = ((seen[1][0, :, 0].clamp(-1, 1) + 1) / 2 * 255).permute(1, 2, 0)
    torch.testing.assert_close(last, torch.from_numpy(long[8]).float(), rtol=0, atol=1.0)
    seen.clear()
    short = animate.animate_wan(pipe, meta, reference, pose[:9], face[:9], steps=2, overlap=1)
    np.testing.assert_array_equal(short, long[:9])
    assert seen == [None]
    seen.clear()
    five = animate.animate_wan(pipe, meta, reference, pose, face, steps=2, window=13, overlap=5)
    assert five.shape == long.shape and len(seen) == 2 and seen[1].shape[2] == 5  # 13 + 8 new frames
    for kwargs, match in [({"overlap": 2}, "overlap=2: Wan2.2-Animate conditions each segment on the last 1 or 5"),
                          ({"window": 8}, "window=8: a Wan segment is 4n \\+ 1 frames"),
                          ({"overlap": 5}, "window=9 with overlap=5: .* needs window >= 13"),
                          ({"guidance": 2.0}, "guidance=2.0: a distilled student samples without CFG"),
                          ({"steps": 5}, "steps=5: this student samples in \\['1', '2', '3', '4'\\]")]:  # fmt: skip
        with pytest.raises(animate.InputError, match=match):
            animate.animate_wan(pipe, meta, reference, pose, face, **kwargs)

    # the command on the teacher folder: its own flow scheduler, 2 steps, CFG 2, a blank face (warned)
    from hydra import compose, initialize_config_dir

    frames = tmp_path / "pose"
    frames.mkdir()
    for i, f in enumerate(pose):
        Image.fromarray(f).save(frames / f"{i:04d}.png")
    reference.save(tmp_path / "ref.png")
    out = tmp_path / "out" / "wan.mp4"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("animate", [f"model_dir={model}", f"reference={tmp_path / 'ref.png'}", f"pose={frames}",
                                  f"out={out}", "steps=2", "guidance=2.0", "window=9", "size=[32,32]",
                                  "prompt=a dancer"])  # fmt: skip
    animate.run(cfg)
    written = FrameSource(out)
    assert len(written) == 17 and written.get([0]).shape == (1, 32, 96, 3)  # reference | pose | result
    for extra, match in [("face_box=[0,0,8,8]", "face_box="), ("size=[30,32]", "size=\\[30, 32\\]: give \\[H, W\\]"),
                         ("dtype=int8", "dtype=int8: choose")]:  # fmt: skip
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            bad = compose("animate", [f"model_dir={model}", f"reference={tmp_path / 'ref.png'}", f"pose={frames}",
                                      extra])  # fmt: skip
        with pytest.raises(animate.InputError, match=match):
            animate.run(bad)


def test_a_bf16_base_trains_fp32_adapters_and_aux_head_under_bf16_mixed(wan_setup, tmp_path):
    """wan_animate_k4's memory plan: the frozen 14B base in bf16 (method.frozen_dtype), adapters, aux head and EMA
    in fp32; bf16 frozen weights without bf16 autocast stop at once, naming both options."""
    from dancelcm.cli import ConfigError

    model, pre = wan_setup
    cfg = _train_cfg(model, pre, "wan_animate_k4", "trainer.precision=bf16-mixed", "method.frozen_dtype=bfloat16",
                     "method.gradient_checkpointing=true")  # fmt: skip
    trainer, module = run(cfg, tmp_path / "bf16")
    assert trainer.global_step == 2 and module.checkpointed_blocks == -1  # diffusers' own checkpointing
    params = list(module.student.parameters())
    assert {p.dtype for p in params if p.requires_grad} == {torch.float32}
    # the base in bf16, but for the small modules diffusers keeps in fp32 (time embedding, norms' tables)
    frozen = [p for p in params if not p.requires_grad]
    bf16 = sum(p.numel() for p in frozen if p.dtype == torch.bfloat16)
    assert bf16 > 0.9 * sum(p.numel() for p in frozen)
    assert all(s.dtype == torch.float32 for s in module.target.shadows)
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics["train/loss"])))
    with pytest.raises(ConfigError, match="method.frozen_dtype=bfloat16 with trainer.precision=32-true"):
        run(_train_cfg(model, pre, "wan_animate_k4", "method.frozen_dtype=bfloat16"), tmp_path / "fp32")


@pytest.mark.slow
def test_the_whole_path_through_the_real_commands(synthetic_root, tmp_path):
    """As a user runs it: a tiny model folder -> precompute -> train +experiment=wan_animate_k4 -> evaluate the
    export against the teacher on the held-out clips (ground truth re-read from the source dataset)."""
    from tests.conftest import run_module

    model, pre, runs = tmp_path / "Wan2.2-Animate-tiny", tmp_path / "pre", tmp_path / "runs"
    run_module(["dancelcm.models.wan.tiny", f"out={model}"], cwd=tmp_path)
    run_module(["dancelcm.precompute", f"model.path={model}", f"data.root={synthetic_root}", f"out={pre}",
                "data.num_frames=9", "data.resolution=32", "splits.train=1", "splits.test=1",
                "max_sequence_length=16"], cwd=tmp_path)  # fmt: skip
    run_module(["dancelcm.train", "+experiment=wan_animate_k4", "trainer=default", f"method.teacher={model}",
                f"data.root={pre}", f"paths.output_dir={runs}", "data.batch_size=2", "data.num_workers=0",
                "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
                "method.validation.teacher_steps=2", "method.frozen_dtype=float32", "method.lora.rank=4",
                "method.lora.alpha=4", "callbacks.sample_videos.mp4=false"], cwd=tmp_path)  # fmt: skip
    export = runs / "wan_animate_k4" / "export"
    assert (export / "pytorch_lora_weights.safetensors").is_file()
    assert list((runs / "wan_animate_k4" / "samples").glob("*.png"))  # validation samples vs the real frames
    out = tmp_path / "eval"
    run_module(["dancelcm.evaluate", f"teacher={model}", f"students={{k4:'{export}'}}", "data=precomputed",
                f"data.root={pre}", "data.num_workers=0", "teacher_steps=[2]", "guidance=[1.0]", "vs_teacher.steps=2",
                "vs_teacher.guidance=1.0", "student_steps=[1,2,4]", "feature_net=null", "reference_baseline=false",
                "max_clips=2", f"out_dir={out}"], cwd=tmp_path)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"k4 1-step", "k4 4-step"} <= set(metrics) and metrics["k4 4-step"]["clips"] == 2


@pytest.mark.slow  # the real CLI with 2 gloo ranks in subprocesses
@pytest.mark.parametrize("student", ["lora", "full"])
def test_two_fsdp_ranks_distil_wan_like_one_process_with_the_global_batch(student, wan_setup, tmp_path):
    """trainer=fsdp on the Wan transformer (each of its blocks and face adapters a unit, the LoRA base shared and
    sharded, the aux head its own unit): 2 ranks x batch 1 log the per-step losses of 1 process x batch 2, and the
    export gathered from the shards loads and equals the single process's."""
    from tests.conftest import run_module
    from tests.integration.test_resume import _losses

    model, pre = wan_setup
    common = ["dancelcm.train", "+experiment=wan_animate_k4", f"method.teacher={model}", f"data.root={pre}",
              "data.num_workers=0", "trainer.max_steps=3", "trainer.limit_val_batches=0",
              "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1", "callbacks.sample_videos=null",
              "callbacks.export_every_n_steps=100", "method.warmup_steps=0", "method.lr=1e-3",
              f"method.student={student}", "method.frozen_dtype=float32", "method.lora.rank=4", "method.lora.alpha=4",
              "trainer.precision=32-true"]  # fmt: skip
    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    run_module([*common, "trainer=default", "data.batch_size=2", f"hydra.run.dir={single}"], cwd=tmp_path)
    run_module([*common, "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=1",
                f"hydra.run.dir={sharded}"], cwd=tmp_path)  # fmt: skip
    a, b = _losses(single), _losses(sharded)
    assert sorted(a) == sorted(b) == [0, 1, 2]
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-4, abs=1e-6), (s, a[s], b[s])
    one, two = load_bundle(single / "export").animator, load_bundle(sharded / "export").animator
    x = {k: v for k, v in one.state_dict().items() if v.is_floating_point()}
    y = two.state_dict()
    assert x.keys() <= y.keys()
    moved = max((x[k] - y[k]).abs().max().item() for k in x)
    assert moved < 1e-3, moved  # gathered from the shards: the same trained network


@pytest.mark.parametrize("student", ["lora", pytest.param("full", marks=pytest.mark.slow)])
def test_the_papers_extra_face_path_starts_as_the_teacher_trains_and_round_trips(student, wan_setup, tmp_path):
    """method.face.enabled=true on Wan: the reference face's VAE latents through a zero-initialised cross-attention
    after Wan's face-adapter blocks. At init the student (and the LoRA teacher view, path off) equal the teacher; the
    path trains; the EMA target's copy reads its own path; the export loads back with the trained path."""
    from dancelcm.data.precomputed import PrecomputedClips

    model, pre = wan_setup
    cfg = _train_cfg(model, pre, "wan_animate_k4", f"method.student={student}", "method.face.enabled=true",
                     "method.face.dropout=0.5")  # fmt: skip
    module = build_module(cfg)
    animator = module.student.animator
    assert animator.condition_names[-1] == "face_vae" and animator.face_path is not None
    assert module.condition_dropout == {"face_vae": 0.5}
    item = PrecomputedClips(pre, "train")[0]
    batch = {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in item.items()}
    cond = module.conditions(batch, [])
    x_t, t = torch.randn_like(batch["latents"]), module.schedule.network_timestep(torch.tensor([500]))
    with torch.no_grad():
        torch.testing.assert_close(module.student(x_t, t, cond), module.teacher(x_t, t, cond), rtol=0, atol=1e-5)
    if student == "full":  # the EMA target's deep copy runs its own face path, not the student's
        hook = next(iter(module.target.shadow.animator.backbone.blocks[0]._forward_hooks.values()))
        assert hook.func.__self__ is module.target.shadow.animator.face_path
    trainer, module = run(cfg, tmp_path / "run")
    path = module.student.animator.face_path
    assert path.attn[0].to_out.weight.abs().max() > 0  # trained away from its zero start
    bundle = load_bundle(tmp_path / "run" / "export")
    assert bundle.animator.face_path is not None
    trained = {k: v for k, v in module.student.animator.face_path.state_dict().items()}
    for k, v in bundle.animator.face_path.state_dict().items():
        torch.testing.assert_close(v.float(), trained[k].float(), msg=k)
    with torch.no_grad():
        off = bundle.animator(x_t, t, {**cond, "drop": {}})
        with bundle.animator.without_conditions(["face_vae"]):
            without = bundle.animator(x_t, t, {**cond, "drop": {}})
    assert (off - without).abs().max() > 0  # the trained path changes the prediction


def test_the_lora_teacher_view_ignores_a_trained_face_path_and_the_aux_tap_keeps_nothing_else(wan_setup):
    """Review fixes: with the face path's output no longer zero, the LoRA student's teacher view is still exactly the
    frozen teacher (the path is switched off there); and only the student's own aux-head forward leaves activations
    in the hooks (not the teacher's or the target's)."""
    from dancelcm.data.precomputed import PrecomputedClips

    model, pre = wan_setup
    module = build_module(_train_cfg(model, pre, "wan_animate_k4", "method.student=lora", "method.face.enabled=true"))
    frozen = load_bundle(model).animator
    item = PrecomputedClips(pre, "train")[0]
    batch = {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in item.items()}
    cond = module.conditions(batch, [])
    x_t, t = torch.randn_like(batch["latents"]), module.schedule.network_timestep(torch.tensor([700]))
    with torch.no_grad():
        for attn in module.student.animator.face_path.attn:  # as if trained
            attn.to_out.weight.normal_(0, 0.5)
        student = module.student(x_t, t, cond)
        teacher = module.teacher(x_t, t, cond)
        assert module.student._tap.block_args is None  # the teacher's forward kept nothing
        reference = frozen(x_t, t, {k: v for k, v in cond.items() if k != "face_latents"})
    torch.testing.assert_close(teacher, reference, rtol=0, atol=1e-5)
    assert (student - teacher).abs().max() > 1e-3  # the path is on for the student


def test_the_aux_head_copies_a_face_adapter_that_follows_the_last_block(tmp_path):
    """When Wan's face adapter follows the last block too (inject_face_latents_blocks divides num_layers - 1), the
    auxiliary head copies it: still equal to the main output at initialisation."""
    from diffusers import WanAnimateTransformer3DModel

    from dancelcm.models.student import Student
    from dancelcm.models.wan.network import WanAnimator
    from dancelcm.models.wan.tiny import TINY_TRANSFORMER

    torch.manual_seed(0)
    net = WanAnimator(WanAnimateTransformer3DModel(**{**TINY_TRANSFORMER, "inject_face_latents_blocks": 1}))
    student = Student(net, aux_head=True)
    assert student.aux_head.face_adapter is not None
    b = lambda *s: torch.randn(1, *s)  # noqa: E731
    cond = {"reference_latents": b(20, 3, 4, 4), "image_embeds": b(257, 16), "pose_latents": b(16, 2, 4, 4),
            "face_pixel_values": b(3, 5, 32, 32).clamp(-1, 1), "prompt_embeds": b(16, 32),
            "negative_prompt_embeds": b(16, 32), "drop": {}}  # fmt: skip
    student.return_aux = True
    with torch.no_grad():
        out, aux = student(b(16, 3, 4, 4), torch.tensor([500.0]), cond)
    torch.testing.assert_close(aux, out, rtol=0, atol=1e-5)


def test_diffusers_pipeline_refuses_a_student_with_the_reference_face_path(tmp_path):
    """The paper's reference-face path is the project's addition to Wan's transformer: diffusers' pipeline would run
    the student without it, so student_pipeline (and animate) stop, naming method.face.enabled."""
    from dancelcm.models.wan.bundle import student_pipeline

    (tmp_path / "bundle.json").write_text(json.dumps({"kind": "student", "family": "wan_animate"}))
    (tmp_path / "animator_config.json").write_text(json.dumps({"face": {"dim": 16}}))
    with pytest.raises(ValueError, match="reference-face path \\(method.face.enabled\\)"):
        student_pipeline(tmp_path)
