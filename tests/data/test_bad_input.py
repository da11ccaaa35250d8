"""Every kind of bad input gets a message naming the file; with on_error=skip it is counted and left out."""

import json
import logging
import re
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from dancelcm.data import layout
from dancelcm.data.datamodule import PoseVideoDataModule
from dancelcm.data.dataset import ClipSpec, TripletDataset, scan_videos
from dancelcm.data.reader import DataError, read_frames

CLIP = ClipSpec(4, 2)


def _victim(root):
    vid = layout.read_split(root, "train")[0]
    return vid, layout.video_dir(root, vid)


def _expect_skip_and_raise(root, vid, fragment, mode="header"):
    report = scan_videos(root, "train", CLIP, mode=mode, on_error="skip")
    assert vid not in [e.video_id for e in report.entries]
    assert len(report.skipped) == 1
    path, problem = report.skipped[0]
    assert vid in path and fragment in problem, (path, problem)
    assert "1 skipped" in report.summary() and vid in report.summary()
    with pytest.raises(DataError, match=re.escape(fragment)) as info:
        scan_videos(root, "train", CLIP, mode=mode, on_error="raise")
    assert vid in str(info.value)


def test_corrupt_video(fresh_copy):
    vid, d = _victim(fresh_copy)
    (d / "video.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    _expect_skip_and_raise(fresh_copy, vid, "cannot be opened as a video")


def test_truncated_video(fresh_copy):
    vid, d = _victim(fresh_copy)
    data = (d / "video.mp4").read_bytes()
    (d / "video.mp4").write_bytes(data[: len(data) // 2])
    _expect_skip_and_raise(fresh_copy, vid, "corrupt or truncated")


def test_zero_byte_file(fresh_copy):
    vid, d = _victim(fresh_copy)
    (d / "pose.mp4").write_bytes(b"")
    _expect_skip_and_raise(fresh_copy, vid, "empty (0 bytes)")


def test_zero_frames(fresh_copy):
    vid, d = _victim(fresh_copy)
    (d / "video.mp4").unlink()
    (d / "frames").mkdir()  # a frames folder with no images
    _expect_skip_and_raise(fresh_copy, vid, "has no images")


def test_pose_video_length_mismatch(fresh_copy):
    vid, d = _victim(fresh_copy)
    pose = read_frames(d, "pose")
    layout.write_video(d / "pose.mp4", pose[:-3], fps=12)
    _expect_skip_and_raise(fresh_copy, vid, "pose/video length mismatch: 21 pose frames, 24 video frames")


def test_video_shorter_than_clip(fresh_copy):
    vid, d = _victim(fresh_copy)
    for stem in ("video", "pose"):
        layout.write_video(d / f"{stem}.mp4", read_frames(d, stem)[:5], fps=12)
    for name in ("keypoints.npz", "faces.json", "ground_truth.npz"):
        (d / name).unlink()
    _expect_skip_and_raise(fresh_copy, vid, "fewer than one clip needs")


def test_unreadable_frames_folder(fresh_copy):
    vid, d = _victim(fresh_copy)
    frames = read_frames(d, "video")
    (d / "frames").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(d / "frames" / f"{i:06d}.png")
    (d / "video.mp4").unlink()
    (d / "frames" / "000020.png").write_bytes(b"not a png")
    # The header scan opens the first frame only; the full scan decodes everything and catches it.
    assert vid in [e.video_id for e in scan_videos(fresh_copy, "train", CLIP, mode="header").entries]
    _expect_skip_and_raise(fresh_copy, vid, "image cannot be read", mode="full")
    (d / "frames" / "000000.png").write_bytes(b"")
    _expect_skip_and_raise(fresh_copy, vid, "image cannot be read", mode="header")


def test_malformed_side_files(fresh_copy):
    vid, d = _victim(fresh_copy)
    (d / "faces.json").write_text(json.dumps({"boxes": [None] * 3}))
    _expect_skip_and_raise(fresh_copy, vid, "has 3 face boxes for a video of 24 frames")
    (d / "faces.json").write_text("{nope")
    _expect_skip_and_raise(fresh_copy, vid, "expected {")
    (d / "faces.json").unlink()
    np.savez(d / "keypoints.npz", body=np.zeros((7, 18, 3)), face=np.zeros((7, 68, 3)))
    _expect_skip_and_raise(fresh_copy, vid, "keypoints for 7 frames")


def test_missing_face_boxes_mark_the_face_absent(fresh_copy):
    vid, d = _victim(fresh_copy)
    (d / "faces.json").unlink()
    entries = scan_videos(fresh_copy, "train", CLIP).entries
    e = next(x for x in entries if x.video_id == vid)
    s = TripletDataset([e], CLIP, resolution=32, face_size=16)[0]
    assert not s["face_valid"] and not s["face_boxes_valid"].any()
    assert torch.count_nonzero(s["face"]) == 0 and torch.count_nonzero(s["face_boxes"]) == 0


def _corrupt_stream_middle(d):
    """Overwrite bytes inside the compressed stream: the file opens and its first frames decode, later
    ones fail. Only a full scan or the loader itself can notice."""
    path = d / "video.mp4"
    data = bytearray(path.read_bytes())
    at = int(len(data) * 0.7)
    data[at : at + 300] = np.random.default_rng(0).bytes(300)
    path.write_bytes(bytes(data))


def test_decode_failure_while_loading_is_skipped_and_counted(fresh_copy, caplog):
    """A file that breaks after the scan (e.g. on a flaky network filesystem) is skipped while loading."""
    vid, d = _victim(fresh_copy)
    entries = scan_videos(fresh_copy, "train", CLIP, mode="header").entries
    bad = [e.video_id for e in entries].index(vid)
    (d / "video.mp4").write_bytes(np.random.default_rng(1).bytes(5000))
    ds = TripletDataset(entries, CLIP, resolution=32, train=False)
    with caplog.at_level(logging.WARNING):
        s = ds[bad]
    assert s["video_id"] != vid and int(ds.runtime_failures) == 1
    assert vid in caplog.text
    assert ds[bad]["video_id"] == s["video_id"]  # remembered as bad: no second attempt, no second count
    assert int(ds.runtime_failures) == 1
    strict = TripletDataset(entries, CLIP, resolution=32, train=False, on_error="raise")
    with pytest.raises(DataError, match="cannot be opened"):
        strict[bad]


def test_full_scan_catches_corruption_inside_the_stream(fresh_copy):
    vid, d = _victim(fresh_copy)
    _corrupt_stream_middle(d)
    _expect_skip_and_raise(fresh_copy, vid, "cannot be decoded", mode="full")


class _Probe(L.LightningModule):
    """The smallest model that consumes batches: predicts the clip from its pose maps."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv3d(3, 3, 1)
        self.seen: set[str] = set()

    def training_step(self, batch, _):
        self.seen.update(batch["video_id"])
        pred = self.net(batch["pose"].transpose(1, 2)).transpose(1, 2)
        loss = torch.nn.functional.mse_loss(pred, batch["video"])
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_one_corrupt_file_among_ten_trains_on_the_nine(synthetic_root, tmp_path):
    root = tmp_path / "ten"
    shutil.copytree(synthetic_root, root)
    all_ids = layout.read_split(root, "train") + layout.read_split(root, "test")
    layout.write_split(root, "train", all_ids)  # ten training videos
    bad = all_ids[3]
    (layout.video_dir(root, bad) / "video.mp4").write_bytes(b"\x00garbage" * 100)
    dm = PoseVideoDataModule(str(root), num_frames=4, stride=2, resolution=32, batch_size=3, num_workers=0)
    model = _Probe()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert model.seen == set(all_ids) - {bad}
    assert len(dm.skipped) == 1 and bad in dm.skipped[0][0]
    assert "9 of 10 videos usable, 1 skipped" in dm.reports["train"].summary()


def test_pose_and_video_frame_sizes_must_match(fresh_copy):
    vid, d = _victim(fresh_copy)
    pose = read_frames(d, "pose")
    layout.write_video(d / "pose.mp4", pose.repeat(2, axis=1).repeat(2, axis=2), fps=12)  # 64 x 64
    _expect_skip_and_raise(fresh_copy, vid, "frame size mismatch: pose.mp4 is 64x64, video.mp4 is 32x32")


def test_meta_fps_must_match_the_video(fresh_copy):
    vid, d = _victim(fresh_copy)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["fps"] == 12
    (d / "meta.json").write_text(json.dumps({**meta, "fps": 11.6}))  # a container's rounding: accepted
    assert vid in [e.video_id for e in scan_videos(fresh_copy, "train", CLIP).entries]
    (d / "meta.json").write_text(json.dumps({**meta, "fps": 25}))
    _expect_skip_and_raise(fresh_copy, vid, "plays at 12 fps but")
    with pytest.raises(DataError, match="meta.json says fps=25"):
        scan_videos(fresh_copy, "train", CLIP, on_error="raise")


def test_a_split_listing_a_video_twice_is_refused(fresh_copy):
    ids = layout.read_split(fresh_copy, "train")
    layout.write_split(fresh_copy, "train", [*ids, ids[2], ids[0], ids[2]])
    with pytest.raises(ValueError, match=r"train\.txt: video ids listed more than once") as info:
        scan_videos(fresh_copy, "train", CLIP)
    assert f"{ids[0]}, {ids[2]};" in str(info.value)
    dm = PoseVideoDataModule(str(fresh_copy), num_frames=4, stride=2, resolution=32, num_workers=0)
    with pytest.raises(ValueError, match=re.escape(ids[2])):
        dm.setup("fit")


def test_videos_without_keypoints_are_counted_and_named_at_setup(fresh_copy, caplog):
    vid, d = _victim(fresh_copy)
    (d / "keypoints.npz").unlink()
    dm = PoseVideoDataModule(str(fresh_copy), num_frames=4, stride=2, resolution=32, num_workers=0)
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    assert "1 of 8 usable videos have no keypoints.npz (optional): their keypoints and face_keypoints are all " in (
        caplog.text
    )
    assert caplog.text.count(vid) == 1 and len(dm.train_dataset.entries) == 8  # loaded, not skipped
    i = [e.video_id for e in dm.train_dataset.entries].index(vid)
    s = dm.train_dataset[i]
    assert s["video_id"] == vid and torch.count_nonzero(s["keypoints"]) == 0
    assert torch.count_nonzero(s["face_keypoints"]) == 0


def test_frames_smaller_than_the_resolution_stop_setup(synthetic_root, caplog):
    def dm(resolution, **kw):
        return PoseVideoDataModule(str(synthetic_root), num_frames=4, resolution=resolution, num_workers=0, **kw)

    with pytest.raises(DataError, match=re.escape("data.resolution=[64, 48] (64x48, H x W) is larger")) as info:
        dm([64, 48]).setup("fit")
    for part in ("8 of 8 videos of split 'train' (32x32;", "at most [32,32]", "data.allow_upsample=true"):
        assert part in str(info.value)
    with caplog.at_level(logging.WARNING):
        up = dm(64, allow_upsample=True)
        up.setup("fit")
    assert "would be upsampled (data.allow_upsample=true)" in caplog.text
    assert up.train_dataset[0]["video"].shape == (4, 3, 64, 64)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        down = dm(16)
        down.setup("fit")  # downsampling: nothing to say
    assert caplog.text == "" and down.train_dataset[0]["video"].shape == (4, 3, 16, 16)
