"""``python -m dancelcm.precompute``: Wan2.2-Animate's encoders run once over a dataset (tiny random model).

The stored clips, served by ``PrecomputedClips``, are exactly what the adapter (which equals the pipeline, see
tests/models/test_wan_inputs.py) makes of the same clip; a rerun skips finished clips; a changed size stops."""

from __future__ import annotations

import json

import pytest
import torch

from dancelcm.cli import ConfigError, MissingPathError, PathExistsError
from dancelcm.data.dataset import face_video_from_clip
from dancelcm.data.precomputed import PrecomputedClips, PrecomputedDataModule
from dancelcm.models.wan.inputs import WanAnimateEncoders, to_pil
from dancelcm.models.wan.tiny import save_tiny_wan_animate
from dancelcm.precompute import run
from tests.conftest import run_module


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory):
    return save_tiny_wan_animate(tmp_path_factory.mktemp("wan") / "Wan2.2-Animate-tiny")


def _cfg(root, model, out, *extra):
    from hydra import compose, initialize_config_dir

    from dancelcm.cli import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "precompute",
            [f"model.path={model}", f"data.root={root}", f"out={out}", "data.num_frames=9", "data.num_workers=0",
             "data.resolution=32", "splits.train=1", "splits.test=1", "max_sequence_length=16", *extra],
        )  # fmt: skip


def test_precomputed_clips_equal_the_adapter_on_the_same_clip_and_a_rerun_skips_them(
    synthetic_root, tiny_wan, tmp_path
):
    out = tmp_path / "pre"
    cfg = _cfg(synthetic_root, tiny_wan, out)
    first = run(cfg)
    assert first["written"] == 10 and first["failed"] == [] and first["splits"] == {"train": 8, "test": 2}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_frames"] == 9 and manifest["motion_encoder_size"] == 32 and manifest["latent_channels"] == 16
    again = run(cfg)
    assert again["written"] == 0 and again["done_before"] == 10

    clips = PrecomputedClips(out, "test")
    item = clips[0]
    # the same clip through the adapter directly
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    sample = dm.dataset("test", train=False, clips_per_video=1).load(0)
    enc = WanAnimateEncoders(tiny_wan, max_sequence_length=16)
    face = face_video_from_clip(sample["video"], sample["face_boxes"], sample["face_boxes_valid"], 32)
    ref = enc.encode_clip(to_pil(sample["reference"][None])[0], to_pil(sample["pose"]), to_pil(face), 32, 32,
                          video=to_pil(sample["video"]))  # fmt: skip
    for k in ("latents", "reference_latents", "pose_latents", "image_embeds", "face_pixel_values"):
        torch.testing.assert_close(item[k], ref[k][0], rtol=0, atol=1e-6, msg=k)
    prompt, negative = enc.encode_prompt("a person is dancing", "")
    torch.testing.assert_close(item["prompt_embeds"], prompt[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(item["negative_prompt_embeds"], negative[0], rtol=0, atol=1e-6)
    assert torch.equal(item["frame_index"], sample["frame_index"]) and item["video_id"] == sample["video_id"]

    with_frames = PrecomputedClips(out, "test", frames=True)[0]  # ground truth for evaluation: the same window
    assert torch.equal(with_frames["video"], sample["video"]) and torch.equal(with_frames["latents"], item["latents"])

    dm = PrecomputedDataModule(str(out), batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["latents"].shape == (2, 16, 4, 4, 4) and batch["face_pixel_values"].shape == (2, 3, 9, 32, 32)


def test_precompute_refuses_mixing_sizes_and_wrong_clip_lengths_and_names_a_missing_model(
    synthetic_root, tiny_wan, tmp_path
):
    out = tmp_path / "pre"
    run(_cfg(synthetic_root, tiny_wan, out, "~splits.train"))
    with pytest.raises(PathExistsError, match="other num_frames"):
        run(_cfg(synthetic_root, tiny_wan, out, "~splits.train", "data.num_frames=5"))
    with pytest.raises(ConfigError, match="data.num_frames=8: Wan2.2-Animate clips have 4k \\+ 1 frames"):
        run(_cfg(synthetic_root, tiny_wan, tmp_path / "other", "data.num_frames=8"))
    with pytest.raises(MissingPathError, match="model.path=.*no such folder"):
        run(_cfg(synthetic_root, tmp_path / "no_model", tmp_path / "x"))
    with pytest.raises(MissingPathError, match="no precomputed clips of split 'train'"):
        PrecomputedClips(out, "train")


@pytest.mark.slow
def test_precompute_command_line(synthetic_root, tiny_wan, tmp_path):
    out = tmp_path / "pre"
    proc = run_module(["dancelcm.precompute", f"model.path={tiny_wan}", f"data.root={synthetic_root}", f"out={out}",
                       "data.num_frames=9", "data.resolution=32", "~splits.train", "max_sequence_length=16"],
                      cwd=tmp_path)  # fmt: skip
    assert "precomputed {'test': 4}: 4 clips written" in proc.stdout + proc.stderr
    proc = run_module(["dancelcm.precompute", "model.path=/nowhere", f"data.root={synthetic_root}", f"out={out}"],
                      cwd=tmp_path, ok=False)  # fmt: skip
    assert proc.returncode == 2 and "model.path=/nowhere: no such folder" in proc.stderr


def test_a_videos_own_prompt_is_encoded_for_its_clips(fresh_copy, tiny_wan, tmp_path):
    """The layout's optional videos/<id>/prompt.txt: that video's clips carry its prompt's features, the others the
    command's prompt; each distinct prompt is encoded once."""
    test_ids = (fresh_copy / "splits" / "test.txt").read_text().split()
    (fresh_copy / "videos" / test_ids[0] / "prompt.txt").write_text("a dancer in a red dress\n")
    out = tmp_path / "pre"
    run(_cfg(fresh_copy, tiny_wan, out, "~splits.train"))
    assert len(list((out / "prompts").glob("*.safetensors"))) == 2
    enc = WanAnimateEncoders(tiny_wan, max_sequence_length=16)
    own, _ = enc.encode_prompt("a dancer in a red dress")
    default, _ = enc.encode_prompt("a person is dancing")
    clips = PrecomputedClips(out, "test")
    for i in range(len(clips)):
        item = clips[i]
        expected = own if item["video_id"] == test_ids[0] else default
        torch.testing.assert_close(item["prompt_embeds"], expected[0], rtol=0, atol=1e-6)


def test_a_run_stopped_part_way_resumes_and_changed_settings_are_refused(
    synthetic_root, tiny_wan, tmp_path, monkeypatch
):
    """An error (or a kill) part-way through the first run leaves a manifest: the rerun keeps the finished clips. A
    rerun with another negative prompt or another number of clips per video stops (clips are named by their slot)."""
    out = tmp_path / "pre"
    original = WanAnimateEncoders.encode_clip
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory (simulated)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WanAnimateEncoders, "encode_clip", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        run(_cfg(synthetic_root, tiny_wan, out))
    monkeypatch.setattr(WanAnimateEncoders, "encode_clip", original)
    again = run(_cfg(synthetic_root, tiny_wan, out))
    assert again["done_before"] == 2 and again["written"] == 8
    with pytest.raises(PathExistsError, match="other negative_prompt"):
        run(_cfg(synthetic_root, tiny_wan, out, "negative_prompt=blurry"))
    with pytest.raises(PathExistsError, match="splits.train=2 \\(was 1\\)"):
        run(_cfg(synthetic_root, tiny_wan, out, "splits.train=2"))
