from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dancelcm.data import layout
from dancelcm.data.datamodule import PoseVideoDataModule
from dancelcm.data.dataset import ClipSampler, ClipSpec, TripletDataset, crop_square, resize_center_crop, scan_videos
from dancelcm.data.reader import read_faces, read_frames


def _dm(root, **kw):
    args = dict(num_frames=4, stride=2, resolution=32, face_size=16, batch_size=3, num_workers=0)
    args.update(kw)
    return PoseVideoDataModule(str(root), **args)


def test_batch_keys_shapes_dtypes_ranges(synthetic_root):
    dm = _dm(synthetic_root)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    B, Fr, H = 3, 4, 32
    expect = {
        "video": ((B, Fr, 3, H, H), torch.float32),
        "pose": ((B, Fr, 3, H, H), torch.float32),
        "reference": ((B, 3, H, H), torch.float32),
        "face": ((B, 3, 16, 16), torch.float32),
        "face_valid": ((B,), torch.bool),
        "face_boxes": ((B, Fr, 4), torch.float32),
        "face_boxes_valid": ((B, Fr), torch.bool),
        "keypoints": ((B, Fr, 18, 3), torch.float32),
        "face_keypoints": ((B, Fr, 68, 3), torch.float32),
        "frame_index": ((B, Fr), torch.int64),
        "reference_index": ((B,), torch.int64),
        "clip_index": ((B,), torch.int64),
        "figure_mask": ((B, Fr, 1, H, H), torch.float32),
        "turned": ((B, Fr), torch.bool),
    }
    assert set(b) == set(expect) | {"video_id"}
    for k, (shape, dtype) in expect.items():
        assert tuple(b[k].shape) == shape and b[k].dtype == dtype, k
    for k in ("video", "pose", "reference", "face"):
        assert b[k].min() >= -1 and b[k].max() <= 1 and b[k].std() > 0.05, k
    assert len(b["video_id"]) == B
    # frames are `stride` apart; the reference shows a face (synthetic videos always have one)
    assert torch.all(b["frame_index"].diff(dim=1) == 2)
    assert b["face_valid"].all()
    vis = b["keypoints"][..., 2] > 0
    assert vis.any() and (b["keypoints"][..., :2][vis] >= -0.1).all() and (b["keypoints"][..., :2][vis] <= 1.1).all()
    assert set(b["figure_mask"].unique().tolist()) <= {0.0, 1.0}


def test_reference_frame_and_face_crop_match_the_video(synthetic_root):
    dm = _dm(synthetic_root, resolution=32, face_size=16)
    dm.setup("validate")
    s = dm.val_dataset[0]
    raw = read_frames(layout.video_dir(synthetic_root, s["video_id"]))
    ref = torch.from_numpy(raw[int(s["reference_index"])]).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(s["reference"], ref)  # same size: no resampling
    # the face crop is the 1.5x square around the reference frame's face box
    assert s["face_valid"]
    box = read_faces(layout.video_dir(synthetic_root, s["video_id"]), len(raw))[int(s["reference_index"])]
    torch.testing.assert_close(s["face"], crop_square(ref, box, 1.5, 16))
    x0, y0, x1, y1 = box
    assert (x1 - x0) < 32 / 2  # a face, not the whole frame


def test_resize_center_crop_moves_points_with_pixels():
    img = torch.zeros(1, 1, 40, 80)
    img[..., 10, 50] = 1.0  # a dot at x=50.5, y=10.5 (pixel centre)
    out, (sx, sy, ox, oy) = resize_center_crop(img, (20, 20))
    assert out.shape[-2:] == (20, 20)
    y, x = np.unravel_index(out[0, 0].argmax().item(), (20, 20))
    assert abs((50.5 * sx - ox) - (x + 0.5)) <= 1 and abs((10.5 * sy - oy) - (y + 0.5)) <= 1


def test_crop_square_pads_at_the_border():
    img = torch.arange(3 * 10 * 10, dtype=torch.float32).reshape(3, 10, 10)
    out = crop_square(img, (0, 0, 4, 4), scale=1.5, size=6)  # extends past the top-left corner
    assert out.shape == (3, 6, 6) and torch.isfinite(out).all()


def test_frames_folder_reads_like_the_mp4(fresh_copy):
    vid = layout.read_split(fresh_copy, "train")[0]
    d = layout.video_dir(fresh_copy, vid)
    for kind, stem, folder in (("video", "video", "frames"), ("pose", "pose", "pose")):
        frames = read_frames(d, kind)
        (d / folder).mkdir()
        for i, f in enumerate(frames):
            Image.fromarray(f).save(d / folder / f"{i:06d}.png")
        (d / f"{stem}.mp4").unlink()
    clip = ClipSpec(4, 2)
    entries = scan_videos(fresh_copy, "train", clip).entries
    e = next(x for x in entries if x.video_id == vid)
    assert e.video.endswith("frames") and e.pose.endswith("pose")
    ds = TripletDataset([e], clip, resolution=32, face_size=16, train=False)
    s = ds[0]
    assert s["video"].shape == (4, 3, 32, 32) and s["video"].std() > 0.1


def _collect(dataset, world, workers, epoch=0, seed=0):
    seen = []
    for rank in range(world):
        sampler = ClipSampler(dataset, shuffle=True, seed=seed, num_replicas=world, rank=rank)
        sampler.set_epoch(epoch)
        # spawned workers: a forked worker of a long pytest process (threads of earlier tests' decoders) hung once
        context = "spawn" if workers else None
        loader = DataLoader(
            dataset, batch_size=2, sampler=sampler, num_workers=workers, multiprocessing_context=context
        )
        for b in loader:
            seen += [(int(c), int(f[0])) for c, f in zip(b["clip_index"], b["frame_index"])]
    return seen


def test_two_ranks_two_workers_see_every_clip_exactly_once(synthetic_root):
    entries = scan_videos(synthetic_root, "train", ClipSpec(4, 2)).entries
    ds = TripletDataset(entries, ClipSpec(4, 2), resolution=32, face_size=16, clips_per_video=2)
    assert len(ds) == 16
    seen = _collect(ds, world=2, workers=2)
    clips = sorted(c for c, _ in seen)
    assert clips == list(range(16))
    # deterministic per seed and epoch, whatever the worker count; another epoch draws other clips
    assert sorted(seen) == sorted(_collect(ds, world=2, workers=0))
    other = _collect(ds, world=2, workers=0, epoch=1)
    assert sorted(c for c, _ in other) == list(range(16)) and sorted(other) != sorted(seen)


def test_uneven_shards_are_padded_so_ranks_stay_in_step(synthetic_root):
    entries = scan_videos(synthetic_root, "train", ClipSpec(4, 2)).entries[:7]
    ds = TripletDataset(entries, ClipSpec(4, 2), resolution=32)
    samplers = [ClipSampler(ds, num_replicas=2, rank=r) for r in range(2)]
    assert [len(s) for s in samplers] == [4, 4] and samplers[0].padding == 1
    keys = [k for s in samplers for k, _ in s]
    assert set(keys) == set(range(7)) and len(keys) == 8


def test_sampler_resume_skips_the_consumed_keys_of_that_epoch_only():
    data = list(range(10))
    sampler = ClipSampler(data, shuffle=True, seed=3)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.resume(2, 4)
    assert list(sampler) == whole[4:]  # the pass that resumes
    assert list(sampler) == whole  # the next pass of the same epoch is whole again
    sampler.resume(5, 4)  # a position in another epoch does not touch this one
    assert list(sampler) == whole
    sampler.set_epoch(5)
    assert len(list(sampler)) == 6


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A write interrupted before it completes (simulated at the final rename) leaves the previous file."""
    from fsspec.implementations.local import LocalFileOpener
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    io = TorchCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def crash(self):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(LocalFileOpener, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["w"], torch.ones(3))


def test_validation_clips_are_fixed(synthetic_root):
    dm = _dm(synthetic_root, val_clips_per_video=3)
    dm.setup("validate")
    a = [dm.val_dataset[(i, 0)]["frame_index"] for i in range(len(dm.val_dataset))]
    b = [dm.val_dataset[(i, 5)]["frame_index"] for i in range(len(dm.val_dataset))]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[0][0] == 0 and a[2][-1] == 23  # evenly spaced over the 24 frames


def test_missing_root_names_the_fix(tmp_path):
    dm = _dm(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="dancelcm.data.synthesize"):
        dm.setup("fit")


SMALL_SYNTH = {"num_videos": 4, "num_frames": 12, "resolution": 32, "num_workers": 1, "preview": False}


def test_prepare_data_generates_the_synthetic_default(tmp_path):
    root = tmp_path / "auto"
    dm = _dm(root, synthesize=SMALL_SYNTH, default_root=str(root))
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_dataset) >= 2


def test_a_named_data_root_without_a_dataset_is_never_written_into(tmp_path):
    """A typo or a hand-made real layout at data.root must not get 400 dancers generated into it."""
    typo = tmp_path / "dat" / "synthtic"
    dm = _dm(typo, synthesize=SMALL_SYNTH, default_root=str(tmp_path / "data" / "synthetic"))
    with pytest.raises(FileNotFoundError, match=r"data.root=.*synthtic: no dataset there.*data.generate=true"):
        dm.prepare_data()
    assert not typo.exists()
    real = tmp_path / "real"  # a real layout without dataset.json: its split files must survive
    (real / "splits").mkdir(parents=True)
    (real / "splits" / "train.txt").write_text("my_video_1\n")
    for generate in ("auto", True):
        with pytest.raises((FileNotFoundError, FileExistsError), match=r"data.root=.*real"):
            _dm(real, synthesize=SMALL_SYNTH, generate=generate).prepare_data()
    assert (real / "splits" / "train.txt").read_text() == "my_video_1\n"
    assert sorted(p.name for p in real.rglob("*")) == ["splits", "train.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _dm(empty, synthesize=SMALL_SYNTH, generate=True).prepare_data()  # asked for, into an empty folder: made
    assert (empty / "dataset.json").is_file()


def test_the_default_config_generates_only_at_its_default_root(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = str(Path(__file__).resolve().parents[2] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        default = compose(config_name="train", overrides=[f"paths.data_dir={tmp_path}"])
        named = compose(config_name="train", overrides=[f"data.root={tmp_path / 'mine'}"])
    assert default.data.root == default.data.default_root == str(tmp_path / "synthetic")
    with pytest.raises(FileNotFoundError, match="data.root="):
        instantiate(named.data).prepare_data()


def test_dataset_pickles_without_readers(synthetic_root):
    import pickle

    entries = scan_videos(synthetic_root, "train", ClipSpec(4, 2)).entries
    ds = TripletDataset(entries, ClipSpec(4, 2), resolution=32)
    ds[0]  # opens readers in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._cache is None
    torch.testing.assert_close(clone[0]["video"], ds[0]["video"])


def test_decoded_cache_gives_the_same_clips(synthetic_root):
    entries = scan_videos(synthetic_root, "train", ClipSpec(4, 2)).entries
    plain = TripletDataset(entries, ClipSpec(4, 2), resolution=32)
    cached = TripletDataset(entries, ClipSpec(4, 2), resolution=32, decoded_cache_mb=1)  # ~0.1 MB per video
    for i in range(len(plain)):
        a, b = plain[(i, 3)], cached[(i, 3)]
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["pose"], b["pose"])
    assert 0 < cached._cache._decoded_bytes <= 2**20  # evicted down to the budget
