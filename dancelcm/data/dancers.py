"""Procedural 2-D dancers: identities, dance motion and the renderer.

A dancer is a cartoon body (capsule limbs, a polygon torso, a spherical head) driven by joint angles
that follow per-video dance programmes (tempo, amplitudes, phases, sways, leans) plus turns about the
vertical axis. Turning is rendered as a real rotation: left/right joints swap sides, the face moves
across the head sphere and disappears, and the *back* of the dancer appears: hair covering the head
and a back pattern on the shirt that is drawn from an identity-specific set and is never visible in a
front-facing reference frame. Neither the reference image nor the pose determines it, which is what
makes few-step samplers blur (they average over the possible backs).

Everything is deterministic given a ``numpy.random.Generator``.
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass, field

import numpy as np

from dancelcm.data.pose import BODY_INDEX, NUM_BODY, NUM_FACE
from dancelcm.data.raster import Canvas, sdf_convex_polygon, sdf_ellipse, sdf_ring

FRONT_PATTERNS = ("solid", "hstripes", "vstripes", "emblem", "two_tone")
BACK_PATTERNS = ("checker", "diagonal", "cross", "big_dot", "bars")
HAIR_STYLES = ("short", "long", "bun")
SKIN_TONES = (
    np.array(
        [[255, 224, 196], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36], [92, 56, 30]],
        np.float32,
    )
    / 255.0
)
HAIR_COLORS = (
    np.array([[20, 15, 10], [70, 40, 20], [140, 90, 40], [220, 190, 110], [160, 50, 20], [90, 90, 95]], np.float32)
    / 255.0
)

# Body proportions in units of the figure height (the head-top-to-ankle distance when standing).
HEAD_R, NECK, TORSO, THIGH, SHIN, UPPER_ARM, FOREARM = 0.12, 0.04, 0.29, 0.215, 0.205, 0.17, 0.16


def _hsv(h: float, s: float, v: float) -> list[float]:
    return list(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _distinct_color(rng: np.random.Generator, avoid: list[list[float]], min_dist: float = 0.35) -> list[float]:
    for _ in range(50):
        c = _hsv(rng.random(), rng.uniform(0.45, 0.95), rng.uniform(0.35, 0.95))
        if all(np.linalg.norm(np.subtract(c, a)) > min_dist for a in avoid):
            return c
    return c


@dataclass
class Identity:
    """Appearance of one person; the same identity may appear in several videos."""

    skin: list[float]
    hair: list[float]
    hair_style: str
    shirt: list[float]
    front_pattern: str
    front_color: list[float]
    back_pattern: str
    back_color: list[float]
    long_sleeves: bool
    pants: list[float]
    shoes: list[float]
    eye_color: list[float]
    eye_size: float
    eye_spacing: float
    mouth_width: float
    lips: list[float]
    brow_thickness: float
    glasses: bool
    beard: bool
    height: float  # figure height as a fraction of the frame height
    shoulder: float  # shoulder half-width (figure units)
    hip: float
    arm_r: float
    leg_r: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Identity:
        skin = list(SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.05))
        hair = list(HAIR_COLORS[rng.integers(len(HAIR_COLORS))])
        shirt = _distinct_color(rng, [skin])
        front_color = _distinct_color(rng, [shirt, skin])
        back_color = _distinct_color(rng, [shirt])
        pants = _distinct_color(rng, [shirt, skin], 0.25)
        return cls(
            skin=skin,
            hair=hair,
            hair_style=str(rng.choice(HAIR_STYLES)),
            shirt=shirt,
            front_pattern=str(rng.choice(FRONT_PATTERNS)),
            front_color=front_color,
            back_pattern=str(rng.choice(BACK_PATTERNS)),
            back_color=back_color,
            long_sleeves=bool(rng.random() < 0.5),
            pants=pants,
            shoes=list(np.full(3, rng.uniform(0.05, 0.3)) if rng.random() < 0.6 else _hsv(rng.random(), 0.6, 0.8)),
            eye_color=_hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.8)),
            eye_size=float(rng.uniform(0.8, 1.35)),
            eye_spacing=float(rng.uniform(0.33, 0.5)),
            mouth_width=float(rng.uniform(0.22, 0.5)),
            lips=_hsv(rng.uniform(-0.05, 0.05), rng.uniform(0.4, 0.8), rng.uniform(0.5, 0.9)),
            brow_thickness=float(rng.uniform(0.06, 0.14)),
            glasses=bool(rng.random() < 0.3),
            beard=bool(rng.random() < 0.2),
            height=float(rng.uniform(0.74, 0.86)),
            shoulder=float(rng.uniform(0.12, 0.17)),
            hip=float(rng.uniform(0.075, 0.105)),
            arm_r=float(rng.uniform(0.028, 0.04)),
            leg_r=float(rng.uniform(0.036, 0.052)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Turn:
    start: float  # seconds
    duration: float
    kind: str  # "spin": 0 -> 2pi; "back": 0 -> pi, hold, pi -> 2pi
    hold: float = 0.0

    def angle(self, t: float) -> float:
        if self.kind == "spin":
            return 2 * np.pi * _smoothstep((t - self.start) / self.duration)
        half = self.duration / 2
        a = np.pi * _smoothstep((t - self.start) / half)
        b = np.pi * _smoothstep((t - self.start - half - self.hold) / half)
        return a + b

    @property
    def end(self) -> float:
        return self.start + self.duration + self.hold


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class DanceProgramme:
    """Joint-angle programme of one video: sinusoids on a slightly warped beat, plus turns."""

    freq: float  # move cycles per second
    warp: float  # tempo wobble
    arm_base: tuple[float, float]
    arm_amp: tuple[float, float]
    arm_phase: tuple[float, float]
    arm_mult: float
    elbow_base: tuple[float, float]
    elbow_amp: tuple[float, float]
    hip_amp: float
    knee_amp: float
    leg_phase: float
    sway_amp: float
    sway_mult: float
    lean_amp: float
    tilt_amp: float
    center_x: float
    turns: list[Turn] = field(default_factory=list)

    @classmethod
    def sample(cls, rng: np.random.Generator, duration: float) -> DanceProgramme:
        amp = rng.uniform(0.5, 1.2)
        style = rng.choice(["sync", "alt", "one"])
        a0, a1 = rng.uniform(0.4, 1.3, size=2) * amp
        if style == "one":
            a1 *= 0.3
        phases = (0.0, 0.0 if style == "sync" else np.pi)
        turns: list[Turn] = []
        n_turns = int(rng.choice([0, 1, 1, 2]))
        t = rng.uniform(0.5, 1.2)
        for _ in range(n_turns):
            kind = str(rng.choice(["spin", "back"]))
            dur = rng.uniform(0.8, 1.6)
            hold = rng.uniform(0.3, 1.0) if kind == "back" else 0.0
            if t + dur + hold > duration - 0.2:
                break
            turns.append(Turn(float(t), float(dur), kind, float(hold)))
            t += dur + hold + rng.uniform(0.4, 1.5)
        return cls(
            freq=float(rng.uniform(70, 150) / 120.0),
            warp=float(rng.uniform(0.0, 0.5)),
            arm_base=tuple(rng.uniform(0.15, 0.6, size=2)),
            arm_amp=(float(a0), float(a1)),
            arm_phase=(phases[0] + rng.uniform(-0.3, 0.3), phases[1] + rng.uniform(-0.3, 0.3)),
            arm_mult=float(rng.choice([1.0, 1.0, 2.0])),
            elbow_base=tuple(rng.uniform(0.0, 0.7, size=2)),
            elbow_amp=tuple(rng.uniform(0.0, 0.9, size=2) * amp),
            hip_amp=float(rng.uniform(0.05, 0.4) * amp),
            knee_amp=float(rng.uniform(0.0, 0.7) * amp),
            leg_phase=float(rng.choice([0.0, np.pi])),
            sway_amp=float(rng.uniform(0.0, 0.1) * amp),
            sway_mult=float(rng.choice([0.5, 1.0])),
            lean_amp=float(rng.uniform(0.0, 0.15) * amp),
            tilt_amp=float(rng.uniform(0.0, 0.15)),
            center_x=float(rng.uniform(0.42, 0.58)),
            turns=turns,
        )

    def facing(self, t: float) -> float:
        """Rotation about the vertical axis in radians (0 = facing the camera, pi = back)."""
        return float(sum(turn.angle(t) for turn in self.turns))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FramePose:
    joints: np.ndarray  # (18, 2) pixel positions of the OpenPose body keypoints
    visible: np.ndarray  # (18,) bool
    face: np.ndarray  # (68, 3) x, y, visibility
    theta: float  # facing angle
    head: tuple[float, float, float]  # centre x, y, radius
    tilt: float


def _face_landmarks(identity: Identity) -> np.ndarray:
    """The 68 iBUG landmarks as (longitude phi on the head sphere, y in head radii)."""
    pts = []
    for p in np.linspace(-1.25, 1.25, 17):  # jaw
        pts.append((p, 0.12 + 0.72 * np.sqrt(max(0.0, 1 - (p / 1.4) ** 2))))
    for side in (-1, 1):  # brows 17-21 (right), 22-26 (left)
        for p in np.linspace(0.15, 0.85, 5)[::-side]:
            pts.append((side * p * identity.eye_spacing * 1.9, -0.33 - 0.06 * np.sin(np.pi * p)))
    for y in np.linspace(-0.22, 0.1, 4):  # nose bridge 27-30
        pts.append((0.0, y))
    for p in np.linspace(-0.16, 0.16, 5):  # nose bottom 31-35
        pts.append((p, 0.17))
    for side in (-1, 1):  # eyes 36-41, 42-47
        cx = side * identity.eye_spacing * 1.5
        for a in np.linspace(0, 2 * np.pi, 7)[:-1]:
            pts.append((cx + 0.18 * np.cos(a + np.pi), -0.07 + 0.08 * identity.eye_size * np.sin(a)))
    mw = identity.mouth_width * 1.3
    for a in np.linspace(0, 2 * np.pi, 13)[:-1]:  # outer lip 48-59
        pts.append((mw * np.cos(np.pi + a), 0.45 + 0.11 * np.sin(a)))
    for a in np.linspace(0, 2 * np.pi, 9)[:-1]:  # inner lip 60-67
        pts.append((0.7 * mw * np.cos(np.pi + a), 0.45 + 0.04 * np.sin(a)))
    arr = np.array(pts, np.float32)
    assert arr.shape == (NUM_FACE, 2)
    return arr


def compute_pose(identity: Identity, prog: DanceProgramme, t: float, size: int) -> FramePose:
    """Joint positions (pixels) of the dancer at time ``t`` in a ``size`` x ``size`` frame."""
    u = identity.height * size  # one figure unit in pixels
    theta = prog.facing(t)
    c = np.cos(theta)
    ph = 2 * np.pi * prog.freq * t + prog.warp * np.sin(2 * np.pi * prog.freq * t / 3.0)
    j = np.zeros((NUM_BODY, 2), np.float64)
    vis = np.ones(NUM_BODY, bool)

    # Legs relative to the pelvis, then drop the pelvis so the lower foot touches the ground.
    legs = {}
    for k, (name, side) in enumerate((("r", -1), ("l", 1))):
        hip_a = 0.12 + prog.hip_amp * (0.5 + 0.5 * np.sin(ph + prog.leg_phase * k))
        knee_b = prog.knee_amp * (0.5 + 0.5 * np.sin(2 * ph + prog.leg_phase * k))
        hip = np.array([side * identity.hip * u * c, 0.0])
        knee = hip + THIGH * u * np.array([side * np.sin(hip_a) * c, np.cos(hip_a)])
        shin_a = hip_a - knee_b
        ankle = knee + SHIN * u * np.array([side * np.sin(shin_a) * c, np.cos(shin_a)])
        legs[name] = (hip, knee, ankle)
    ground = 0.965 * size
    lowest = max(legs["r"][2][1], legs["l"][2][1])
    pelvis = np.array([prog.center_x * size + prog.sway_amp * size * np.sin(prog.sway_mult * ph), ground - lowest])
    for name in ("r", "l"):
        for part, p in zip(("hip", "knee", "ankle"), legs[name]):
            j[BODY_INDEX[f"{name}_{part}"]] = pelvis + p

    lean = prog.lean_amp * np.sin(ph * 0.5)
    neck = pelvis + TORSO * u * np.array([np.sin(lean), -np.cos(lean)])
    j[BODY_INDEX["neck"]] = neck
    for k, (name, side) in enumerate((("r", -1), ("l", 1))):
        a = prog.arm_base[k] + prog.arm_amp[k] * (0.5 + 0.5 * np.sin(prog.arm_mult * ph + prog.arm_phase[k]))
        a = float(np.clip(a, 0.05, 2.9))
        e = prog.elbow_base[k] + prog.elbow_amp[k] * (0.5 + 0.5 * np.sin(prog.arm_mult * ph + prog.arm_phase[k] + 1.0))
        sh = neck + np.array([side * identity.shoulder * u * c, 0.03 * u])
        el = sh + UPPER_ARM * u * np.array([side * np.sin(a) * c, np.cos(a)])
        wr = el + FOREARM * u * np.array([side * np.sin(a + e) * c, np.cos(a + e)])
        j[BODY_INDEX[f"{name}_shoulder"]], j[BODY_INDEX[f"{name}_elbow"]], j[BODY_INDEX[f"{name}_wrist"]] = sh, el, wr

    tilt = prog.tilt_amp * np.sin(ph * 0.5 + 0.7)
    hr = HEAD_R * u
    head_c = neck + (NECK * u + hr) * np.array([np.sin(lean + tilt), -np.cos(lean + tilt)])

    def on_head(phi: float, y: float) -> tuple[np.ndarray, float]:
        view = phi + theta
        return head_c + hr * np.array([np.sin(view), y]), float(np.cos(view))

    nose, cn = on_head(0.0, 0.12)
    j[BODY_INDEX["nose"]], vis[BODY_INDEX["nose"]] = nose, cn > 0.25
    for name, phi in (("r", -0.55), ("l", 0.55)):
        p, cv = on_head(phi, -0.07)
        j[BODY_INDEX[f"{name}_eye"]], vis[BODY_INDEX[f"{name}_eye"]] = p, cv > 0.25
        p, cv = on_head(np.sign(phi) * 1.45, 0.0)
        j[BODY_INDEX[f"{name}_ear"]], vis[BODY_INDEX[f"{name}_ear"]] = p, cv > -0.2

    lm = _face_landmarks(identity)
    face = np.zeros((NUM_FACE, 3), np.float32)
    for i, (phi, y) in enumerate(lm):
        p, cv = on_head(float(phi), float(y))
        face[i] = (p[0], p[1], 1.0 if (cv > 0.1 and cn > 0.3) else 0.0)
    return FramePose(j.astype(np.float32), vis, face, theta, (float(head_c[0]), float(head_c[1]), float(hr)), tilt)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _torso_pattern(identity: Identity, axis_o, axis_v, axis_u, half_w: float, length: float, back: bool):
    """Colour function of the shirt in torso coordinates (u across in [-1, 1], v down in [0, 1])."""
    base = np.asarray(identity.shirt, np.float32)
    other = np.asarray(identity.back_color if back else identity.front_color, np.float32)
    kind = identity.back_pattern if back else identity.front_pattern

    def f(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        dx, dy = xs - axis_o[0], ys - axis_o[1]
        v = (dx * axis_v[0] + dy * axis_v[1]) / length
        uu = (dx * axis_u[0] + dy * axis_u[1]) / max(half_w, 1e-3)
        if back:
            uu = -uu
        if kind == "solid":
            w = np.zeros_like(v)
        elif kind == "hstripes":
            w = (np.sin(v * 2 * np.pi * 3.5) > 0.3).astype(np.float32)
        elif kind == "vstripes":
            w = (np.sin(uu * np.pi * 2.5) > 0.3).astype(np.float32)
        elif kind == "emblem":
            w = (np.hypot(uu * 0.9, (v - 0.3) * 2.2) < 0.45).astype(np.float32)
        elif kind == "two_tone":
            w = (v > 0.55).astype(np.float32)
        elif kind == "checker":
            w = ((np.floor(uu * 2.0) + np.floor(v * 4.0)) % 2).astype(np.float32)
        elif kind == "diagonal":
            w = (np.sin((uu + 2 * v) * np.pi * 2.0) > 0.0).astype(np.float32)
        elif kind == "cross":
            w = ((np.abs(uu) < 0.25) | (np.abs(v - 0.38) < 0.11)).astype(np.float32)
        elif kind == "big_dot":
            w = (np.hypot(uu, (v - 0.45) * 2.0) < 0.7).astype(np.float32)
        elif kind == "bars":
            w = ((np.abs(np.abs(uu) - 0.45) < 0.18) & (v > 0.15) & (v < 0.8)).astype(np.float32)
        else:  # pragma: no cover - guarded by the pattern tuples
            raise ValueError(f"unknown shirt pattern {kind!r}")
        return base[None, None] + w[..., None] * (other - base)[None, None]

    return f


def render_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A static background: vertical gradient, a floor band and a few soft shapes."""
    top, bottom = (
        np.array(_hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.5, 0.95))),
        np.array(_hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.4, 0.9))),
    )
    g = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(top * (1 - g) + bottom * g, (size, size, 3)).astype(np.float32).copy()
    canvas = Canvas(size, size, img)
    for _ in range(int(rng.integers(2, 5))):
        col = _hsv(rng.random(), rng.uniform(0.1, 0.4), rng.uniform(0.4, 0.95))
        cx, cy = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            r = rng.uniform(0.05, 0.2) * size
            canvas.ellipse((cx, cy), r, r, col, figure=False, opacity=0.6)
        else:
            w, h = rng.uniform(0.05, 0.3, 2) * size
            canvas.polygon(
                np.array([[cx, cy], [cx + w, cy], [cx + w, cy + h], [cx, cy + h]]), col, figure=False, opacity=0.6
            )
    floor = 0.93 * size
    canvas.polygon(
        np.array([[0, floor], [size, floor], [size, size], [0, size]]),
        _hsv(rng.random(), rng.uniform(0.1, 0.4), rng.uniform(0.25, 0.6)),
        figure=False,
    )
    return canvas.image


def render_dancer(identity: Identity, pose: FramePose, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw the dancer over ``background``; returns (uint8 RGB frame, float figure coverage in [0, 1])."""
    size = background.shape[0]
    cv = Canvas(size, size, background.copy())
    j = {name: pose.joints[i] for name, i in BODY_INDEX.items()}
    u = identity.height * size
    c = float(np.cos(pose.theta))
    back = c < 0
    hx, hy, hr = pose.head
    arm_r, leg_r = identity.arm_r * u, identity.leg_r * u

    def long_hair() -> None:
        if identity.hair_style == "long":
            cv.ellipse((hx, hy + 0.9 * hr), 1.15 * hr, 1.5 * hr, identity.hair)

    # Legs and shoes.
    for s in ("r", "l"):
        cv.capsule(j[f"{s}_hip"], j[f"{s}_knee"], leg_r, identity.pants)
        cv.capsule(j[f"{s}_knee"], j[f"{s}_ankle"], leg_r * 0.9, identity.pants)
        cv.ellipse(j[f"{s}_ankle"] + np.array([0, 0.3 * leg_r]), leg_r * 1.5, leg_r * 0.9, identity.shoes)
    if not back:
        long_hair()
    # Neck and torso.
    cv.capsule(j["neck"], j["neck"] + np.array([hx - j["neck"][0], hy - j["neck"][1]]) * 0.5, 0.45 * hr, identity.skin)
    depth = 0.06 * u
    neck, mid_hip = j["neck"], (j["r_hip"] + j["l_hip"]) / 2
    axis = mid_hip - neck
    length = float(np.linalg.norm(axis)) + 1e-6
    axis_v = axis / length
    axis_u = np.array([-axis_v[1], axis_v[0]])
    sw = max(identity.shoulder * u * abs(c), depth) + arm_r * 0.8
    hw = max(identity.hip * u * abs(c), depth) + leg_r * 0.8
    top, bot = neck + axis_v * 0.01 * u, mid_hip + axis_v * 0.05 * u
    quad = np.array([top - axis_u * sw, top + axis_u * sw, bot + axis_u * hw, bot - axis_u * hw])
    pattern = _torso_pattern(identity, top, axis_v, axis_u * np.sign(c if c != 0 else 1.0), sw, length, back)
    cv.draw(sdf_convex_polygon(quad), (*(quad.min(0) - 1), *(quad.max(0) + 1)), pattern)
    # Arms: sleeves in shirt colour, skin below.
    for s in ("r", "l"):
        sh, el, wr = j[f"{s}_shoulder"], j[f"{s}_elbow"], j[f"{s}_wrist"]
        if identity.long_sleeves:
            cv.capsule(sh, el, arm_r, identity.shirt)
            cv.capsule(el, wr, arm_r * 0.9, identity.shirt)
        else:
            cv.capsule(sh, el, arm_r, identity.skin)
            cv.capsule(sh, sh + (el - sh) * 0.5, arm_r * 1.15, identity.shirt)
            cv.capsule(el, wr, arm_r * 0.9, identity.skin)
        cv.ellipse(wr, arm_r * 1.2, arm_r * 1.2, identity.skin)
    if back:
        long_hair()
    _render_head(cv, identity, pose)
    return cv.to_uint8(), np.clip(cv.mask, 0.0, 1.0)


def _render_head(cv: Canvas, identity: Identity, pose: FramePose) -> None:
    hx, hy, hr = pose.head
    theta = pose.theta
    skin = np.asarray(identity.skin, np.float32)
    hair = np.asarray(identity.hair, np.float32)
    hairline = -0.42

    def head_color(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        # Map each pixel of the head disc to a longitude on the head sphere: hair covers the back.
        yn = np.clip((ys - hy) / hr, -0.999, 0.999)
        xn = (xs - hx) / hr / np.sqrt(1 - yn**2)
        view = np.arcsin(np.clip(xn, -1, 1))
        body_lon = view - theta
        is_hair = (np.cos(body_lon) < 0.05) | (yn < hairline + 0.15 * np.cos(body_lon * 2) ** 2)
        if identity.beard:
            is_hair |= (np.cos(body_lon) > 0.3) & (yn > 0.55)
        w = is_hair.astype(np.float32)[..., None]
        return skin[None, None] * (1 - w) + hair[None, None] * w

    cv.draw(sdf_ellipse((hx, hy), hr, hr), (hx - hr - 1, hy - hr - 1, hx + hr + 1, hy + hr + 1), head_color)
    if identity.hair_style == "bun":
        bx = hx + hr * 0.2 * np.sin(theta)
        cv.ellipse((bx, hy - 1.05 * hr), 0.42 * hr, 0.36 * hr, identity.hair)

    def feature(phi: float, y: float) -> tuple[float, float, float]:
        view = phi + theta
        return hx + hr * np.sin(view), hy + hr * y, float(np.cos(view))

    # Eyes: white, iris; brows; glasses.
    for side in (-1, 1):
        phi = side * identity.eye_spacing * 1.5
        ex, ey, vis = feature(phi, -0.07)
        if vis > 0.15:
            rx, ry = 0.2 * hr * vis * identity.eye_size, 0.15 * hr * identity.eye_size
            cv.ellipse((ex, ey), rx, ry, (0.97, 0.97, 0.97))
            cv.ellipse((ex, ey), 0.12 * hr * vis * identity.eye_size, 0.12 * hr * identity.eye_size, identity.eye_color)
            bx, by, _ = feature(phi, -0.34)
            cv.capsule(
                (bx - 0.18 * hr * vis, by), (bx + 0.18 * hr * vis, by), identity.brow_thickness * hr, identity.hair
            )
            if identity.glasses:
                r = 0.27 * hr
                cv.draw(
                    sdf_ring((ex, ey), r, max(0.08 * hr, 0.6)),
                    (ex - r - 1, ey - r - 1, ex + r + 1, ey + r + 1),
                    (0.1, 0.1, 0.1),
                )
    nx, ny, nv = feature(0.0, 0.17)
    if nv > 0.15:
        cv.ellipse((nx, ny), 0.09 * hr, 0.07 * hr, skin * 0.75)
        mx, my, _ = feature(0.0, 0.45)
        cv.ellipse((mx, my), identity.mouth_width * hr * nv, 0.1 * hr, identity.lips)
