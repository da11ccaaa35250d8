"""Low-level readers for one video folder of the standard layout (see ``layout.py``).

Video files are decoded with decord at their native size (its own resize is unreliable at small sizes),
and with PyAV where decord cannot open or read a file: decord 0.6 rejects valid h264 files whose width is
not a multiple of 32 at some sizes (8, 16, 24, 48, 72 px: "from_size == to_size") and stops at the first
corrupt packet of a stream, where PyAV still reads the intact frames. Frame folders are read with Pillow.
Every failure is raised as ``DataError`` naming the file and the problem, so a caller can skip it or stop
with a message a user can act on.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np

from dancelcm.cli import UserError
from dancelcm.data import layout

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")
# Where each stream may live inside a video folder: a file stem or a frames folder.
SOURCES = {"video": ("video", "frames"), "pose": ("pose", "pose")}


class DataError(UserError, RuntimeError):
    """A problem with one file of a dataset; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def find_source(video_dir: Path, kind: str) -> Path:
    """Path of the ``video`` or ``pose`` stream of one video folder (a file or a frames folder)."""
    stem, folder = SOURCES[kind]
    for suffix in VIDEO_SUFFIXES:
        p = video_dir / f"{stem}{suffix}"
        if p.exists():
            return p
    if (video_dir / folder).is_dir():
        return video_dir / folder
    expected = f"{stem}.mp4 or a {folder}/ folder of images"
    raise DataError(video_dir, f"no {kind} found (expected {expected})")


class _DecordReader:
    """decord's random access (fast; the default)."""

    def __init__(self, path: Path):
        import decord

        self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)

    def __len__(self) -> int:
        return len(self._reader)

    def get(self, indices: list[int]) -> np.ndarray:
        return self._reader.get_batch(indices).asnumpy()

    @property
    def fps(self) -> float | None:
        return float(self._reader.get_avg_fps()) or None


class _PyAVReader:
    """Random access with PyAV: an index of every frame's timestamp (demuxed once, nothing decoded), then a
    seek to the keyframe before the first wanted frame and decoding forward. A decoding error, a frame that
    FFmpeg flags as corrupt, or a wanted frame that never came out is retried once from the start of the file
    (a seek can land badly in files with open GOPs), then raised."""

    def __init__(self, path: Path):
        import av

        self._container = av.open(str(path))
        if not self._container.streams.video:
            raise ValueError("no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_count = 1  # like decord: DataLoader workers are the parallelism
        pts, keys = [], []
        for packet in self._container.demux(self._stream):
            if packet.size and packet.pts is not None:
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        self._pts = sorted(pts)  # presentation order: frame i has timestamp _pts[i]
        self._index = {p: i for i, p in enumerate(self._pts)}
        self._keys = sorted(self._index[k] for k in keys) or [0]  # frame indices of the keyframes

    def __len__(self) -> int:
        return len(self._pts)

    @property
    def fps(self) -> float | None:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return float(rate) if rate else None

    def get(self, indices: list[int]) -> np.ndarray:
        try:
            frames = self._decode(sorted(set(indices)), from_start=False)
        except Exception:
            frames = self._decode(sorted(set(indices)), from_start=True)
        return np.stack([frames[i] for i in indices])

    def _decode(self, wanted: list[int], from_start: bool) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        frames, pos = None, -1  # the running decoder and the index of the last frame it gave
        corrupt = None  # a frame since the last keyframe that FFmpeg decoded with errors (later ones inherit them)
        for i in wanted:
            key = 0 if from_start else self._keys[bisect.bisect_right(self._keys, i) - 1]
            if frames is None or (not from_start and key > pos):  # a keyframe after pos: cheaper to seek
                self._container.seek(self._pts[key], stream=self._stream, backward=True, any_frame=False)
                frames, pos, corrupt = self._container.decode(self._stream), -1, None
            for frame in frames:
                j = self._index.get(frame.pts)
                if j is None:
                    continue
                pos = j
                corrupt = None if frame.key_frame else corrupt
                corrupt = j if frame.is_corrupt else corrupt
                if j == i:
                    if corrupt is not None:
                        raise ValueError(f"frame {corrupt} is corrupt (FFmpeg concealed a decoding error)")
                    out[i] = frame.to_ndarray(format="rgb24")
                if j >= i:
                    break
            if i not in out:
                raise ValueError(f"frame {i} was not decoded (the stream ended or skipped it)")
        return out


class FrameSource:
    """Random access to the frames of a video file or a frames folder, as uint8 (n, H, W, 3).

    Video files are read with decord; a file decord cannot open, or frames it cannot decode, are read
    with PyAV instead (from then on for that file). Only when both fail is the file called unreadable.
    """

    def __init__(self, path: Path):
        self.path = path
        self._reader: _DecordReader | _PyAVReader | None = None
        self._files: list[Path] | None = None
        if path.is_dir():
            try:
                self._files = layout.list_frame_files(path)
            except OSError as e:
                raise DataError(path, f"frames folder cannot be listed ({e})") from e
            if not self._files:
                raise DataError(path, f"frames folder has no images ({', '.join(layout.IMAGE_SUFFIXES)})")
        else:
            if path.stat().st_size == 0:
                raise DataError(path, "file is empty (0 bytes)")
            try:
                self._reader = _DecordReader(path)
            except Exception as e:  # decord raises RuntimeError / DECORDError with C++ context
                self._reader = self._fallback(f"decord cannot open it ({_short(e)})")
            if len(self._reader) == 0:
                raise DataError(path, "video has zero frames")

    def _fallback(self, why: str) -> _PyAVReader:
        """Switch this file to PyAV; DataError when PyAV cannot open it either."""
        try:
            reader = _PyAVReader(self.path)
        except Exception as e:
            raise DataError(
                self.path, f"cannot be opened as a video (corrupt or truncated?): {_short(e)}; {why}"
            ) from e
        log.debug("%s: %s; reading it with PyAV", self.path, why)
        return reader

    def __len__(self) -> int:
        return len(self._files) if self._files is not None else len(self._reader)

    def get(self, indices) -> np.ndarray:
        indices = [int(i) for i in indices]
        n = len(self)
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise DataError(self.path, f"frame indices {bad[:3]} out of range for {n} frames")
        if self._files is not None:
            return np.stack([self._read_image(self._files[i]) for i in indices])
        span = f"frame {indices[0]}" if len(indices) == 1 else f"frames {indices[0]}..{indices[-1]}"
        try:
            return self._reader.get(indices)
        except Exception as e:
            if isinstance(self._reader, _PyAVReader):
                raise DataError(self.path, f"{span} cannot be decoded (corrupt stream?): {_short(e)}") from e
            first = e
        self._reader = self._fallback(f"decord cannot decode {span} ({_short(first)})")
        try:
            return self._reader.get(indices)
        except Exception as e:
            raise DataError(
                self.path, f"{span} cannot be decoded (corrupt stream?): PyAV: {_short(e)}; decord: {_short(first)}"
            ) from e

    @property
    def fps(self) -> float | None:
        """The video file's average frame rate; None for a frames folder (it carries no rate)."""
        return self._reader.fps if self._reader is not None else None

    def frame_size(self) -> tuple[int, int]:
        if self._files is not None:
            from PIL import Image

            with Image.open(self._files[0]) as im:
                return im.height, im.width
        h, w, _ = self.get([0])[0].shape
        return h, w

    def check_all(self) -> None:
        """Decode every frame (a full scan); raises DataError on the first failure."""
        step = 16
        for s in range(0, len(self), step):
            self.get(range(s, min(s + step, len(self))))

    @staticmethod
    def _read_image(path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except Exception as e:
            raise DataError(path, f"image cannot be read: {_short(e)}") from e


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:200]


class DecodedSource:
    """A whole video decoded once and kept in memory (uint8), with FrameSource's ``get`` / ``len``."""

    def __init__(self, source: FrameSource):
        self.path = source.path
        self.frames = source.get(range(len(source)))

    def __len__(self) -> int:
        return len(self.frames)

    def get(self, indices) -> np.ndarray:
        return self.frames[np.asarray(list(indices), dtype=np.int64)]

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes


class SourceCache:
    """A per-process LRU of open frame sources (opened lazily inside each DataLoader worker).

    With ``decoded_mb > 0`` videos are decoded whole on first use and kept decoded, up to that many
    megabytes per process: small datasets (the synthetic dancers: ~400 MB at 64 px) then cost no
    decoding after the first epoch. Larger videos stay as random-access readers.
    """

    def __init__(self, capacity: int = 8, decoded_mb: float = 0.0):
        self.capacity = capacity
        self.budget = int(decoded_mb * 2**20)
        self._items: OrderedDict[str, FrameSource | DecodedSource] = OrderedDict()
        self._decoded_bytes = 0

    def get(self, path: Path) -> FrameSource | DecodedSource:
        key = str(path)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        src: FrameSource | DecodedSource = FrameSource(path)
        if self.budget > 0:
            src = DecodedSource(src)
            self._decoded_bytes += src.nbytes
        self._items[key] = src
        while len(self._items) > 1 and (
            (self.budget <= 0 and len(self._items) > self.capacity)
            or (self.budget > 0 and self._decoded_bytes > self.budget)
        ):
            _, old = self._items.popitem(last=False)
            if isinstance(old, DecodedSource):
                self._decoded_bytes -= old.nbytes
        return src


def read_frames(video_dir: Path, kind: str = "video") -> np.ndarray:
    src = FrameSource(find_source(video_dir, kind))
    return src.get(range(len(src)))


def read_meta(video_dir: Path) -> dict:
    path = video_dir / "meta.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from e


def read_faces(video_dir: Path, num_frames: int) -> list[list[float] | None]:
    """Per-frame face boxes (x0, y0, x1, y1) in pixels, None where no face was seen.

    A missing ``faces.json`` is valid: every frame is then face-less (the face condition is absent).
    """
    path = video_dir / "faces.json"
    if not path.exists():
        return [None] * num_frames
    try:
        boxes = json.loads(path.read_text())["boxes"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(path, f'expected {{"boxes": [[x0, y0, x1, y1] | null, ...]}} ({type(e).__name__}: {e})') from e
    if len(boxes) != num_frames:
        raise DataError(path, f"has {len(boxes)} face boxes for a video of {num_frames} frames")
    for i, b in enumerate(boxes):
        if b is not None and (len(b) != 4 or not (b[2] > b[0] and b[3] > b[1])):
            raise DataError(path, f"face box {i} = {b} is not [x0, y0, x1, y1] with x1 > x0 and y1 > y0")
    return boxes


def read_keypoints(video_dir: Path, num_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(body (F, 18, 3), face (F, 68, 3)) in pixels with confidence, or None without keypoints.npz."""
    path = video_dir / "keypoints.npz"
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            body = data["body"].astype(np.float32)
            face = data["face"].astype(np.float32) if "face" in data else np.zeros((len(body), 68, 3), np.float32)
    except Exception as e:
        raise DataError(path, f"cannot be read as keypoints (need arrays 'body' (F,18,3), 'face' (F,68,3)): {e}") from e
    if body.shape[1:] != (18, 3) or face.shape[1:] != (68, 3):
        raise DataError(path, f"keypoint shapes body {body.shape} / face {face.shape}; expected (F,18,3) / (F,68,3)")
    if len(body) != num_frames or len(face) != num_frames:
        raise DataError(path, f"has keypoints for {len(body)} frames, the video has {num_frames}")
    return body, face


def read_ground_truth(video_dir: Path, num_frames: int) -> dict[str, np.ndarray] | None:
    """Synthetic-only ground truth: figure_mask (F, H, W) bool, turned (F,) bool; None when absent."""
    path = video_dir / "ground_truth.npz"
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            out = {"figure_mask": layout.unpack_mask(data), "turned": data["turned"].astype(bool)}
    except Exception as e:
        raise DataError(path, f"cannot be read as ground truth: {e}") from e
    if len(out["turned"]) != num_frames or len(out["figure_mask"]) != num_frames:
        raise DataError(path, f"has ground truth for {len(out['turned'])} frames, the video has {num_frames}")
    return out
