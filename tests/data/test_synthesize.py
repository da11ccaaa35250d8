import json
import subprocess
import sys

import numpy as np
import pytest

from dancelcm.data import layout
from dancelcm.data.reader import read_faces, read_frames, read_ground_truth, read_keypoints
from dancelcm.data.synthesize import SynthesisConfig, split_identities
from tests.conftest import make_dataset


def test_layout_is_complete(synthetic_root):
    meta = json.loads((synthetic_root / "dataset.json").read_text())
    assert meta["has_ground_truth"] and meta["height"] == 32
    train, test = layout.read_split(synthetic_root, "train"), layout.read_split(synthetic_root, "test")
    assert len(train) + len(test) == 10 and train and test
    for vid in train + test:
        d = layout.video_dir(synthetic_root, vid)
        video, pose = read_frames(d, "video"), read_frames(d, "pose")
        assert video.shape == pose.shape == (24, 32, 32, 3)
        assert pose.mean() < video.mean()  # skeleton on black
        body, face = read_keypoints(d, 24)
        assert body.shape == (24, 18, 3) and face.shape == (24, 68, 3)
        # keypoints lie inside the frame (with a margin for joints near the edge)
        assert np.all(body[..., :2] > -4) and np.all(body[..., :2] < 36)
        gt = read_ground_truth(d, 24)
        assert gt["figure_mask"].shape == (24, 32, 32)
        assert 0.03 < gt["figure_mask"].mean() < 0.5
        boxes = read_faces(d, 24)
        # The face box is absent exactly when the face landmarks are invisible; a turned frame never has one.
        for i, b in enumerate(boxes):
            assert (b is None) == (face[i, :, 2].sum() < 5)
            if gt["turned"][i]:
                assert b is None


def test_identities_are_disjoint_between_splits(synthetic_root):
    ident = {}
    for split in ("train", "test"):
        ident[split] = {
            json.loads((layout.video_dir(synthetic_root, v) / "meta.json").read_text())["identity"]
            for v in layout.read_split(synthetic_root, split)
        }
    assert ident["train"].isdisjoint(ident["test"])


def test_split_fractions():
    train, test = split_identities(SynthesisConfig(num_videos=200, videos_per_identity=2, test_fraction=0.2))
    assert (len(train), len(test)) == (160, 40)


def test_some_videos_turn_and_show_the_back(tmp_path):
    root = make_dataset(tmp_path / "d", num_videos=12, num_frames=48)
    turned = [read_ground_truth(layout.video_dir(root, f"dancer_{i:05d}"), 48)["turned"] for i in range(12)]
    frac = np.mean([t.mean() for t in turned])
    assert sum(t.any() for t in turned) >= 4, "too few videos with a turn"
    assert 0.05 < frac < 0.5
    # frame 0 always faces the camera (a usable reference frame exists in every video)
    assert not any(t[0] for t in turned)


def test_deterministic_per_seed(tmp_path):
    a = make_dataset(tmp_path / "a", num_videos=3, num_frames=8, seed=7)
    b = make_dataset(tmp_path / "b", num_videos=3, num_frames=8, seed=7, num_workers=2)
    c = make_dataset(tmp_path / "c", num_videos=3, num_frames=8, seed=8)
    for vid in ("dancer_00000", "dancer_00002"):
        fa, fb, fc = (read_frames(layout.video_dir(r, vid)) for r in (a, b, c))
        np.testing.assert_array_equal(fa, fb)
        da, db = (layout.video_dir(r, vid) for r in (a, b))
        assert (da / "video.mp4").read_bytes() == (db / "video.mp4").read_bytes()  # byte-identical files
        assert np.abs(fa.astype(int) - fc.astype(int)).mean() > 5
        ka, kb = (read_keypoints(layout.video_dir(r, vid), 8)[0] for r in (a, b))
        np.testing.assert_array_equal(ka, kb)


def test_refuses_to_overwrite(synthetic_root):
    with pytest.raises(FileExistsError, match="overwrite=true"):
        make_dataset(synthetic_root)


@pytest.mark.parametrize("bad", [{"resolution": 15}, {"num_videos": 0}, {"test_fraction": 1.0}, {"pix_fmt": "nv12"}])
def test_invalid_options_are_named(bad, tmp_path):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        make_dataset(tmp_path / "x", **bad)


@pytest.mark.slow  # the synthesize CLI in a subprocess
def test_cli_writes_dataset_and_preview(tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "dancelcm.data.synthesize",
        f"out_dir={out}",
        "num_videos=3",
        "num_frames=8",
        "resolution=32",
        "seed=1",
        "num_workers=1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 3 videos" in proc.stdout
    assert (out / "preview.png").stat().st_size > 1000 and (out / "preview.gif").stat().st_size > 1000
    assert not (tmp_path / "outputs").exists()  # a utility writes nothing but its output


@pytest.mark.slow  # the synthesize CLI in a subprocess
def test_cli_reports_bad_option(tmp_path):
    cmd = [sys.executable, "-m", "dancelcm.data.synthesize", f"out_dir={tmp_path / 'x'}", "resolution=33"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "resolution=33" in proc.stderr + proc.stdout


def test_stored_frames_are_the_rendered_frames_in_full_colour(tmp_path):
    """4:4:4 storage: the decoded ground truth is within ~40 dB of what the renderer drew (4:2:0 at this size
    lost ~12 dB on the colour edges), and a dataset made with other encoding settings is flagged."""
    import logging

    from dancelcm.data.dancers import DanceProgramme, Identity, compute_pose, render_background, render_dancer
    from dancelcm.data.datamodule import PoseVideoDataModule
    from dancelcm.data.synthesize import identity_of, video_id

    def psnr_to_render(fmt):
        root = make_dataset(tmp_path / fmt, num_videos=2, num_frames=6, resolution=64, pix_fmt=fmt)
        cfg = SynthesisConfig(out_dir=str(root), num_frames=6, resolution=64)
        ident = Identity.sample(np.random.default_rng([cfg.seed, 1, identity_of(cfg, 0)]))
        rng = np.random.default_rng([cfg.seed, 2, 0])
        prog = DanceProgramme.sample(rng, cfg.num_frames / cfg.fps)
        bg = render_background(rng, 64)
        drawn = np.stack([render_dancer(ident, compute_pose(ident, prog, i / cfg.fps, 64), bg)[0] for i in range(6)])
        stored = read_frames(layout.video_dir(root, video_id(0)))
        mse = np.mean((stored.astype(float) - drawn.astype(float)) ** 2)
        return 10 * np.log10(255.0**2 / mse), root

    full, root444 = psnr_to_render("yuv444p")
    sub, root420 = psnr_to_render("yuv420p")
    assert full > 38 and full > sub + 6, (full, sub)
    dm = PoseVideoDataModule(root=str(root420), synthesize={"num_videos": 2, "resolution": 64})
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("dancelcm.data.datamodule").addHandler(handler)
    try:
        dm.prepare_data()
        assert any("pix_fmt: yuv420p vs yuv444p" in r.getMessage() for r in records)
        records.clear()
        PoseVideoDataModule(root=str(root444), synthesize={"num_videos": 2, "resolution": 64}).prepare_data()
        assert not records
    finally:
        logging.getLogger("dancelcm.data.datamodule").removeHandler(handler)


def test_synthesize_never_writes_into_a_folder_of_other_files(tmp_path):
    from dancelcm.data.synthesize import SynthesisConfig, synthesize

    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("real_video\n")
    with pytest.raises(FileExistsError, match="holds files but no dataset.json"):
        synthesize(SynthesisConfig(out_dir=str(tmp_path), num_videos=2, num_frames=12, resolution=32, preview=False))
    assert (tmp_path / "splits" / "train.txt").read_text() == "real_video\n"
