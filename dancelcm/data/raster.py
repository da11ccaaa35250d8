"""A tiny anti-aliased 2-D rasteriser for the synthetic dancers.

Every shape is a signed distance function (SDF, in pixels, negative inside); coverage is
``clip(0.5 - sdf, 0, 1)``, which anti-aliases edges to about one pixel. Shapes are evaluated only
inside their bounding box, so a 256x256 frame with ~40 shapes costs a few milliseconds.

This is deliberately small and numpy-only: the generator must run in CI on two CPU cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Color = Sequence[float] | np.ndarray
# A colour source is a fixed RGB triple in [0, 1] or a function (xs, ys) -> (h, w, 3) array (patterns).
ColorSource = Color | Callable[[np.ndarray, np.ndarray], np.ndarray]
SDF = Callable[[np.ndarray, np.ndarray], np.ndarray]


def sdf_capsule(p0: Sequence[float], p1: Sequence[float], radius: float) -> SDF:
    ax, ay = float(p0[0]), float(p0[1])
    dx, dy = float(p1[0]) - ax, float(p1[1]) - ay
    len2 = max(dx * dx + dy * dy, 1e-9)

    def f(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / len2, 0.0, 1.0)
        return np.hypot(xs - ax - t * dx, ys - ay - t * dy) - radius

    return f


def sdf_ellipse(center: Sequence[float], rx: float, ry: float) -> SDF:
    """Approximate ellipse SDF (exact for circles); good enough for one-pixel anti-aliasing."""
    cx, cy = float(center[0]), float(center[1])
    rx, ry = max(float(rx), 1e-3), max(float(ry), 1e-3)
    rmin = min(rx, ry)

    def f(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return (np.hypot((xs - cx) / rx, (ys - cy) / ry) - 1.0) * rmin

    return f


def sdf_ring(center: Sequence[float], radius: float, thickness: float) -> SDF:
    circle = sdf_ellipse(center, radius, radius)
    return lambda xs, ys: np.abs(circle(xs, ys)) - thickness / 2.0


def sdf_convex_polygon(points: np.ndarray) -> SDF:
    """Signed distance (exact inside, a lower bound outside) to a convex polygon in either winding."""
    pts = np.asarray(points, dtype=np.float64)
    # Make the winding counter-clockwise in image coordinates (y down) so normals point outwards.
    area = np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
    if area < 0:
        pts = pts[::-1]
    edges = np.roll(pts, -1, axis=0) - pts
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9)

    def f(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        d = None
        for (px, py), (nx, ny) in zip(pts, normals):
            e = (xs - px) * nx + (ys - py) * ny
            d = e if d is None else np.maximum(d, e)
        return d

    return f


class Canvas:
    """An RGB float image in [0, 1] plus a figure-coverage mask, drawn into with SDF shapes."""

    def __init__(self, height: int, width: int, background: np.ndarray | None = None):
        self.height, self.width = height, width
        self.image = np.zeros((height, width, 3), np.float32) if background is None else background.astype(np.float32)
        self.mask = np.zeros((height, width), np.float32)
        # Pixel centres.
        self._ys, self._xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5

    def draw(
        self,
        sdf: SDF,
        bbox: Sequence[float],
        color: ColorSource,
        figure: bool = True,
        opacity: float = 1.0,
    ) -> None:
        """Composite ``color`` where ``sdf < 0`` inside ``bbox = (x0, y0, x1, y1)`` (pixels)."""
        x0 = max(int(np.floor(bbox[0])) - 1, 0)
        y0 = max(int(np.floor(bbox[1])) - 1, 0)
        x1 = min(int(np.ceil(bbox[2])) + 2, self.width)
        y1 = min(int(np.ceil(bbox[3])) + 2, self.height)
        if x1 <= x0 or y1 <= y0:
            return
        xs, ys = self._xs[y0:y1, x0:x1], self._ys[y0:y1, x0:x1]
        alpha = np.clip(0.5 - sdf(xs, ys), 0.0, 1.0).astype(np.float32) * opacity
        if not alpha.any():
            return
        col = color(xs, ys) if callable(color) else np.asarray(color, np.float32)[None, None, :]
        region = self.image[y0:y1, x0:x1]
        region += alpha[..., None] * (col - region)
        if figure:
            m = self.mask[y0:y1, x0:x1]
            np.maximum(m, alpha, out=m)

    # Convenience wrappers -------------------------------------------------------------------------
    def capsule(self, p0, p1, radius: float, color: ColorSource, **kw) -> None:
        r = radius + 1
        bbox = (min(p0[0], p1[0]) - r, min(p0[1], p1[1]) - r, max(p0[0], p1[0]) + r, max(p0[1], p1[1]) + r)
        self.draw(sdf_capsule(p0, p1, radius), bbox, color, **kw)

    def ellipse(self, center, rx: float, ry: float, color: ColorSource, **kw) -> None:
        bbox = (center[0] - rx - 1, center[1] - ry - 1, center[0] + rx + 1, center[1] + ry + 1)
        self.draw(sdf_ellipse(center, rx, ry), bbox, color, **kw)

    def polygon(self, points: np.ndarray, color: ColorSource, **kw) -> None:
        pts = np.asarray(points)
        bbox = (*(pts.min(axis=0) - 1), *(pts.max(axis=0) + 1))
        self.draw(sdf_convex_polygon(pts), bbox, color, **kw)

    def to_uint8(self) -> np.ndarray:
        return (np.clip(self.image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
