"""The centre crop of a wide video: keypoints and face boxes it leaves outside the frame are marked as not seen,
never served as confident points or as a face (#23 item 9a, 9b)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dancelcm.data import layout
from dancelcm.data.dataset import ClipSpec, TripletDataset, crop_square, scan_videos
from dancelcm.data.reader import read_frames

CLIP = ClipSpec(4, 1)
N, H, W = 16, 32, 64  # cropped to 32 x 32: the clip keeps source x in [16, 48)


def _frames(n: int, h: int, w: int) -> np.ndarray:
    """Smooth moving colour ramps (compress well, so decoded frames stay close to these)."""
    yy, xx = np.mgrid[:h, :w]
    return np.stack([np.stack([xx * 4 + t * 5, yy * 6 + t * 3, (xx + yy) * 2 + t * 7], -1) % 256 for t in range(n)])


def _wide_video(root, boxes, body=None, face=None, train=False) -> TripletDataset:
    """One 32x64 (H x W) video with the given side files, served at 32 x 32 (evaluation clips by default)."""
    d = layout.video_dir(root, "wide")
    d.mkdir(parents=True)
    frames = _frames(N, H, W).astype(np.uint8)
    layout.write_video(d / "video.mp4", frames, 12)
    layout.write_video(d / "pose.mp4", frames, 12)
    body = np.zeros((N, 18, 3), np.float32) if body is None else body
    face = np.zeros((N, 68, 3), np.float32) if face is None else face
    np.savez(d / "keypoints.npz", body=body, face=face)
    layout.write_json(d / "faces.json", {"boxes": boxes})
    layout.write_split(root, "train", ["wide"])
    entries = scan_videos(root, "train", CLIP).entries
    return TripletDataset(entries, CLIP, resolution=32, face_size=16, train=train)


def test_keypoints_cropped_away_lose_their_confidence(tmp_path):
    body = np.zeros((N, 18, 3), np.float32)
    face = np.zeros((N, 68, 3), np.float32)
    body[:, 0] = (5, 10, 0.9)  # left of the crop
    body[:, 1] = (32, 10, 0.9)  # inside: x = 0.5
    body[:, 2] = (60, 20, 0.9)  # right of the crop
    face[:, 0] = (8, 16, 0.8)  # outside
    face[:, 1] = (40, 16, 0.8)  # inside: x = 0.75
    s = _wide_video(tmp_path, [None] * N, body, face)[0]
    kp, fkp = s["keypoints"], s["face_keypoints"]
    assert (kp[:, 0, 2] == 0).all() and (kp[:, 2, 2] == 0).all() and (fkp[:, 0, 2] == 0).all()
    torch.testing.assert_close(kp[:, 1], torch.tensor([0.5, 10 / 32, 0.9]).expand(4, 3))
    torch.testing.assert_close(fkp[:, 1], torch.tensor([0.75, 0.5, 0.8]).expand(4, 3))
    for k in (kp, fkp):  # every point still marked visible lies in the clip frame
        xy = k[..., :2][k[..., 2] > 0]
        assert ((xy >= 0) & (xy <= 1)).all()


def test_face_boxes_cropped_away_are_absent_and_partial_ones_clipped(tmp_path):
    boxes = [None] * N
    boxes[0] = [2, 4, 12, 14]  # entirely left of the crop
    boxes[1] = [6, 4, 16.5, 14]  # 5% inside: essentially outside
    boxes[2] = [10, 4, 20, 14]  # 40% inside: clipped to x in [16, 20]
    boxes[3] = [30, 4, 40, 14]  # inside
    ds = _wide_video(tmp_path, boxes)
    s = ds[0]
    assert s["face_boxes_valid"].tolist() == [False, False, True, True]
    assert torch.count_nonzero(s["face_boxes"][:2]) == 0
    torch.testing.assert_close(s["face_boxes"][2], torch.tensor([0.0, 4 / 32, 4 / 32, 14 / 32]))
    torch.testing.assert_close(s["face_boxes"][3], torch.tensor([14 / 32, 4 / 32, 24 / 32, 14 / 32]))
    # the reference face is the first face the clip shows, cut around its visible part
    assert int(s["reference_index"]) == 2 and s["face_valid"]
    raw = read_frames(layout.video_dir(tmp_path, "wide"))
    ref = torch.from_numpy(raw[2]).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(s["face"], crop_square(ref, [16, 4, 20, 14], 1.5, 16).clamp(-1, 1))


@pytest.mark.parametrize("train", [False, True])
def test_a_video_whose_faces_are_all_cropped_away_has_no_face(tmp_path, train):
    s = _wide_video(tmp_path, [[2, 4, 12, 14]] * N, train=train)[0]
    assert not s["face_valid"] and not s["face_boxes_valid"].any()
    assert torch.count_nonzero(s["face"]) == 0 and torch.count_nonzero(s["face_boxes"]) == 0
