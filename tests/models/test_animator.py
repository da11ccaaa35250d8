from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet3DConditionModel
from hydra import compose, initialize_config_dir

from dancelcm.lit.builders import animator_kwargs, plain
from dancelcm.models.animator import Animator
from dancelcm.models.autoencoder import PatchAutoencoder, build_autoencoder
from dancelcm.models.ema import EMA

CONF = Path(__file__).resolve().parents[2] / "conf"
TINY_BACKBONE = dict(
    block_out_channels=[32, 64],
    down_block_types=["CrossAttnDownBlock3D", "DownBlock3D"],
    up_block_types=["UpBlock3D", "CrossAttnUpBlock3D"],
    layers_per_block=1,
    attention_head_dim=4,
    norm_num_groups=16,
)


def tiny_animator(**kw) -> Animator:
    args = dict(
        latent_channels=12,
        latent_size=(4, 4),
        factor=2,
        cross_attention_dim=32,
        backbone=TINY_BACKBONE,
        pose={"channels": [8], "out_channels": 8},
        reference={"concat_channels": 8},
    )
    args.update(kw)
    torch.manual_seed(0)
    return Animator(**args)


def tiny_inputs(b=2, f=3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 12, f, 4, 4, generator=g)
    cond = {
        "pose": torch.rand(b, f, 3, 8, 8, generator=g) * 2 - 1,
        "reference_latent": torch.randn(b, 12, 4, 4, generator=g),
        "drop": {},
    }
    return x, torch.tensor([10, 900][:b]), cond


def test_forward_shape_and_conditions_matter():
    m = tiny_animator().eval()
    x, t, cond = tiny_inputs()
    out = m(x, t, cond)
    assert out.shape == x.shape and torch.isfinite(out).all()
    for name in ("pose", "reference"):
        dropped = m(x, t, {**cond, "drop": {name: torch.tensor([True, False])}})
        assert not torch.allclose(dropped[0], out[0]) and torch.allclose(dropped[1], out[1], atol=1e-6), name


def test_removing_an_embedder_removes_its_channels():
    with_pose, without = tiny_animator(), tiny_animator(pose=None)
    assert with_pose.backbone.config.in_channels == without.backbone.config.in_channels + 8
    assert without.condition_names == ["reference"]


def test_save_and_load_round_trip(tmp_path):
    m = tiny_animator().eval()
    x, t, cond = tiny_inputs()
    m.save_pretrained(tmp_path / "anim")
    m2 = Animator.from_pretrained(tmp_path / "anim").eval()
    torch.testing.assert_close(m2(x, t, cond), m(x, t, cond), rtol=0, atol=0)
    # the backbone is a plain diffusers folder: diffusers alone loads it with the same weights
    from diffusers import UNet3DConditionModel

    unet = UNet3DConditionModel.from_pretrained(tmp_path / "anim" / "unet")
    for k, v in unet.state_dict().items():
        assert torch.equal(v, m.backbone.state_dict()[k]), k


def test_backbone_from_a_local_diffusers_folder_keeps_its_weights(tmp_path):
    torch.manual_seed(0)
    unet = UNet3DConditionModel(in_channels=12, out_channels=12, cross_attention_dim=32, **TINY_BACKBONE)
    unet.save_pretrained(tmp_path / "unet")
    m = tiny_animator(backbone={"pretrained": str(tmp_path / "unet")})
    w_old, w_new = unet.conv_in.weight, m.backbone.conv_in.weight
    assert w_new.shape[1] == 12 + 8 + 8  # widened for the pose and reference features
    torch.testing.assert_close(w_new[:, :12], w_old)
    assert w_new[:, 12:].abs().sum() == 0  # zero-initialised: the pretrained UNet's behaviour is kept
    m.save_pretrained(tmp_path / "anim")  # the export does not need the original folder any more
    assert Animator.from_pretrained(tmp_path / "anim").backbone.config.in_channels == 28


def test_gradient_checkpointing_gives_the_same_gradients():
    x, t, cond = tiny_inputs()
    grads = []
    for ckpt in (False, True):
        m = tiny_animator(gradient_checkpointing=ckpt)
        m(x, t, cond).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_xformers_without_the_extra_is_a_clear_error():
    try:
        import xformers  # noqa: F401

        pytest.skip("xformers is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match=r"\.\[gpu\]"):
        tiny_animator(attention="xformers")


def test_full_size_config_instantiates_without_weights():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=animator_full", "data=tiktok"])
    kw = animator_kwargs(plain(cfg.model), plain(cfg.data)["resolution"])
    assert kw["latent_size"] == [96, 64] and kw["latent_channels"] == 4
    with torch.device("meta"):
        m = Animator(**kw)
    n = sum(p.numel() for p in m.parameters())
    assert 1.0e9 < n < 2.0e9  # the ModelScope / VGen UNet3D scale
    assert m.backbone.config.cross_attention_dim == 1024


def test_patch_autoencoder_is_exact():
    ae = PatchAutoencoder(4)
    v = torch.rand(2, 3, 3, 16, 8) * 2 - 1
    z = ae.encode(v)
    assert z.shape == (2, 48, 3, 4, 2)
    torch.testing.assert_close(ae.decode(z), v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="divisible"):
        ae.encode(torch.zeros(1, 1, 3, 10, 8))


def tiny_vae(latent_channels: int) -> AutoencoderKL:
    """A two-level (factor 2) random-weight AutoencoderKL."""
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[8, 16],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=latent_channels,
        norm_num_groups=4,
    )


def test_diffusers_vae_loads_from_a_local_folder(tmp_path):
    vae = tiny_vae(latent_channels=4)
    vae.save_pretrained(tmp_path / "vae")
    ae = build_autoencoder("diffusers", pretrained=str(tmp_path / "vae"))
    assert ae.factor == 2 and ae.latent_channels == 4
    v = torch.rand(1, 2, 3, 16, 16) * 2 - 1
    z = ae.encode(v)
    assert z.shape == (1, 4, 2, 8, 8)
    assert ae.decode(z).shape == v.shape
    with pytest.raises(ValueError, match="autoencoder.pretrained"):
        build_autoencoder("diffusers")


def test_a_bundle_with_a_learned_vae_carries_a_copy_and_loads_from_anywhere(tmp_path, monkeypatch):
    from dancelcm.lit.builders import latent_geometry
    from dancelcm.models.bundle import load_bundle, save_bundle

    vae = tiny_vae(latent_channels=12)
    vae.save_pretrained(tmp_path / "src_vae")
    model_cfg = {"autoencoder": {"kind": "diffusers", "pretrained": str(tmp_path / "src_vae")}, "latent_channels": 4}
    # the folder's own geometry wins over the yaml's latent_channels
    assert latent_geometry(model_cfg, 8) == (12, 2, (4, 4))
    ae = build_autoencoder(**model_cfg["autoencoder"])
    meta = {"kind": "teacher", "scheduler": {"num_train_timesteps": 1000}, "autoencoder": model_cfg["autoencoder"]}
    d = save_bundle(tmp_path / "bundle", tiny_animator(), {**meta, "data": {}}, autoencoder=ae)
    assert (d / "vae" / "config.json").is_file()
    (tmp_path / "src_vae" / "config.json").unlink()  # the source folder is gone: the bundle's copy is used
    monkeypatch.chdir(tmp_path.parent)
    b = load_bundle(d)
    v = torch.rand(1, 2, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(b.autoencoder.encode(v), ae.encode(v))


def test_half_copy_of_a_bundle_loads_in_fp32_and_keeps_tiny_layers_exact(tmp_path):
    from dancelcm.models.bundle import half_copy, load_bundle, save_bundle
    from dancelcm.tools.half import run

    model = tiny_animator()
    with torch.no_grad():  # a near-zero layer (as a zero-initialised output conv after a few steps)
        model.backbone.conv_out.weight.mul_(1e-6)
    meta = {
        "kind": "teacher",
        "scheduler": {"num_train_timesteps": 1000},
        "autoencoder": {"kind": "patch", "factor": 2},
    }
    src = save_bundle(tmp_path / "fp32", model, {**meta, "data": {}})
    kept = half_copy(src, tmp_path / "fp16")
    assert "backbone" not in str(kept) and "conv_out.weight" in kept["unet/diffusion_pytorch_model.safetensors"]
    assert not (tmp_path / "fp16.tmp").exists()
    size = {d: sum(f.stat().st_size for f in (tmp_path / d).rglob("*.safetensors")) for d in ("fp32", "fp16")}
    assert size["fp16"] < 0.6 * size["fp32"]
    a, b = load_bundle(src).animator, load_bundle(tmp_path / "fp16").animator
    assert all(p.dtype == torch.float32 for p in b.parameters())
    torch.testing.assert_close(b.backbone.conv_out.weight, a.backbone.conv_out.weight, rtol=0, atol=0)
    x, t, cond = tiny_inputs()
    with torch.no_grad():
        ya, yb = a(x, t, cond), b(x, t, cond)
    assert (ya - yb).abs().max() < 1e-2 * ya.abs().max()
    from omegaconf import OmegaConf

    run(OmegaConf.create({"src": str(src), "dst": str(tmp_path / "cli"), "max_rel_error": 1e-3}))  # the command
    assert (tmp_path / "cli" / "bundle.json").is_file()
    with pytest.raises(FileNotFoundError, match="bundle.json missing"):
        half_copy(tmp_path / "nowhere", tmp_path / "x")


def test_ema_moves_toward_the_online_weights_in_fp32():
    online = torch.nn.Linear(2, 2)
    ema = EMA(online, decay=0.9)
    before = ema.shadow.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    ema.update(online)
    torch.testing.assert_close(ema.shadow.weight, before + 0.1)
    assert ema.shadow.weight.dtype == torch.float32 and not ema.shadow.weight.requires_grad


def test_ema_warmup_follows_early_weights_then_reaches_its_decay():
    online = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(online, decay=0.999, warmup=True)
    with torch.no_grad():
        online.weight.fill_(1.0)
        ema.shadow.weight.fill_(0.0)
    ema.update(online)  # n = 0: decay min(0.999, 1/10) = 0.1
    torch.testing.assert_close(ema.shadow.weight, torch.tensor([[0.9]]))
    for _ in range(20000):
        ema.num_updates += 1
    ema.shadow.weight.fill_(0.0)
    ema.update(online)  # n = 20001: (1 + n) / (10 + n) > 0.999, so the decay is 0.999
    torch.testing.assert_close(ema.shadow.weight, torch.tensor([[0.001]]))


def test_face_injection_starts_identical_to_the_teacher_and_round_trips(tmp_path):
    teacher = tiny_animator().eval()
    student = tiny_animator(face={"face_latent_size": 2}).eval()
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all(("face" in k) or ("_ip" in k) for k in missing)
    x, t, cond = tiny_inputs()
    face = {"face_latent": torch.randn(2, 12, 2, 2), "face_valid": torch.tensor([True, False])}
    torch.testing.assert_close(student(x, t, {**cond, **face}), teacher(x, t, cond), rtol=0, atol=0)
    # once the decoupled value projections move, the face changes the output (only where it is valid)
    for name, p in student.named_parameters():
        if "to_v_ip" in name:
            torch.nn.init.normal_(p, std=0.5)
    out = student(x, t, {**cond, **face})
    other = student(x, t, {**cond, **face, "face_latent": torch.randn(2, 12, 2, 2)})
    assert not torch.allclose(out[0], other[0]) and torch.allclose(out[1], other[1])
    student.save_pretrained(tmp_path / "s")
    torch.testing.assert_close(Animator.from_pretrained(tmp_path / "s").eval()(x, t, {**cond, **face}), out)


def _tiny_sd_and_adapter(tmp_path):
    from diffusers import MotionAdapter, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=4,
        in_channels=12,
        out_channels=12,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=16,
    )
    adapter = MotionAdapter(
        block_out_channels=(32, 64),
        motion_layers_per_block=1,
        motion_num_attention_heads=2,
        motion_norm_num_groups=16,
        motion_max_seq_length=16,
    )
    unet.save_pretrained(tmp_path / "sd" / "unet")
    adapter.save_pretrained(tmp_path / "adapter")
    return unet, tmp_path / "sd" / "unet", tmp_path / "adapter"


def test_animatediff_backbone_from_local_sd_unet_and_motion_adapter(tmp_path):
    unet2d, unet_dir, adapter_dir = _tiny_sd_and_adapter(tmp_path)
    backbone = {"kind": "unet_motion", "pretrained": str(unet_dir), "motion_adapter": str(adapter_dir)}
    m = tiny_animator(backbone=backbone).eval()
    assert type(m.backbone).__name__ == "UNetMotionModel"
    # the SD weights arrive intact; the pose and reference channels start at zero
    w = m.backbone.conv_in.weight
    torch.testing.assert_close(w[:, :12], unet2d.conv_in.weight, rtol=0, atol=0)
    assert w.shape[1] == 12 + 8 + 8 and w[:, 12:].abs().sum() == 0
    x, t, cond = tiny_inputs()
    out = m(x, t, cond)  # context repeated per frame inside
    assert out.shape == x.shape and torch.isfinite(out).all()
    # the export rebuilds the whole architecture without the SD / adapter folders
    m.save_pretrained(tmp_path / "anim")
    import shutil

    shutil.rmtree(tmp_path / "sd")
    shutil.rmtree(tmp_path / "adapter")
    torch.testing.assert_close(Animator.from_pretrained(tmp_path / "anim").eval()(x, t, cond), out, rtol=0, atol=0)


def test_animatediff_needs_its_adapter_and_existing_folders(tmp_path):
    _, unet_dir, _ = _tiny_sd_and_adapter(tmp_path)
    with pytest.raises(ValueError, match="motion_adapter=DIR"):
        tiny_animator(backbone={"kind": "unet_motion", "pretrained": str(unet_dir)})
    with pytest.raises(FileNotFoundError, match="backbone.pretrained="):
        tiny_animator(backbone={"kind": "unet_motion", "pretrained": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="choose one of"):
        tiny_animator(backbone={"kind": "dit"})


def test_full_size_animatediff_config_instantiates_without_weights():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["model=animator_animatediff", "data=tiktok", "model.animator.backbone.pretrained=null"],
        )
    kw = animator_kwargs(plain(cfg.model), plain(cfg.data)["resolution"])
    with torch.device("meta"):
        m = Animator(**kw)
    n = sum(p.numel() for p in m.parameters())
    assert 1.1e9 < n < 1.6e9, n  # SD 1.5 UNet (0.86 B) + motion modules
    assert type(m.backbone).__name__ == "UNetMotionModel" and m.backbone.config.cross_attention_dim == 768


SCHED = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "rescale_betas_zero_snr": True,
}


def test_input_skip_adds_the_wiener_gain_times_its_filter_of_x_t(tmp_path):
    from dancelcm.diffusion import NoiseSchedule

    plain_net = tiny_animator().eval()
    skip_net = tiny_animator(input_skip={"init": "identity", "scheduler": SCHED, "detail_std": 0.3}).eval()
    missing, unexpected = skip_net.load_state_dict(plain_net.state_dict(), strict=False)
    assert sorted(missing) == ["input_skip.proj.bias", "input_skip.proj.weight"] and not unexpected
    x, t, cond = tiny_inputs()
    a, s = NoiseSchedule.from_scheduler_config(SCHED, prediction_type="sample").coefficients(t)
    gain = 0.09 * a / (0.09 * a**2 + s**2)  # ~1/a at t = 10, ~0 at the top
    assert gain[0] > 0.9 and gain[1] < 0.01
    with torch.no_grad():
        torch.testing.assert_close(
            skip_net(x, t, cond), plain_net(x, t, cond) + gain.view(-1, 1, 1, 1, 1) * x, rtol=1e-5, atol=1e-5
        )
    top = torch.tensor([999, 999])
    with torch.no_grad():  # a_T = 0 (zero terminal SNR): the path is shut, no division by zero
        torch.testing.assert_close(skip_net(x, top, cond), plain_net(x, top, cond), rtol=0, atol=0)
    fresh = tiny_animator(input_skip={"init": "identity", "scheduler": SCHED})
    fresh(x, t, cond).pow(2).mean().backward()
    assert fresh.input_skip.proj.weight.grad.abs().sum() > 0  # the filter learns
    skip_net.save_pretrained(tmp_path / "anim")
    again = Animator.from_pretrained(tmp_path / "anim").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x, t, cond), skip_net(x, t, cond), rtol=0, atol=0)
    with pytest.raises(ValueError, match="scheduler"):
        tiny_animator(input_skip={"init": "identity"})


def test_teacher_init_from_a_bundle_without_the_skip_adds_it_at_zero(tmp_path):
    from dancelcm.lit.builders import build_module
    from dancelcm.models.bundle import save_bundle

    def module(*overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return build_module(compose(config_name="train", overrides=["model=animator_micro", *overrides]))

    old = module("model.animator.input_skip=null")
    assert old.animator.input_skip is None
    hp = old.hparams
    meta = {
        "kind": "teacher",
        "scheduler": dict(hp.scheduler),
        "autoencoder": dict(hp.autoencoder),
        "data": dict(hp.data),
    }
    save_bundle(tmp_path / "old", old.animator, meta)
    new = module(f"method.init_from={tmp_path / 'old'}")
    assert new.animator.input_skip is not None
    torch.testing.assert_close(new.animator.input_skip.proj.weight, module().animator.input_skip.proj.weight)
    for k, v in old.animator.state_dict().items():
        assert torch.equal(new.animator.state_dict()[k], v), k
    # the skip's channel map trains with lr x method.skip_lr_scale; every other weight at method.lr
    opt = new.configure_optimizers()["optimizer"]
    assert [g["initial_lr"] for g in opt.param_groups] == [new.cfg.lr, new.cfg.lr * new.cfg.skip_lr_scale]
    assert opt.param_groups[1]["params"] == list(new.animator.input_skip.proj.parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(new.animator.parameters()))
    with pytest.raises(ValueError, match="method.init_from=.*does not fit"):
        module(f"method.init_from={tmp_path / 'old'}", "model.animator.pose.out_channels=4")


def test_highpass_skip_is_frame_minus_its_blur_through_the_patch_autoencoder():
    from dancelcm.models.output_stages import InputSkip

    ae = PatchAutoencoder(factor=4, scale=2.0)
    skip = InputSkip(48, SCHED, init="highpass", factor=4, blur_sigma=1.0)
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 3, 12, 16, generator=g) * 2 - 1  # (B, F, 3, H, W), borders included
    z = ae.encode(video)
    px = video.flatten(0, 1).double()
    r = 3
    k = torch.exp(-0.5 * torch.arange(-r, r + 1, dtype=torch.float64) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1).expand(3, 1, 1, -1)
    blur = torch.nn.functional.conv2d(px, k, padding=(0, r), groups=3)
    blur = torch.nn.functional.conv2d(blur, k.transpose(-1, -2), padding=(r, 0), groups=3)
    expected = ae.encode((px - blur).float().reshape(video.shape))
    with torch.no_grad():
        torch.testing.assert_close(skip.proj(z), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="input_skip.init=highpass needs the patch autoencoder"):
        InputSkip(16, SCHED, init="highpass", factor=4)


def test_pixel_refiner_starts_as_identity_learns_and_round_trips(tmp_path):
    from dancelcm.models.output_stages import PixelRefiner

    plain_net = tiny_animator().eval()
    ref_net = tiny_animator(pixel_refiner={"scheduler": SCHED, "width": 8, "layers": 1}).eval()
    missing, unexpected = ref_net.load_state_dict(plain_net.state_dict(), strict=False)
    assert missing and all(k.startswith("pixel_refiner.") for k in missing) and not unexpected
    x, t, cond = tiny_inputs()
    with torch.no_grad():  # zero-initialised output conv: a network gains the refiner without change
        torch.testing.assert_close(ref_net(x, t, cond), plain_net(x, t, cond), rtol=0, atol=0)
    ref_net.train()
    ref_net(x, t, cond).pow(2).mean().backward()
    assert ref_net.pixel_refiner.conv_out.weight.grad.abs().sum() > 0
    # once trained (here: perturbed) it changes the output, and only within the patch layout's frames
    with torch.no_grad():
        ref_net.pixel_refiner.conv_out.bias.fill_(0.5)
        delta = ref_net.eval()(x, t, cond) - plain_net(x, t, cond)
    ae = PatchAutoencoder(factor=2, scale=1.0)
    frames = ae.decode(delta)  # (B, F, 3, H, W): a constant 0.5 per pixel is the bias in every latent channel
    torch.testing.assert_close(frames, torch.full_like(frames, 0.5))
    ref_net.save_pretrained(tmp_path / "anim")
    again = Animator.from_pretrained(tmp_path / "anim").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x, t, cond), ref_net(x, t, cond), rtol=0, atol=0)
    with pytest.raises(ValueError, match="pixel_refiner works on the patch autoencoder"):
        PixelRefiner(16, 4, SCHED)
    with pytest.raises(ValueError, match="scheduler"):
        PixelRefiner(12, 2)


def test_pixel_refiner_sees_the_conditions_at_pixel_resolution_and_honours_their_drop():
    plain = tiny_animator(pixel_refiner={"scheduler": SCHED, "width": 8, "layers": 1}).eval()
    net = tiny_animator(
        pixel_refiner={"scheduler": SCHED, "width": 8, "layers": 1, "conditions": ["pose", "reference"]}
    )
    assert net.pixel_refiner.conditions == ["reference", "pose"]  # a fixed channel order, whatever the config's
    assert net.pixel_refiner.conv_in.in_channels == 6 + 6
    x, t, cond = tiny_inputs()
    net.eval()
    with torch.no_grad():
        # only the refiner's first conv differs: with the condition weights at zero it is the plain refiner
        state = plain.state_dict()
        w = state["pixel_refiner.conv_in.weight"]
        state["pixel_refiner.conv_in.weight"] = torch.cat([w, torch.zeros(w.shape[0], 6, *w.shape[2:])], dim=1)
        net.load_state_dict(state)
        torch.testing.assert_close(net(x, t, cond), plain(x, t, cond), rtol=0, atol=0)
        # trained (here: perturbed), each condition moves the output of its own samples only when kept
        net.pixel_refiner.conv_in.weight.normal_()
        net.pixel_refiner.conv_out.weight.normal_()
        out = net(x, t, cond)
        for name, key in (("pose", "pose"), ("reference", "reference_latent")):
            changed = {**cond, key: -cond[key]}
            assert not torch.allclose(net(x, t, changed), out), name
            # dropped in sample 0 (UNet embedders and refiner alike): what the condition holds there no longer matters
            drop = {name: torch.tensor([True, False])}
            a, b_ = net(x, t, {**cond, "drop": drop}), net(x, t, {**changed, "drop": drop})
            torch.testing.assert_close(a[0], b_[0], rtol=0, atol=1e-6)
            assert not torch.allclose(a[1], b_[1]), name
    with pytest.raises(ValueError, match="cannot be given at pixel resolution"):
        tiny_animator(pixel_refiner={"scheduler": SCHED, "conditions": ["face"]})
    with pytest.raises(ValueError, match="not conditions of this animator"):
        tiny_animator(reference=None, pixel_refiner={"scheduler": SCHED, "conditions": ["reference"]})


def test_aux_head_reads_the_whole_output_path_and_equals_the_main_head_at_init():
    """The auxiliary head's x0 goes through every stage after the output block (input skip, pixel refiner),
    so at initialisation it equals the main prediction. Before the fix it skipped both stages."""
    from dancelcm.models.student import Student

    torch.manual_seed(0)
    net = tiny_animator(
        input_skip={"init": "identity", "scheduler": SCHED, "detail_std": 0.3},
        pixel_refiner={"scheduler": SCHED, "width": 8, "layers": 1, "conditions": ["pose"]},
    )
    with torch.no_grad():  # a trained refiner (a fresh one's output conv is zero, so it would hide a skipped stage)
        net.pixel_refiner.conv_out.weight.normal_(std=0.5)
        net.pixel_refiner.conv_out.bias.fill_(0.3)
    student = Student(net, aux_head=True).eval()
    student.return_aux = True
    x, t, cond = tiny_inputs()
    with torch.no_grad():
        out, aux = student(x, t, cond)
    torch.testing.assert_close(aux, out, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        stages_only = net.output_stages(torch.zeros_like(x), x, t, cond)
    assert stages_only.abs().mean() > 0.05  # the stages do contribute: skipping them would be seen
    student.return_aux = False
    with torch.no_grad():
        torch.testing.assert_close(student(x, t, cond), out, rtol=0, atol=0)
    # the head's own copy of the output block trains apart from the main one
    student.train().return_aux = True
    _, aux = student(x, t, cond)
    aux.pow(2).mean().backward()
    assert student.aux_head.conv.weight.grad.abs().sum() > 0
    assert net.backbone.conv_out.weight.grad is None
