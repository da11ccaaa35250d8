"""DWPose whole-body keypoints from the user's local ONNX files (``pip install -e ".[pose]"``: onnxruntime).

DWPose (Yang et al. 2023), the pose estimator of the paper's family, is a YOLOX person detector followed by
an RTMPose whole-body model with SimCC heads (133 COCO-WholeBody points). Its weights cannot be downloaded
here: pass the two files the DWPose release ships, e.g. ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``.
The pre- and post-processing follow the public DWPose ONNX pipeline (BGR input, detector letterbox at
640 x 640 padded with 114, boxes grown 1.25x and fixed to the pose model's aspect, SimCC split ratio 2,
score = min of the x / y maxima); the affine crop is a bilinear ``grid_sample`` instead of OpenCV's
``warpAffine``. Output: OpenPose-18 body (the neck is the shoulders' mean) and the 68 face points, in
pixels with confidence, for the most confident person of each frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dancelcm.cli import MissingPathError

# COCO-WholeBody (after DWPose inserts the neck at 17) -> OpenPose-18 body order
_MMPOSE_IDX = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]
_OPENPOSE_IDX = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
_STD = np.array([58.395, 57.12, 57.375], np.float32)


def _session(path: str | Path, option: str):
    p = Path(path) if path else None
    if p is None or not p.is_file():
        raise MissingPathError(
            f"{option}={path}: no such ONNX file. DWPose needs its two ONNX files from the DWPose release "
            "(e.g. yolox_l.onnx for pose.dwpose_detector and dw-ll_ucoco_384.onnx for pose.dwpose_model)"
        )
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError('pose.backend=dwpose needs onnxruntime: pip install -e ".[pose]"') from e
    return ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])


def letterbox(img: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> (3, h, w) float32 resized by one ratio into the top-left corner, padded with 114."""
    img = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    r = min(size[0] / h, size[1] / w)
    nh, nw = int(h * r), int(w * r)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    out = np.full((3, size[0], size[1]), 114, np.float32)
    out[:, :nh, :nw] = x[0].round().clamp(0, 255).numpy()
    return out, r


def decode_yolox(output: np.ndarray, size: tuple[int, int], strides=(8, 16, 32)) -> np.ndarray:
    """Raw YOLOX head output (A, 5 + classes) -> (A, 5 + classes) with boxes in input pixels (cx, cy, w, h)."""
    grids, expanded = [], []
    for s in strides:
        hs, ws = size[0] // s, size[1] // s
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        expanded.append(np.full((hs * ws, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(expanded)
    out = output.copy()
    out[:, :2] = (out[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(out[:, 2:4]) * stride
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    order, keep = scores.argsort()[::-1], []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while len(order):
        i = order[0]
        keep.append(int(i))
        xx0 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy0 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx1 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy1 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.maximum(0, xx1 - xx0) * np.maximum(0, yy1 - yy0)
        iou = inter / (area[i] + area[order[1:]] - inter + 1e-9)
        order = order[1:][iou <= threshold]
    return keep


def crop_affine(img: np.ndarray, center: np.ndarray, scale: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """The box ``center +- scale / 2`` of (H, W, 3) float32 mapped onto a (h, w) crop, bilinear, zeros
    outside (OpenCV's ``warpAffine`` with the rotation-free top-down matrix)."""
    w, h = size_wh
    H, W = img.shape[:2]
    u = torch.arange(w, dtype=torch.float64)
    v = torch.arange(h, dtype=torch.float64)
    x = (u - w / 2) * (scale[0] / w) + center[0]
    y = (v - h / 2) * (scale[1] / h) + center[1]
    gx = (x / max(W - 1, 1)) * 2 - 1
    gy = (y / max(H - 1, 1)) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None].float()
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    out = torch.nn.functional.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].permute(1, 2, 0).numpy()


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, ratio: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(K, Wx), (K, Hy) -> keypoints (K, 2) in crop pixels, scores (K,) = min of the two maxima."""
    x, y = simcc_x.argmax(1), simcc_y.argmax(1)
    scores = np.minimum(simcc_x.max(1), simcc_y.max(1))
    kp = np.stack([x, y], 1).astype(np.float32) / ratio
    kp[scores <= 0] = -1
    return kp, scores


def to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """133 COCO-WholeBody points -> (OpenPose-18 body (18, 3), face (68, 3)), as DWPose converts them."""
    info = np.concatenate([keypoints, scores[:, None]], 1)  # (133, 3)
    neck = info[[5, 6]].mean(0)
    neck[2] = float(info[5, 2] > 0.3 and info[6, 2] > 0.3)
    info = np.insert(info, 17, neck, axis=0)  # (134, 3)
    info[_OPENPOSE_IDX] = info[_MMPOSE_IDX]
    return info[:18].astype(np.float32), info[24:92].astype(np.float32)


class DWPose:
    def __init__(self, detector: str | Path, model: str | Path, det_score: float = 0.3, nms_threshold: float = 0.45):
        self.det = _session(detector, "pose.dwpose_detector")
        self.pose = _session(model, "pose.dwpose_model")
        dshape = self.det.get_inputs()[0].shape
        pshape = self.pose.get_inputs()[0].shape
        self.det_size = (int(dshape[2]), int(dshape[3])) if isinstance(dshape[2], int) else (640, 640)
        self.pose_hw = (int(pshape[2]), int(pshape[3])) if isinstance(pshape[2], int) else (384, 288)
        self.det_score, self.nms_threshold = det_score, nms_threshold

    def detect(self, bgr: np.ndarray) -> np.ndarray:
        """Person boxes (N, 4) xyxy in image pixels, most confident first."""
        x, ratio = letterbox(bgr, self.det_size)
        out = self.det.run(None, {self.det.get_inputs()[0].name: x[None]})[0][0]
        pred = decode_yolox(out, self.det_size)
        boxes = (
            np.stack(
                [
                    pred[:, 0] - pred[:, 2] / 2,
                    pred[:, 1] - pred[:, 3] / 2,
                    pred[:, 0] + pred[:, 2] / 2,
                    pred[:, 1] + pred[:, 3] / 2,
                ],
                1,
            )
            / ratio
        )
        person = pred[:, 4] * pred[:, 5]  # objectness x class 0 ("person")
        cls = (pred[:, 5:] * pred[:, 4:5]).argmax(1)
        ok = (person > self.det_score) & (cls == 0)
        boxes, person = boxes[ok], person[ok]
        if not len(boxes):
            return np.zeros((0, 4), np.float32)
        keep = nms(boxes, person, self.nms_threshold)
        return boxes[keep].astype(np.float32)

    def keypoints(self, bgr: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.pose_hw
        center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float64)
        scale = np.array([box[2] - box[0], box[3] - box[1]], np.float64) * 1.25
        aspect = w / h  # fix the box to the model's aspect ratio (grow the short side)
        if scale[0] > scale[1] * aspect:
            scale[1] = scale[0] / aspect
        else:
            scale[0] = scale[1] * aspect
        crop = crop_affine(bgr.astype(np.float32), center, scale, (w, h))
        x = ((crop - _MEAN) / _STD).transpose(2, 0, 1)[None].astype(np.float32)
        simcc_x, simcc_y = self.pose.run(None, {self.pose.get_inputs()[0].name: x})[:2]
        kp, scores = decode_simcc(simcc_x[0], simcc_y[0])
        kp = kp / np.array([w, h], np.float32) * scale + center - scale / 2
        return kp.astype(np.float32), scores.astype(np.float32)

    def __call__(self, rgb_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F, H, W, 3) RGB uint8 -> body (F, 18, 3), face (F, 68, 3) of the most confident person per frame."""
        body = np.zeros((len(rgb_frames), 18, 3), np.float32)
        face = np.zeros((len(rgb_frames), 68, 3), np.float32)
        for i, frame in enumerate(rgb_frames):
            bgr = np.ascontiguousarray(frame[..., ::-1])
            best = None
            for box in self.detect(bgr):
                b, f = to_openpose(*self.keypoints(bgr, box))
                if best is None or b[:, 2].mean() > best[0][:, 2].mean():
                    best = (b, f)
            if best is not None:
                body[i], face[i] = best
        return body, face
