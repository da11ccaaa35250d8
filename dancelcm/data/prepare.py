"""``python -m dancelcm.data.prepare``: raw videos -> the project's pose-video-face layout (``layout.py``).

Sources (``source_format``):

- ``tiktok``  the TikTok dataset as distributed: ``SOURCE/<video>/images/*.png`` (frame folders);
- ``ubc``     UBC Fashion: ``SOURCE/train/*.mp4`` and ``SOURCE/test/*.mp4`` (the split comes from there);
- ``videos``  any folder: every video file (mp4, mov, webm, mkv, avi) and every folder of frames below it;
- ``auto``    ``ubc`` when ``train/`` and ``test/`` hold videos, ``tiktok`` when ``*/images/`` exist, else
  ``videos``.

Keypoints (``pose.backend``): ``dwpose`` runs DWPose from the user's two local ONNX files
(``pose.dwpose_detector``, ``pose.dwpose_model``; see ``dwpose.py``); ``openpose_json`` reads per-frame
OpenPose / DWPose JSON files the user already has (``pose.keypoints_dir/<video id>/*.json``, BODY_18 or
BODY_25 with 68/70 face points). Either way the most confident person of each frame is kept. Face
boxes come from the face keypoints (padded by ``face.pad``). Pose maps are rendered DWPose-style
(``pose.py``) at the output resolution.

Per video: frames are resized to cover ``resolution`` and centre-cropped (keypoints follow), optionally
subsampled to ``fps``, capped at ``max_frames``; written as ``video.mp4`` + ``pose.mp4`` +
``keypoints.npz`` + ``faces.json`` + ``meta.json`` (last, atomically: a video with ``meta.json`` is done
and skipped by a re-run). Videos run in ``num_workers`` processes with a progress bar; failures are
collected with their reasons into ``prepare_report.json`` and a summary, never silently dropped, and the
command exits non-zero when more than ``max_failed_fraction`` of the videos (default: none) failed. The
summary also warns about an empty split, videos without a person in any frame and upsampled sources.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from dancelcm.cli import UserError, command
from dancelcm.data import layout
from dancelcm.data.pose import face_box_from_keypoints, render_pose_map

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
FORMATS = ("auto", "tiktok", "ubc", "videos")
BACKENDS = ("openpose_json", "dwpose")
# OpenPose BODY_25 -> BODY_18 (drops mid-hip and the feet)
BODY25_TO_18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)


class PrepareError(UserError, RuntimeError):
    """A problem with the options or the source as a whole (per-video problems are collected instead)."""


@dataclass
class PoseOptions:
    backend: str = "openpose_json"
    keypoints_dir: str | None = None  # openpose_json: <dir>/<video id>/*.json, one file per source frame
    dwpose_detector: str | None = None  # dwpose: the YOLOX person detector ONNX (e.g. yolox_l.onnx)
    dwpose_model: str | None = None  # dwpose: the whole-body RTMPose ONNX (e.g. dw-ll_ucoco_384.onnx)
    conf_threshold: float = 0.3


@dataclass
class FaceOptions:
    pad: float = 0.15  # the keypoint box grown by this fraction of its size on each side (landmarks -> head)


@dataclass
class PrepareConfig:
    source: str
    out: str
    source_format: str = "auto"
    resolution: list[int] | int = 512  # output H x W (or a square side)
    fps: float | None = None  # subsample to this rate (None: keep the source rate)
    source_fps: float = 30.0  # frame folders carry no rate: assume this one
    max_frames: int | None = None
    test_fraction: float = 0.1  # tiktok / videos: held-out videos (ubc: its own split)
    seed: int = 0
    num_workers: int = 2
    overwrite: bool = False
    crf: int = 16
    max_failed_fraction: float = 0.0  # the command exits non-zero when a larger share of the videos failed
    pose: PoseOptions = field(default_factory=PoseOptions)
    face: FaceOptions = field(default_factory=FaceOptions)

    def __post_init__(self):
        if isinstance(self.pose, dict):
            self.pose = PoseOptions(**self.pose)
        if isinstance(self.face, dict):
            self.face = FaceOptions(**self.face)

    @property
    def size(self) -> tuple[int, int]:
        r = self.resolution
        return (int(r), int(r)) if isinstance(r, int) else (int(r[0]), int(r[1]))

    def validate(self) -> None:
        h, w = self.size
        if h < 2 or w < 2 or h % 2 or w % 2:  # checked before any video is decoded: every one would fail
            raise PrepareError(
                f"resolution={self.resolution}: h264 stores only even frame sizes, got {h}x{w} (H x W); use e.g. "
                f"resolution=[{max(2, h + h % 2)},{max(2, w + w % 2)}]"
            )
        if not 0.0 <= self.max_failed_fraction <= 1.0:
            raise PrepareError(f"max_failed_fraction={self.max_failed_fraction}: must be in [0, 1]")
        if self.source_format not in FORMATS:
            raise PrepareError(f"source_format={self.source_format!r}: choose one of {FORMATS}")
        if not Path(self.source).is_dir():
            raise PrepareError(f"source={self.source}: no such folder")
        if self.pose.backend not in BACKENDS:
            raise PrepareError(f"pose.backend={self.pose.backend!r}: choose one of {BACKENDS}")
        if self.pose.backend == "openpose_json":
            if not self.pose.keypoints_dir:
                raise PrepareError(
                    "pose.backend=openpose_json needs pose.keypoints_dir=DIR: per-frame OpenPose/DWPose JSON files "
                    "in DIR/<video id>/ (run your pose estimator over the videos first)"
                )
            if not Path(self.pose.keypoints_dir).is_dir():
                raise PrepareError(f"pose.keypoints_dir={self.pose.keypoints_dir}: no such folder")
        if self.pose.backend == "dwpose":
            for option in ("dwpose_detector", "dwpose_model"):
                path = getattr(self.pose, option)
                if not path or not Path(path).is_file():
                    raise PrepareError(
                        f"pose.{option}={path}: no such ONNX file. pose.backend=dwpose runs DWPose from its two "
                        "ONNX files (yolox_l.onnx -> pose.dwpose_detector, dw-ll_ucoco_384.onnx -> "
                        "pose.dwpose_model), which cannot be downloaded here: get them from the DWPose release"
                    )
            try:
                import onnxruntime  # noqa: F401
            except ImportError as e:
                raise PrepareError('pose.backend=dwpose needs onnxruntime: pip install -e ".[pose]"') from e
        if not 0.0 <= self.test_fraction < 1.0:
            raise PrepareError(f"test_fraction={self.test_fraction}: must be in [0, 1)")


@dataclass
class SourceVideo:
    id: str
    path: Path  # a video file or a frames folder
    split: str | None = None  # from the source layout (ubc), else assigned later


# -- discovery -------------------------------------------------------------------------------------
def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in layout.IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def detect_format(source: Path) -> str:
    splits = [source / "train", source / "test"]
    if all(d.is_dir() for d in splits) and all(_videos_in(d) for d in splits):
        return "ubc"
    if any((p / "images").is_dir() for p in source.iterdir() if p.is_dir()):
        return "tiktok"
    return "videos"


def _safe_id(rel: Path) -> str:
    stem = rel.with_suffix("") if rel.suffix.lower() in VIDEO_SUFFIXES else rel
    return "__".join(stem.parts).replace(" ", "_")


def discover(source: Path, source_format: str) -> tuple[str, list[SourceVideo]]:
    fmt = detect_format(source) if source_format == "auto" else source_format
    videos: list[SourceVideo] = []
    if fmt == "tiktok":
        for d in sorted(p for p in source.iterdir() if p.is_dir()):
            frames = d / "images"
            if frames.is_dir() and _has_images(frames):
                videos.append(SourceVideo(d.name, frames))
    elif fmt == "ubc":
        for split in ("train", "test"):
            for f in _videos_in(source / split):
                videos.append(SourceVideo(f.stem, f, split))
    else:
        for p in sorted(source.rglob("*")):
            if any(part.startswith(".") for part in p.relative_to(source).parts):
                continue
            is_video = p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
            if is_video or (p.is_dir() and _has_images(p)):
                videos.append(SourceVideo(_safe_id(p.relative_to(source)), p))
    if not videos:
        raise PrepareError(
            f"source={source}: no videos found as source_format={fmt} "
            f"(video files {', '.join(VIDEO_SUFFIXES)} or folders of frames)"
        )
    ids = [v.id for v in videos]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise PrepareError(f"source={source}: video ids {dup[:5]} occur twice; rename the files or folders")
    return fmt, videos


def assign_splits(videos: list[SourceVideo], test_fraction: float, seed: int) -> dict[str, list[str]]:
    """The source's own split where it has one (ubc), else a seeded random ``test_fraction`` of videos."""
    if all(v.split for v in videos):
        return {s: [v.id for v in videos if v.split == s] for s in ("train", "test")}
    ids = sorted(v.id for v in videos)
    random.Random(seed).shuffle(ids)
    n_test = int(round(len(ids) * test_fraction)) if len(ids) > 1 else 0
    if test_fraction > 0 and len(ids) > 1:
        n_test = max(1, n_test)
    return {"train": sorted(ids[n_test:]), "test": sorted(ids[:n_test])}


# -- keypoints -------------------------------------------------------------------------------------
def _person_arrays(person: dict) -> tuple[np.ndarray, np.ndarray]:
    body = np.asarray(person.get("pose_keypoints_2d") or [], np.float32).reshape(-1, 3)
    if len(body) == 25:
        body = body[list(BODY25_TO_18)]
    elif len(body) != 18:
        raise ValueError(f"pose_keypoints_2d has {len(body)} points; expected 18 (BODY_18) or 25 (BODY_25)")
    face = np.asarray(person.get("face_keypoints_2d") or [], np.float32).reshape(-1, 3)
    if len(face) == 0:
        face = np.zeros((68, 3), np.float32)
    elif len(face) in (68, 70):
        face = face[:68]  # OpenPose's 70 = the 68 iBUG points + 2 pupils
    else:
        raise ValueError(f"face_keypoints_2d has {len(face)} points; expected 68 or 70")
    return body, face


def read_openpose_json(folder: Path, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame OpenPose/DWPose JSON files (sorted by name) -> body (F, 18, 3), face (F, 68, 3) in source
    pixels. A frame with nobody gets zero confidence; with several people, the most confident body wins."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no keypoint folder for this video")
    files = sorted(folder.glob("*.json"))
    if len(files) != num_frames:
        raise ValueError(f"{folder}: {len(files)} keypoint files for {num_frames} frames")
    body = np.zeros((num_frames, 18, 3), np.float32)
    face = np.zeros((num_frames, 68, 3), np.float32)
    for i, f in enumerate(files):
        try:
            people = json.loads(f.read_text()).get("people", [])
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from e
        best = None
        for person in people:
            b, fa = _person_arrays(person)
            if best is None or b[:, 2].sum() > best[0][:, 2].sum():
                best = (b, fa)
        if best is not None:
            body[i], face[i] = best
    return body, face


# -- one video -------------------------------------------------------------------------------------
def _source_frames(path: Path, cfg: PrepareConfig) -> tuple[np.ndarray, list[int], float, int]:
    """Frames (F, H, W, 3) uint8 after fps subsampling and the frame cap, their source indices, the output
    fps and the source's frame count."""
    from dancelcm.data.reader import FrameSource

    src = FrameSource(path)
    rate = src.fps or cfg.source_fps  # frame folders carry no rate
    n = len(src)
    step = max(1, int(round(rate / cfg.fps))) if cfg.fps else 1
    indices = list(range(0, n, step))
    if cfg.max_frames:
        indices = indices[: cfg.max_frames]
    return src.get(indices), indices, rate / step, n


def _transform(frames: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    import torch

    from dancelcm.data.dataset import resize_center_crop

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    out, tf = resize_center_crop(x, size)
    out = out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out, tf


def _padded_box(box: list[float] | None, pad: float, h: int, w: int) -> list[float] | None:
    if box is None:
        return None
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * pad, (y1 - y0) * pad
    return [max(0.0, x0 - dx), max(0.0, y0 - dy), min(float(w), x1 + dx), min(float(h), y1 + dy)]


def prepare_video(cfg: PrepareConfig, video: SourceVideo) -> dict:
    t0 = time.perf_counter()
    d = layout.video_dir(cfg.out, video.id)
    if (d / "meta.json").exists() and not cfg.overwrite:
        return {"id": video.id, "status": "done before"}
    try:
        frames, indices, fps, n_source = _source_frames(video.path, cfg)
        src_h, src_w = frames.shape[1:3]
        if cfg.pose.backend == "openpose_json":
            body, face = read_openpose_json(Path(cfg.pose.keypoints_dir) / video.id, n_source)
            body, face = body[indices], face[indices]
        else:
            body, face = _dwpose(cfg)(frames)
        out, (sx, sy, ox, oy) = _transform(frames, cfg.size)
        h, w = cfg.size
        for kp in (body, face):
            kp[..., 0] = kp[..., 0] * sx - ox
            kp[..., 1] = kp[..., 1] * sy - oy
            outside = (kp[..., 0] < 0) | (kp[..., 0] >= w) | (kp[..., 1] < 0) | (kp[..., 1] >= h)
            kp[outside, 2] = 0.0  # cropped away: not visible
        th = cfg.pose.conf_threshold
        poses = np.stack([render_pose_map(body[i], face[i], h, w, th) for i in range(len(out))])
        boxes = [_padded_box(face_box_from_keypoints(face[i], th), cfg.face.pad, h, w) for i in range(len(out))]
        d.mkdir(parents=True, exist_ok=True)
        (d / "meta.json").unlink(missing_ok=True)  # not done until it is written again, last
        # Full-resolution colour: the stored frames are what the model learns (a 4:2:0 re-encode of 4:2:0
        # footage keeps it as it was; the rendered skeleton's thin coloured limbs need it)
        layout.write_video(d / "video.mp4", out, fps, crf=cfg.crf, pix_fmt="yuv444p")
        layout.write_video(d / "pose.mp4", poses, fps, crf=cfg.crf, pix_fmt="yuv444p")
        np.savez_compressed(d / "keypoints.npz", body=body, face=face)
        layout.write_json(d / "faces.json", {"boxes": boxes})
        layout.write_json(
            d / "meta.json",
            {
                "num_frames": len(out),
                "fps": fps,
                "height": h,
                "width": w,
                "source": str(video.path),
                "source_size": [src_h, src_w],
                "source_frames": indices,
                "pose_backend": cfg.pose.backend,
            },
        )
    except Exception as e:  # one bad video never stops the others: reported with its reason
        return {"id": video.id, "status": "failed", "error": f"{type(e).__name__}: {e}", "source": str(video.path)}
    faces = sum(b is not None for b in boxes)
    people = int((body[:, :, 2] > cfg.pose.conf_threshold).any(axis=1).sum())
    return {
        "id": video.id,
        "status": "prepared",
        "frames": len(out),
        "frames_with_person": people,
        "frames_with_face": faces,
        "source_size": [src_h, src_w],
        "upsampled": h > src_h or w > src_w,  # resize-to-cover enlarged the source: blurrier than its size says
        "seconds": time.perf_counter() - t0,
    }


_DWPOSE: dict = {}


def _dwpose(cfg: PrepareConfig):
    """One DWPose per process (the ONNX sessions are built once, in each worker)."""
    from dancelcm.data.dwpose import DWPose

    key = (cfg.pose.dwpose_detector, cfg.pose.dwpose_model)
    if key not in _DWPOSE:
        _DWPOSE[key] = DWPose(*key)
    return _DWPOSE[key]


def _prepare_star(args) -> dict:
    return prepare_video(*args)


# -- the whole source ------------------------------------------------------------------------------
def prepare(cfg: PrepareConfig) -> dict:
    from tqdm.auto import tqdm

    cfg.validate()
    source, out = Path(cfg.source), Path(cfg.out)
    fmt, videos = discover(source, cfg.source_format)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(cfg, v) for v in videos]
    desc = f"preparing {len(videos)} videos ({fmt})"
    if cfg.num_workers > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(cfg.num_workers) as pool:
            results = list(tqdm(pool.imap(_prepare_star, jobs, chunksize=1), total=len(jobs), desc=desc))
    else:
        results = [prepare_video(*job) for job in tqdm(jobs, desc=desc)]
    failed = [r for r in results if r["status"] == "failed"]
    ok = {r["id"] for r in results if r["status"] != "failed"}
    splits = assign_splits([v for v in videos if v.id in ok], cfg.test_fraction, cfg.seed)
    for name, ids in splits.items():
        layout.write_split(out, name, ids)
    h, w = cfg.size
    layout.write_json(
        out / "dataset.json",
        {
            "name": source.name,
            "format_version": layout.FORMAT_VERSION,
            "fps": cfg.fps,
            "height": h,
            "width": w,
            "keypoints": "openpose18+face68 (pixels, confidence)",
            "has_ground_truth": False,
            "prepared_from": {"source": str(source), "format": fmt, "pose_backend": cfg.pose.backend},
            "num_videos": len(ok),
            "splits": {k: len(v) for k, v in splits.items()},
        },
    )
    summary = {
        "source": str(source),
        "format": fmt,
        "videos": len(videos),
        "prepared": sum(r["status"] == "prepared" for r in results),
        "done_before": sum(r["status"] == "done before" for r in results),
        "failed": len(failed),
        "failures": failed,
        "splits": {k: len(v) for k, v in splits.items()},
        "seconds": time.perf_counter() - t0,
        "videos_detail": results,
    }
    summary["warnings"] = _warnings(cfg, results, splits)
    layout.write_json(out / "prepare_report.json", summary)
    return summary


def _ids(rows: list[dict], show: int = 5) -> str:
    more = f" and {len(rows) - show} more" if len(rows) > show else ""
    return ", ".join(r["id"] for r in rows[:show]) + more


def _warnings(cfg: PrepareConfig, results: list[dict], splits: dict[str, list[str]]) -> list[str]:
    """What the counts alone do not say: an empty split (training then stops), videos with nobody in them
    (their pose maps are black), sources smaller than the output (upsampled)."""
    out = []
    prepared = [r for r in results if r["status"] == "prepared"]
    ok = sum(r["status"] != "failed" for r in results)
    for name, ids in splits.items():
        if not ids:
            option = "data.val_split=test" if name == "test" else f"data.train_split={name}"
            out.append(
                f"split '{name}' is empty ({ok} usable of {len(results)} videos, test_fraction={cfg.test_fraction}): "
                f"training reads it by default ({option}) and would stop with 'no usable video'; prepare more "
                "videos, or point that option at another split"
            )
    nobody = [r for r in prepared if r["frames_with_person"] == 0]
    if nobody:
        out.append(
            f"{len(nobody)} of {len(prepared)} prepared videos have no frame with a person (no body keypoint above "
            f"pose.conf_threshold={cfg.pose.conf_threshold}): their pose maps are empty; check the keypoints "
            f"(pose.backend={cfg.pose.backend}): {_ids(nobody)}"
        )
    upsampled = [r for r in prepared if r["upsampled"]]
    if upsampled:
        h, w = cfg.size
        sh, sw = upsampled[0]["source_size"]
        out.append(
            f"{len(upsampled)} of {len(prepared)} prepared videos were upsampled: the source is smaller than "
            f"resolution={h}x{w} (H x W; e.g. {upsampled[0]['id']} is {sh}x{sw}), so their frames are blurrier than "
            f"their size suggests: {_ids(upsampled)}"
        )
    return out


def check_failures(summary: dict, cfg: PrepareConfig) -> None:
    """PrepareError when more than ``cfg.max_failed_fraction`` of the videos failed (the command's exit status)."""
    failed, total = summary["failed"], summary["videos"]
    if failed and failed > cfg.max_failed_fraction * total:
        raise PrepareError(
            f"{failed} of {total} videos failed (listed above and in {Path(cfg.out) / 'prepare_report.json'}), more "
            f"than max_failed_fraction={cfg.max_failed_fraction:g} allows; fix or remove them and run again (done "
            "videos are kept), or accept a share of failures with e.g. max_failed_fraction=0.1"
        )


def run(cfg) -> None:
    """The command's work on a composed config (``conf/prepare.yaml``): callable in-process."""
    from omegaconf import OmegaConf

    conf = PrepareConfig(**OmegaConf.to_container(cfg, resolve=True))
    s = prepare(conf)  # a PrepareError is a user error: one message, exit status 2
    log.info(
        "%s (%s): %d videos: %d prepared, %d done before, %d failed; splits %s; %.1f s -> %s",
        s["source"],
        s["format"],
        s["videos"],
        s["prepared"],
        s["done_before"],
        s["failed"],
        s["splits"],
        s["seconds"],
        conf.out,
    )
    for f in s["failures"]:
        log.warning("failed: %s (%s): %s", f["id"], f["source"], f["error"])
    if s["failures"]:
        log.warning("%d failures, listed in %s/prepare_report.json", len(s["failures"]), conf.out)
    for w in s["warnings"]:
        log.warning("%s", w)
    check_failures(s, conf)


main = command("data.prepare", run, __doc__, config_name="prepare")


if __name__ == "__main__":
    main()
