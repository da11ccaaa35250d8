"""``python -m dancelcm.data.prepare``: synthetic dancers exported as raw sources (UBC-style mp4s, TikTok-style
frame folders) with OpenPose JSON keypoints go back into the layout, match the originals, and load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dancelcm.data import layout
from dancelcm.data.prepare import BODY25_TO_18, PrepareConfig, PrepareError, prepare
from dancelcm.data.reader import FrameSource, read_faces, read_frames, read_keypoints
from tests.conftest import run_module


def _openpose_json(folder: Path, body: np.ndarray, face: np.ndarray, body25: bool) -> None:
    """Write per-frame OpenPose files: BODY_25 (mid-hip and feet zero) or BODY_18, 70 face points."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(body)):
        b = body[i]
        if body25:
            b25 = np.zeros((25, 3), np.float32)
            b25[list(BODY25_TO_18)] = b
            b = b25
        f70 = np.concatenate([face[i], np.zeros((2, 3), np.float32)])
        decoy = {"pose_keypoints_2d": (b * [1, 1, 0.1]).reshape(-1).tolist()}  # a faint second person
        person = {"pose_keypoints_2d": b.reshape(-1).tolist(), "face_keypoints_2d": f70.reshape(-1).tolist()}
        (folder / f"frame_{i:05d}_keypoints.json").write_text(json.dumps({"people": [decoy, person]}))


@pytest.fixture(scope="module")
def raw_sources(synthetic_root, tmp_path_factory):
    """The session's synthetic dancers as a UBC-style mp4 tree, a TikTok-style frames tree, and keypoints."""
    base = tmp_path_factory.mktemp("raw")
    ubc, tiktok, kp = base / "ubc", base / "tiktok", base / "keypoints"
    for split in ("train", "test"):
        for i, vid in enumerate(layout.read_split(synthetic_root, split)):
            d = layout.video_dir(synthetic_root, vid)
            (ubc / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(d / "video.mp4", ubc / split / f"{vid}.mp4")
            frames_dir = tiktok / vid / "images"
            frames_dir.mkdir(parents=True)
            for j, frame in enumerate(read_frames(d)):
                Image.fromarray(frame).save(frames_dir / f"{j:04d}.png")
            body, face = read_keypoints(d, len(read_frames(d)))
            _openpose_json(kp / vid, body, face, body25=i % 2 == 0)
    return {"ubc": ubc, "tiktok": tiktok, "keypoints": kp}


def _cfg(source, out, keypoints, **kw) -> PrepareConfig:
    return PrepareConfig(
        source=str(source), out=str(out), resolution=32, num_workers=1, pose={"keypoints_dir": str(keypoints)}, **kw
    )


def test_ubc_mp4s_round_trip_to_the_layout(raw_sources, synthetic_root, tmp_path):
    out = tmp_path / "prepared"
    summary = prepare(_cfg(raw_sources["ubc"], out, raw_sources["keypoints"]))
    assert summary["format"] == "ubc" and summary["failed"] == 0 and summary["prepared"] == 10
    # UBC keeps its own split
    assert layout.read_split(out, "test") == layout.read_split(synthetic_root, "test")
    for vid in layout.read_split(synthetic_root, "test"):
        src, dst = layout.video_dir(synthetic_root, vid), layout.video_dir(out, vid)
        n = len(read_frames(src))
        body, face = read_keypoints(dst, n)
        body0, face0 = read_keypoints(src, n)
        np.testing.assert_allclose(body, body0, atol=1e-4)  # BODY_25 and BODY_18 files, decoy ignored
        np.testing.assert_allclose(face, face0, atol=1e-4)
        # the pose maps are rendered like the synthetic ones (same keypoints, same renderer)
        pose, pose0 = read_frames(dst, "pose").astype(float), read_frames(src, "pose").astype(float)
        assert np.abs(pose - pose0).mean() < 4.0
        assert np.abs(read_frames(dst).astype(float) - read_frames(src).astype(float)).mean() < 4.0
        boxes, boxes0 = read_faces(dst, n), read_faces(src, n)
        assert [b is None for b in boxes] == [b is None for b in boxes0]


def test_tiktok_frame_folders_upscaled_and_loaded_by_the_datamodule(raw_sources, synthetic_root, tmp_path):
    from dancelcm.data.datamodule import PoseVideoDataModule

    out = tmp_path / "prepared"
    cfg = _cfg(raw_sources["tiktok"], out, raw_sources["keypoints"], test_fraction=0.2, source_fps=12)
    cfg.resolution = 64
    summary = prepare(cfg)
    assert summary["format"] == "tiktok" and summary["prepared"] == 10
    assert summary["splits"] == {"train": 8, "test": 2}
    vid = layout.read_split(out, "train")[0]
    body, _ = read_keypoints(layout.video_dir(out, vid), 24)
    body0, _ = read_keypoints(layout.video_dir(synthetic_root, vid), 24)
    vis = body0[..., 2] > 0.3
    np.testing.assert_allclose(body[vis][:, :2], body0[vis][:, :2] * 2, atol=1e-3)  # 32 -> 64 px
    dm = PoseVideoDataModule(root=str(out), num_frames=4, resolution=64, batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 4, 3, 64, 64) and batch["pose"].shape == (2, 4, 3, 64, 64)
    # resumable: a second run prepares nothing
    again = prepare(cfg)
    assert again["prepared"] == 0 and again["done_before"] == 10


def test_bad_videos_are_reported_with_reasons_and_the_rest_prepared(raw_sources, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(raw_sources["ubc"], src)
    victim = sorted((src / "train").glob("*.mp4"))[0]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated
    kp = tmp_path / "kp"
    shutil.copytree(raw_sources["keypoints"], kp)
    no_kp = sorted((src / "train").glob("*.mp4"))[1].stem
    shutil.rmtree(kp / no_kp)
    summary = prepare(_cfg(src, tmp_path / "out", kp))
    assert summary["failed"] == 2 and summary["prepared"] == 8
    errors = {f["id"]: f["error"] for f in summary["failures"]}
    assert victim.stem in errors and "video" in errors[victim.stem]
    assert no_kp in errors and "keypoint folder" in errors[no_kp]
    assert victim.stem not in layout.read_split(tmp_path / "out", "train")
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert report["failed"] == 2


@pytest.mark.slow  # the prepare CLI in a subprocess
def test_options_are_checked_with_the_fix_named(raw_sources, tmp_path):
    with pytest.raises(PrepareError, match="pose.keypoints_dir"):
        prepare(PrepareConfig(source=str(raw_sources["ubc"]), out=str(tmp_path / "o")))
    with pytest.raises(PrepareError, match="source="):
        prepare(_cfg(tmp_path / "missing", tmp_path / "o", raw_sources["keypoints"]))
    with pytest.raises(PrepareError, match="no videos found"):
        (tmp_path / "empty").mkdir()
        prepare(_cfg(tmp_path / "empty", tmp_path / "o", raw_sources["keypoints"]))
    proc = run_module(
        ["dancelcm.data.prepare", f"source={raw_sources['ubc']}", f"out={tmp_path / 'o'}"], tmp_path, ok=False
    )
    assert proc.returncode != 0 and "pose.keypoints_dir" in proc.stderr


@pytest.mark.slow  # the prepare CLI in a subprocess
def test_cli_prepares_a_folder_of_videos(raw_sources, tmp_path):
    proc = run_module(
        [
            "dancelcm.data.prepare",
            f"source={raw_sources['ubc'] / 'train'}",
            f"out={tmp_path / 'o'}",
            f"pose.keypoints_dir={raw_sources['keypoints']}",
            "resolution=32",
            "num_workers=2",
        ],
        tmp_path,
    )
    assert "8 prepared" in proc.stdout + proc.stderr
    assert (
        len(FrameSource(layout.video_dir(tmp_path / "o", layout.read_split(tmp_path / "o", "train")[0]) / "video.mp4"))
        == 24
    )


def test_a_48px_preparation_loads(raw_sources, tmp_path):
    """decord cannot decode h264 48 px wide; the reader falls back to PyAV, so the prepared set loads whole."""
    from dancelcm.data.datamodule import PoseVideoDataModule

    out = tmp_path / "p48"
    cfg = _cfg(raw_sources["ubc"], out, raw_sources["keypoints"])
    cfg.resolution = 48
    assert prepare(cfg)["prepared"] == 10
    dm = PoseVideoDataModule(root=str(out), num_frames=4, resolution=48, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert dm.skipped == [] and len(dm.train_dataset.entries) == 8
    assert next(iter(dm.train_dataloader()))["video"].shape == (2, 4, 3, 48, 48)


def test_an_odd_resolution_stops_before_any_video_is_read(raw_sources, tmp_path):
    for resolution in (33, [32, 47]):
        cfg = _cfg(raw_sources["ubc"], tmp_path / "o", raw_sources["keypoints"])
        cfg.resolution = resolution
        with pytest.raises(PrepareError, match=r"h264 stores only even frame sizes, got \d+x\d+"):
            prepare(cfg)
        assert not (tmp_path / "o").exists()


@pytest.mark.slow  # the prepare CLI in a subprocess
def test_cli_fails_when_videos_fail_and_prints_what_the_counts_hide(raw_sources, tmp_path):
    """Two source videos: one truncated (fails), one whose keypoints show nobody, both smaller than the output.
    The command exits non-zero naming max_failed_fraction, and the summary says that the test split is empty,
    that a video has no person and that one was upsampled."""
    src, kp = tmp_path / "src", tmp_path / "kp"
    src.mkdir()
    good, bad = sorted((raw_sources["ubc"] / "train").glob("*.mp4"))[:2]
    shutil.copy(good, src / good.name)
    (src / bad.name).write_bytes(bad.read_bytes()[:300])
    (kp / good.stem).mkdir(parents=True)
    for i in range(24):
        (kp / good.stem / f"{i:04d}_keypoints.json").write_text(json.dumps({"people": []}))
    args = ["dancelcm.data.prepare", f"source={src}", f"out={tmp_path / 'o'}", f"pose.keypoints_dir={kp}"]
    proc = run_module([*args, "resolution=64", "num_workers=1"], tmp_path, ok=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "1 of 2 videos failed" in proc.stderr and "max_failed_fraction=0 allows" in proc.stderr
    assert "split 'test' is empty" in text
    assert "1 of 1 prepared videos have no frame with a person (no body keypoint above pose.conf_threshold=0.3)" in (
        text
    )
    assert "1 of 1 prepared videos were upsampled: the source is smaller than resolution=64x64" in text
    assert f"{good.stem} is 32x32" in text


def test_max_failed_fraction_allows_a_share_of_failures(tmp_path):
    from dancelcm.data.prepare import check_failures

    cfg = PrepareConfig(source=str(tmp_path), out=str(tmp_path / "o"), max_failed_fraction=0.25)
    check_failures({"failed": 2, "videos": 8}, cfg)  # 25%: allowed
    with pytest.raises(PrepareError, match="3 of 8 videos failed"):
        check_failures({"failed": 3, "videos": 8}, cfg)
    with pytest.raises(PrepareError, match="max_failed_fraction=1.5"):
        PrepareConfig(source=str(tmp_path), out=str(tmp_path / "o"), max_failed_fraction=1.5).validate()
