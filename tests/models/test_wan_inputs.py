"""The Wan2.2-Animate adapter builds the transformer's inputs exactly as ``WanAnimatePipeline`` does.

A tiny random repository (``dancelcm.models.wan.tiny``: the real classes, a few layers) is written with
``save_pretrained`` and loaded back from the folder; the pipeline samples one step with its transformer wrapped to
record what it is handed; the adapter, given the same reference image, pose video, face video and prompt, must
produce the same tensors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dancelcm.cli import MissingPathError
from dancelcm.data.dataset import face_video_from_clip
from dancelcm.models.wan.inputs import WanAnimateEncoders, check_model_folder, to_pil
from dancelcm.models.wan.tiny import save_tiny_wan_animate

F, H, W = 9, 64, 48


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory):
    return save_tiny_wan_animate(tmp_path_factory.mktemp("wan") / "Wan2.2-Animate-tiny")


def _frames(n, h, w, seed):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for _ in range(n)]


def test_adapter_inputs_equal_what_the_pipeline_hands_its_transformer(tiny_wan):
    from diffusers import WanAnimatePipeline

    pipe = WanAnimatePipeline.from_pretrained(tiny_wan, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    seen = {}
    forward = pipe.transformer.forward

    def recording(*args, **kwargs):
        seen.setdefault("kwargs", kwargs)
        return forward(*args, **kwargs)

    pipe.transformer.forward = recording
    reference, pose, face = _frames(1, H, W, 0)[0], _frames(F, H, W, 1), _frames(F, 40, 40, 2)
    prompt = "a dancer in a red dress"
    pipe(image=reference, pose_video=pose, face_video=face, prompt=prompt, height=H, width=W,
         segment_frame_length=F, num_inference_steps=1, max_sequence_length=16, output_type="latent")  # fmt: skip
    got = seen["kwargs"]
    enc = WanAnimateEncoders(tiny_wan, max_sequence_length=16)
    ours = enc.encode_clip(reference, pose, face, H, W)
    prompt_embeds, _ = enc.encode_prompt(prompt)
    C = enc.latent_channels
    assert got["hidden_states"].shape == (1, 2 * C + 4, 1 + (F - 1) // 4 + 1, H // 8, W // 8)
    expected = {
        "reference_latents": got["hidden_states"][:, C:],
        "pose_latents": got["pose_hidden_states"],
        "face_pixel_values": got["face_pixel_values"],
        "image_embeds": got["encoder_hidden_states_image"],
    }
    for name, tensor in expected.items():
        assert ours[name].shape == tensor.shape, name
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=1e-6, msg=name)
    torch.testing.assert_close(prompt_embeds, got["encoder_hidden_states"], rtol=0, atol=1e-6)
    # what the mask channels say: the reference frame is given, the first segment has no previous frames
    mask = ours["reference_latents"][:, :4]
    assert mask[:, :, 0].eq(1).all() and mask[:, :, 1:].eq(0).all()


def test_training_latents_put_the_reference_in_the_slot_the_pipeline_drops(tiny_wan):
    enc = WanAnimateEncoders(tiny_wan, max_sequence_length=16)
    reference, pose, face, video = (
        _frames(1, H, W, 0)[0],
        _frames(F, H, W, 1),
        _frames(F, 32, 32, 2),
        _frames(F, H, W, 3),
    )
    ours = enc.encode_clip(reference, pose, face, H, W, video=video)
    x0 = ours["latents"]
    assert x0.shape == (1, enc.latent_channels, 1 + (F - 1) // 4 + 1, H // 8, W // 8)
    torch.testing.assert_close(x0[:, :, :1], ours["reference_latents"][:, 4:, :1])
    # the video's latents: the VAE's latent mode of the frames, standardised with the VAE's mean and std
    vae = enc.pipe.vae
    pixels = torch.stack([torch.from_numpy(np.asarray(f)).permute(2, 0, 1).float() / 127.5 - 1 for f in video], 1)
    mode = vae.encode(pixels[None]).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(x0[:, :, 1:], (mode - mean) / std, rtol=0, atol=1e-5)
    decoded = enc.decode(x0)
    assert decoded.shape == (1, 3, F, H, W) and torch.isfinite(decoded).all()


def test_a_clip_of_the_wrong_length_or_size_is_refused_with_the_fix(tiny_wan):
    enc = WanAnimateEncoders(tiny_wan, max_sequence_length=16)
    reference = _frames(1, H, W, 0)[0]
    with pytest.raises(ValueError, match="4k \\+ 1 frames.*data.num_frames"):
        enc.encode_clip(reference, _frames(8, H, W, 1), _frames(8, 32, 32, 2), H, W)
    with pytest.raises(ValueError, match="multiples of 16"):
        enc.encode_clip(reference, _frames(F, H, W, 1), _frames(F, 32, 32, 2), 72, W)


def test_a_missing_or_incomplete_model_folder_names_the_option_and_the_layout(tmp_path, tiny_wan):
    with pytest.raises(MissingPathError, match="model.path=.*no such folder.*Wan2.2-Animate-14B-Diffusers"):
        check_model_folder(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model_index.json").write_text("{}")
    with pytest.raises(MissingPathError, match="(?s)missing transformer, vae.*image_encoder/  CLIPVisionModel"):
        check_model_folder(partial)
    assert check_model_folder(tiny_wan) == tiny_wan


def test_project_frames_round_trip_to_the_uint8_images_they_came_from_and_faces_are_cropped_per_frame():
    u8 = torch.randint(0, 256, (3, 3, 16, 24), dtype=torch.uint8)
    frames = u8.float() / 127.5 - 1  # the datamodule's conversion
    assert all(np.array_equal(np.asarray(img), f.permute(1, 2, 0).numpy()) for img, f in zip(to_pil(frames), u8))
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0, 0, 0, 0], [0.5, 0.5, 0.75, 0.75]])
    faces = face_video_from_clip(frames, boxes, torch.tensor([True, False, True]), 8)
    assert faces.shape == (3, 3, 8, 8) and faces[1].eq(-1).all() and not faces[0].eq(-1).all()


def test_both_halves_of_the_pipelines_cfg_are_the_networks_inputs_with_and_without_face_and_text(tiny_wan):
    """With guidance_scale > 1 the pipeline calls its transformer twice: conditional, then with the negative prompt
    and an all -1 face video. WanAnimator.inputs gives both, from the adapter's inputs, dropping "face" and "text"."""
    from diffusers import WanAnimatePipeline

    from dancelcm.models.wan.network import WanAnimator

    pipe = WanAnimatePipeline.from_pretrained(tiny_wan, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    forward = pipe.transformer.forward
    pipe.transformer.forward = lambda *a, **k: (calls.append(k), forward(*a, **k))[1]
    reference, pose, face = _frames(1, H, W, 0)[0], _frames(F, H, W, 1), _frames(F, 40, 40, 2)
    noise = torch.randn(1, 16, 1 + (F - 1) // 4 + 1, H // 8, W // 8, generator=torch.Generator().manual_seed(0))
    pipe(image=reference, pose_video=pose, face_video=face, prompt="a dancer", negative_prompt="blurry", height=H,
         width=W, segment_frame_length=F, num_inference_steps=1, guidance_scale=2.0, latents=noise.clone(),
         max_sequence_length=16, output_type="latent")  # fmt: skip
    assert len(calls) == 2
    enc = WanAnimateEncoders(tiny_wan, max_sequence_length=16)
    pos, neg = enc.encode_prompt("a dancer", "blurry")
    cond = {**enc.encode_clip(reference, pose, face, H, W), "prompt_embeds": pos, "negative_prompt_embeds": neg}
    net = WanAnimator(pipe.transformer)
    t = calls[0]["timestep"]
    both = {"drop": {"face": torch.tensor([True]), "text": torch.tensor([True])}}
    for got, drop in ((calls[0], {}), (calls[1], both)):
        ours = net.inputs(noise, t, {**cond, **drop})
        for k in ("hidden_states", "timestep", "encoder_hidden_states", "encoder_hidden_states_image",
                  "pose_hidden_states", "face_pixel_values"):  # fmt: skip
            torch.testing.assert_close(ours[k], got[k], rtol=0, atol=1e-6, msg=k)
    assert calls[1]["face_pixel_values"].eq(-1).all()
    with pytest.raises(ValueError, match="drops only \\['face', 'text'\\]"):  # CFG would silently do nothing
        net.inputs(noise, t, {**cond, "drop": {"pose": torch.tensor([True])}})
