"""Pose-video-face triplet clips: scanning a dataset, the map-style clip dataset and its sampler.

One sample (the *batch dict* once collated; B is prepended to every shape, strings become lists):

=====================  ============  =======  ===============================================================
key                    shape         dtype    meaning
=====================  ============  =======  ===============================================================
``video``              (F, 3, H, W)  float32  the clip, in [-1, 1]
``pose``               (F, 3, H, W)  float32  DWPose-style pose maps of the same frames, [-1, 1]
``reference``          (3, H, W)     float32  a front-facing frame of the same video, [-1, 1]
``face``               (3, S, S)     float32  square face crop of the reference (1.5x box); zeros if absent
``face_valid``         ()            bool     False when the reference frame has no face box
``face_boxes``         (F, 4)        float32  per-frame face boxes x0, y0, x1, y1 in [0, 1] of the clip
``face_boxes_valid``   (F,)          bool     which frames have a face box
``keypoints``          (F, 18, 3)    float32  OpenPose body keypoints: x, y in [0, 1], confidence (0: none, or
                                             outside the clip frame; all 0 for a video without keypoints.npz)
``face_keypoints``     (F, 68, 3)    float32  68 face landmarks, same convention
``frame_index``        (F,)          int64    source frame of each clip frame
``reference_index``    ()            int64    source frame of the reference
``clip_index``         ()            int64    dataset index of this clip (unique within an epoch)
``video_id``           str                    the video folder name
``figure_mask`` (syn)  (F, 1, H, W)  float32  1 on the dancer, 0 on the background
``turned`` (syn)       (F,)          bool     frames that show the dancer's back
=====================  ============  =======  ===============================================================

The two synthetic-only keys are present when every video of the split has ``ground_truth.npz``. A face box
with less than ``MIN_FACE_INSIDE`` of its area inside the clip frame (after the centre crop) counts as absent;
one partly inside is clipped to the frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler

from dancelcm.cli import MissingPathError
from dancelcm.data import layout
from dancelcm.data.reader import (
    DataError,
    FrameSource,
    SourceCache,
    find_source,
    read_faces,
    read_ground_truth,
    read_keypoints,
    read_meta,
)

log = logging.getLogger(__name__)

ON_ERROR = ("skip", "raise")
SCAN_MODES = ("header", "full")
# A face box with less of its area inside the clip frame than this is treated as not seen (a sliver at the edge).
MIN_FACE_INSIDE = 0.1
# meta.json's fps may differ from the container's by this much: containers round rates (layout.write_video
# stores whole numbers, 29.97 is often written as 30); more means meta.json describes another encoding.
FPS_TOLERANCE = 0.5  # frames per second, plus 1% of the rate


@dataclass(frozen=True)
class ClipSpec:
    """Which frames form a clip: ``num_frames`` frames, ``stride`` apart."""

    num_frames: int = 8
    stride: int = 2

    def __post_init__(self):
        if self.num_frames < 1 or self.stride < 1:
            raise ValueError(f"num_frames={self.num_frames} and stride={self.stride} must both be >= 1")

    @property
    def span(self) -> int:
        """Source frames covered by one clip."""
        return (self.num_frames - 1) * self.stride + 1


@dataclass(frozen=True)
class VideoEntry:
    """A video that passed the scan; only primitives, so datasets pickle cheaply into workers."""

    video_id: str
    directory: str
    video: str
    pose: str
    num_frames: int
    has_ground_truth: bool
    height: int  # stored frame size (the crop and the face boxes depend on it)
    width: int
    has_keypoints: bool  # keypoints.npz is optional: without it the keypoints are all zero (confidence 0)


@dataclass
class ScanReport:
    root: str
    split: str
    total: int
    entries: list[VideoEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, problem)

    @property
    def without_keypoints(self) -> list[str]:
        """Usable videos that have no keypoints.npz (their ``keypoints`` / ``face_keypoints`` are all zero)."""
        return [e.video_id for e in self.entries if not e.has_keypoints]

    def summary(self) -> str:
        head = f"{self.root} [{self.split}]: {len(self.entries)} of {self.total} videos usable"
        lines = [f"{head}, {len(self.skipped)} skipped:" if self.skipped else head]
        lines += [f"  - {path}: {problem}" for path, problem in self.skipped]
        if self.without_keypoints:
            ids = self.without_keypoints
            more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
            lines.append(
                f"  {len(ids)} of {len(self.entries)} usable videos have no keypoints.npz (optional): their keypoints "
                f"and face_keypoints are all zero (confidence 0): {', '.join(ids[:5])}{more}"
            )
        return "\n".join(lines)


def check_video(directory: Path, clip: ClipSpec, mode: str = "header") -> VideoEntry:
    """Open one video folder's streams and side files and check they agree; raises DataError."""
    if not directory.is_dir():
        raise DataError(directory, "listed in the split file but the folder does not exist")
    video_path, pose_path = find_source(directory, "video"), find_source(directory, "pose")
    video, pose = FrameSource(video_path), FrameSource(pose_path)
    n = len(video)
    # the first frame decodes (catches files that open but hold garbage)
    (h, w), (ph, pw) = video.get([0]).shape[1:3], pose.get([0]).shape[1:3]
    if len(pose) != n:
        raise DataError(
            pose_path, f"pose/video length mismatch: {len(pose)} pose frames, {n} video frames ({video_path.name})"
        )
    if (ph, pw) != (h, w):  # the crop would move the skeleton off the person
        raise DataError(
            pose_path,
            f"pose/video frame size mismatch: {pose_path.name} is {ph}x{pw}, {video_path.name} is {h}x{w} (H x W); "
            "render the pose maps at the video's size",
        )
    _check_fps(directory, video)
    if n < clip.span:
        raise DataError(
            video_path,
            f"has {n} frames, fewer than one clip needs ({clip.num_frames} frames at stride {clip.stride} span "
            f"{clip.span}); lower data.num_frames or data.stride, or drop this video",
        )
    read_faces(directory, n)
    kp = read_keypoints(directory, n)
    gt = read_ground_truth(directory, n)
    if mode == "full":
        video.check_all()
        pose.check_all()
    return VideoEntry(
        directory.name, str(directory), str(video_path), str(pose_path), n, gt is not None, h, w, kp is not None
    )


def _check_fps(directory: Path, video: FrameSource) -> None:
    """meta.json's fps (when it records one) must match the video file's rate, up to the containers' rounding."""
    want, got = read_meta(directory).get("fps"), video.fps
    if want is None or got is None:  # no record, or a frames folder (no rate of its own)
        return
    if not isinstance(want, int | float):
        raise DataError(directory / "meta.json", f"fps={want!r} is not a number")
    if abs(want - got) > FPS_TOLERANCE + 0.01 * want:
        raise DataError(
            video.path,
            f"plays at {got:g} fps but {directory / 'meta.json'} says fps={want:g}: the video was re-encoded or "
            "meta.json belongs to another version of it; fix meta.json's fps or re-encode the video at that rate",
        )


def scan_videos(
    root: str | Path, split: str, clip: ClipSpec, mode: str = "header", on_error: str = "skip"
) -> ScanReport:
    """Check every video of a split (``mode='header'``: open and count; ``'full'``: decode every frame).

    With ``on_error='raise'`` the first bad video raises DataError; with ``'skip'`` it is left out and
    listed in the report. Readers are closed again: datasets open their own inside workers.
    """
    if mode not in SCAN_MODES:
        raise ValueError(f"data.scan={mode!r}: choose one of {SCAN_MODES}")
    if on_error not in ON_ERROR:
        raise ValueError(f"data.on_error={on_error!r}: choose one of {ON_ERROR}")
    root = Path(root)
    if not root.is_dir():
        raise MissingPathError(
            f"data.root={root} does not exist. Make the synthetic dataset with "
            f"`python -m dancelcm.data.synthesize out_dir={root}` or point data.root at a prepared dataset."
        )
    ids = layout.read_split(root, split)
    report = ScanReport(str(root), split, len(ids))
    for vid in ids:
        try:
            report.entries.append(check_video(layout.video_dir(root, vid), clip, mode))
        except DataError as e:
            if on_error == "raise":
                raise
            report.skipped.append((e.path, e.problem))
    if not report.entries:
        raise DataError(root, f"split '{split}' has no usable video.\n{report.summary()}")
    return report


def cover_transform(h: int, w: int, size: tuple[int, int]) -> tuple[int, int, float, float, float, float]:
    """Geometry of ``resize_center_crop`` for an ``h x w`` frame: the resized size ``(nh, nw)`` and the point
    transform ``(sx, sy, ox, oy)`` (``x' = x * sx - ox``), known before any frame is decoded."""
    th, tw = size
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    oy, ox = (nh - th) // 2, (nw - tw) // 2
    return nh, nw, nw / w, nh / h, float(ox), float(oy)


def resize_center_crop(
    x: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    """Resize (N, C, H, W) so it covers ``size`` (keeping aspect), then centre-crop.

    Returns the image and the point transform ``(sx, sy, ox, oy)``: ``x' = x * sx - ox``.
    """
    h, w = x.shape[-2:]
    th, tw = size
    nh, nw, sx, sy, ox, oy = cover_transform(h, w, size)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    return x[..., int(oy) : int(oy) + th, int(ox) : int(ox) + tw], (sx, sy, ox, oy)


def boxes_in_clip(
    boxes: list, h: int, w: int, size: tuple[int, int]
) -> tuple[list[np.ndarray | None], list[list[float] | None]]:
    """Face boxes (x0, y0, x1, y1 in pixels of an ``h x w`` video) seen through ``resize_center_crop`` to ``size``.

    Per frame: the box in [0, 1] of the clip, clipped to it, and the same visible part in source pixels (what the
    face crop is cut around); None for both where there is no box or less than ``MIN_FACE_INSIDE`` of its area is
    inside the clip (a face cropped away is absent, not an edge-padded crop of the frame border).
    """
    _, _, sx, sy, ox, oy = cover_transform(h, w, size)
    th, tw = size
    scale = np.array([sx / tw, sy / th, sx / tw, sy / th])
    offset = np.array([ox / tw, oy / th, ox / tw, oy / th])
    in_clip: list[np.ndarray | None] = []
    in_source: list[list[float] | None] = []
    for box in boxes:
        if box is None:
            in_clip.append(None)
            in_source.append(None)
            continue
        b = np.asarray(box, np.float64) * scale - offset
        c = np.clip(b, 0.0, 1.0)
        inside = max(c[2] - c[0], 0.0) * max(c[3] - c[1], 0.0)
        if inside <= 0 or inside < MIN_FACE_INSIDE * (b[2] - b[0]) * (b[3] - b[1]):
            in_clip.append(None)
            in_source.append(None)
            continue
        in_clip.append(c.astype(np.float32))
        in_source.append(list(box) if (c == b).all() else ((c + offset) / scale).tolist())
    return in_clip, in_source


def crop_square(image: torch.Tensor, box, scale: float, size: int) -> torch.Tensor:
    """Square crop (side = ``scale`` x the longer box side) around a box, edge-padded, resized to ``size``."""
    x0, y0, x1, y1 = box
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * scale
    h, w = image.shape[-2:]
    a0, b0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    a1, b1 = a0 + max(int(round(side)), 1), b0 + max(int(round(side)), 1)
    pad = (max(0, -a0), max(0, a1 - w), max(0, -b0), max(0, b1 - h))
    padded = F.pad(image[None], pad, mode="replicate")[0] if any(pad) else image
    crop = padded[:, b0 + pad[2] : b1 + pad[2], a0 + pad[0] : a1 + pad[0]]
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def face_video_from_clip(video: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, size: int) -> torch.Tensor:
    """The driving face video of a clip: per frame, a square crop around the face box (``boxes`` in ``[0, 1]`` of
    the clip, ``(F, 4)`` x0 y0 x1 y1), resized to ``size``; frames without a face are black (the pipeline's
    unconditional face is all -1). ``video`` ``(F, 3, H, W)`` in ``[-1, 1]`` -> ``(F, 3, size, size)``."""
    h, w = video.shape[-2:]
    out = torch.full((video.shape[0], 3, size, size), -1.0)
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    for k in range(video.shape[0]):
        if bool(valid[k]):
            box = (boxes[k].float() * scale).tolist()
            out[k] = crop_square(video[k].float(), box, 1.5, size)
    return out.clamp(-1, 1)


class TripletDataset(Dataset):
    """Map-style dataset of pose-video-face clips over scanned ``VideoEntry`` items.

    Item ``i`` is clip slot ``i % clips_per_video`` of video ``i // clips_per_video``. Keys may be plain
    ints or ``(i, epoch)`` pairs (what ``ClipSampler`` yields): training clips draw their start frame and
    reference frame from ``(seed, epoch, i)``, so a run is deterministic per seed and epoch whatever the
    worker count. Evaluation clips (``train=False``) are fixed: evenly spaced starts, the first
    face-visible frame as reference.

    Nothing is opened in ``__init__``: each worker opens its own readers on first use.
    """

    def __init__(
        self,
        entries: list[VideoEntry],
        clip: ClipSpec,
        resolution: int | tuple[int, int] = 64,
        face_size: int = 32,
        face_scale: float = 1.5,
        clips_per_video: int = 1,
        train: bool = True,
        seed: int = 0,
        on_error: str = "skip",
        decoded_cache_mb: float = 0.0,
    ):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r}: choose one of {ON_ERROR}")
        if not entries:
            raise ValueError("TripletDataset needs at least one video entry")
        self.entries = list(entries)
        self.clip = clip
        self.size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        self.face_size, self.face_scale = face_size, face_scale
        self.clips_per_video = clips_per_video
        self.train, self.seed, self.on_error = train, seed, on_error
        self.decoded_cache_mb = decoded_cache_mb
        self.with_ground_truth = all(e.has_ground_truth for e in self.entries)
        # Videos that failed while loading, counted across worker processes (shared memory).
        self.runtime_failures = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._cache: SourceCache | None = None
        self._side: dict[str, tuple] = {}  # per-process cache of the small side files of each video
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.entries) * self.clips_per_video

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None  # readers never cross process boundaries
        state["_side"] = {}
        return state

    def _side_files(self, e: VideoEntry) -> tuple:
        """(face boxes in the clip, the same in source pixels, keypoints, ground truth) of a video, read once per
        process (see ``boxes_in_clip``)."""
        if e.directory not in self._side:
            if len(self._side) >= 1024:
                self._side.clear()
            d = Path(e.directory)
            gt = read_ground_truth(d, e.num_frames) if self.with_ground_truth else None
            boxes = boxes_in_clip(read_faces(d, e.num_frames), e.height, e.width, self.size)
            self._side[e.directory] = (*boxes, read_keypoints(d, e.num_frames), gt)
        return self._side[e.directory]

    def __getitem__(self, key) -> dict:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), 0)
        n_videos = len(self.entries)
        for attempt in range(n_videos):
            # On a failure, move to the same slot of the next video: deterministic, never a silent repeat.
            i = (index + attempt * self.clips_per_video) % len(self)
            v = i // self.clips_per_video
            if v in self._bad:
                continue
            try:
                sample = self.load(i, epoch)
                sample["clip_index"] = torch.tensor(index)
                return sample
            except DataError as e:
                if self.on_error == "raise":
                    raise
                self._bad.add(v)
                self.runtime_failures += 1
                log.warning("skipping video %s while loading (data.on_error=skip): %s", self.entries[v].video_id, e)
        raise DataError(self.entries[0].directory, "every video of this dataset failed to load")

    def load(self, index: int, epoch: int = 0) -> dict:
        """Read and transform one clip; raises DataError naming the file on any problem."""
        if self._cache is None:
            self._cache = SourceCache(capacity=64, decoded_mb=self.decoded_cache_mb)
        e = self.entries[index // self.clips_per_video]
        slot = index % self.clips_per_video
        rng = np.random.default_rng([self.seed, epoch if self.train else 0, index])
        max_start = e.num_frames - self.clip.span
        if self.train:
            start = int(rng.integers(0, max_start + 1))
        else:
            start = round(slot * max_start / (self.clips_per_video - 1)) if self.clips_per_video > 1 else 0
        frames = start + self.clip.stride * np.arange(self.clip.num_frames)

        directory = Path(e.directory)
        boxes, source_boxes, kp, gt = self._side_files(e)
        with_face = [k for k, b in enumerate(boxes) if b is not None]
        if with_face:
            ref = int(rng.choice(with_face)) if self.train else with_face[0]
        else:
            ref = int(rng.integers(0, e.num_frames)) if self.train else 0

        raw = self._cache.get(Path(e.video)).get([*frames.tolist(), ref])  # (F + 1, H, W, 3) uint8
        raw_pose = self._cache.get(Path(e.pose)).get(frames.tolist())
        rgb = torch.from_numpy(raw).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        pose = torch.from_numpy(raw_pose).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        src_h, src_w = rgb.shape[-2:]
        if (src_h, src_w) != (e.height, e.width):
            raise DataError(e.video, f"frames are {src_h}x{src_w}, the scan found {e.height}x{e.width}")
        out, (sx, sy, ox, oy) = resize_center_crop(rgb, self.size)
        pose, _ = resize_center_crop(pose, self.size)
        h, w = self.size

        def to_clip(xy: np.ndarray) -> np.ndarray:  # pixel coords of the source -> [0, 1] of the clip
            return np.stack([(xy[..., 0] * sx - ox) / w, (xy[..., 1] * sy - oy) / h], axis=-1)

        face_boxes = np.zeros((len(frames), 4), np.float32)
        face_valid = np.zeros(len(frames), bool)
        for k, fi in enumerate(frames):
            if boxes[fi] is not None:
                face_boxes[k] = boxes[fi]
                face_valid[k] = True
        if boxes[ref] is not None:
            face = crop_square(rgb[-1], source_boxes[ref], self.face_scale, self.face_size)
        else:
            face = torch.zeros(3, self.face_size, self.face_size)

        body = np.zeros((len(frames), 18, 3), np.float32)
        face_kp = np.zeros((len(frames), 68, 3), np.float32)
        if kp is not None:
            for dst, src in ((body, kp[0]), (face_kp, kp[1])):
                dst[...] = src[frames]
                dst[..., :2] = to_clip(dst[..., :2])
                # cropped away: not visible (as `prepare` marks them), whatever the detector's confidence was
                outside = (dst[..., 0] < 0) | (dst[..., 0] >= 1) | (dst[..., 1] < 0) | (dst[..., 1] >= 1)
                dst[outside, 2] = 0.0

        sample = {
            "video": out[:-1].contiguous().clamp_(-1, 1),
            "pose": pose.contiguous().clamp_(-1, 1),
            "reference": out[-1].contiguous().clamp_(-1, 1),
            "face": face.clamp_(-1, 1),
            "face_valid": torch.tensor(boxes[ref] is not None),
            "face_boxes": torch.from_numpy(face_boxes),
            "face_boxes_valid": torch.from_numpy(face_valid),
            "keypoints": torch.from_numpy(body),
            "face_keypoints": torch.from_numpy(face_kp),
            "frame_index": torch.from_numpy(frames.astype(np.int64)),
            "reference_index": torch.tensor(ref, dtype=torch.int64),
            "video_id": e.video_id,
        }
        if self.with_ground_truth:
            if gt is None:
                raise DataError(directory / "ground_truth.npz", "missing, but the scan found it")
            mask = torch.from_numpy(gt["figure_mask"][frames]).float()[:, None]
            if mask.shape[-2:] != (src_h, src_w):
                raise DataError(
                    directory / "ground_truth.npz", f"mask size {tuple(mask.shape[-2:])} != video {(src_h, src_w)}"
                )
            sample["figure_mask"] = (resize_center_crop(mask, self.size)[0] > 0.5).float()
            sample["turned"] = torch.from_numpy(gt["turned"][frames])
        return sample


class ClipSampler(DistributedSampler):
    """Shards clip indices over DDP ranks (DataLoader workers then split each rank's share), and yields
    ``(index, epoch)`` keys so clip content depends only on the seed and the epoch.

    It subclasses ``DistributedSampler`` so Lightning uses it as is (no re-wrapping) and calls
    ``set_epoch`` each epoch; it also works without ``torch.distributed`` (one replica). When the
    number of clips does not divide by the world size, the last ranks repeat a few clips so every rank
    runs the same number of steps (DDP would hang otherwise); ``padding`` says how many.

    ``resume(epoch, done)`` makes the next pass over ``epoch`` skip its first ``done`` keys (exact
    mid-epoch resume: the skipped clips are not decoded); later passes are whole.
    """

    def __init__(
        self,
        dataset: Dataset,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            rank = dist.get_rank() if initialised else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.dataset, self.shuffle, self.seed = dataset, shuffle, seed
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0
        self.drop_last = False
        self.num_samples = -(-len(dataset) // num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.padding = self.total_size - len(dataset)
        self._resume: tuple[int, int] | None = None

    def resume(self, epoch: int, done: int) -> None:
        self._resume = (int(epoch), int(done))

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if self.padding:
            order = (order * (self.total_size // n + 1))[: self.total_size]
        keys = [(i, self.epoch) for i in order[self.rank : self.total_size : self.num_replicas]]
        if self._resume is not None and self._resume[0] == self.epoch:
            keys = keys[self._resume[1] :]
            self._resume = None
        return iter(keys)

    def __len__(self) -> int:
        return self.num_samples
