"""Procedural scenes of simple objects with exact ground truth: the miniature world of the shapes benchmark.

A scene is a background (plain, gradient or softly textured, always low-saturation) and 1–3 non-overlapping objects
(disc, square, triangle, diamond) of distinct saturated colours. Everything is a pure function of a seed; objects
are rasterised with 4×4 supersampling so edges are anti-aliased, and each object keeps its exact coverage mask and
centroid, so a moved object can be re-rendered anywhere (:func:`render`) — the ground truth of a drag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

KINDS = ("disc", "square", "triangle", "diamond")
# Saturated object colours, far from each other and from every (low-saturation) background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 190, 40), "blue": (30, 60, 220), "yellow": (240, 220, 20),
    "magenta": (220, 30, 200), "cyan": (20, 210, 220), "orange": (250, 130, 10), "purple": (120, 30, 180),
}
BACKGROUNDS = ("plain", "gradient", "stripes", "checker")
SUPERSAMPLE = 4
# Disjoint seed ranges: training draws scenes 0, 1, 2, …; held-out evaluation EVAL_SEED + i; the benchmark's tasks
# BENCH_SEED + seed · 100_000 + i.
EVAL_SEED = 1_000_000_000
BENCH_SEED = 2_000_000_000


@dataclass(frozen=True)
class Shape:
    """One object: kind, colour name, centre (x, y) in pixels and size (circumradius for discs/diamonds/triangles,
    half-side for squares), rotation in radians (triangles, squares)."""

    kind: str
    colour: str
    cx: float
    cy: float
    size: float
    angle: float = 0.0

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    def moved(self, dx: float, dy: float) -> "Shape":
        return dataclasses.replace(self, cx=self.cx + dx, cy=self.cy + dy)


@dataclass(frozen=True)
class Background:
    kind: str
    colour_a: tuple[int, int, int]
    colour_b: tuple[int, int, int]
    angle: float = 0.0  # gradient / stripe direction
    period: float = 8.0  # stripes / checker period in pixels


@dataclass(frozen=True)
class Scene:
    size: int
    background: Background
    shapes: tuple[Shape, ...]

    def caption(self) -> str:
        """The text prompt the model is trained with, e.g. "red disc, blue square, gradient background"."""
        objects = ", ".join(f"{s.colour} {s.kind}" for s in self.shapes)
        return f"{objects}, {self.background.kind} background"

    def image(self) -> np.ndarray:
        return render(self)

    def coverage(self, index: int) -> np.ndarray:
        """Anti-aliased coverage in [0, 1] (H×W) of object ``index`` (ignoring occlusion: objects never overlap)."""
        return shape_coverage(self.shapes[index], self.size)

    def mask(self, index: int) -> np.ndarray:
        return self.coverage(index) >= 0.5

    def centroid(self, index: int) -> tuple[float, float]:
        """(x, y) centroid of the object's coverage, pixel centres at integer coordinates."""
        return coverage_centroid(self.coverage(index))


def coverage_centroid(coverage: np.ndarray) -> tuple[float, float]:
    total = float(coverage.sum())
    if total <= 0:
        return float("nan"), float("nan")
    ys, xs = np.mgrid[0:coverage.shape[0], 0:coverage.shape[1]]
    return float((coverage * xs).sum() / total), float((coverage * ys).sum() / total)


def _inside(shape: Shape, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dx, dy = x - shape.cx, y - shape.cy
    c, s = np.cos(-shape.angle), np.sin(-shape.angle)
    u, v = c * dx - s * dy, s * dx + c * dy  # coordinates in the shape's own frame
    r = shape.size
    if shape.kind == "disc":
        return u * u + v * v <= r * r
    if shape.kind == "square":
        return (np.abs(u) <= r) & (np.abs(v) <= r)
    if shape.kind == "diamond":
        return np.abs(u) + np.abs(v) <= r
    if shape.kind == "triangle":  # equilateral, circumradius r, apex up (before rotation)
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = np.pi / 2 + k * 2 * np.pi / 3 + np.pi / 3  # outward normals of the three edges
            inside &= u * np.cos(a) - v * np.sin(a) <= r / 2
        return inside
    raise ValueError(f"unknown shape kind {shape.kind!r}")


def shape_coverage(shape: Shape, size: int) -> np.ndarray:
    """Fraction of each pixel covered by ``shape`` (4×4 supersampling), H×W float32."""
    n = SUPERSAMPLE
    offsets = (np.arange(n) + 0.5) / n - 0.5
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    cov = np.zeros((size, size), np.float32)
    for oy in offsets:
        for ox in offsets:
            cov += _inside(shape, xs + ox, ys + oy)
    return cov / (n * n)


def render_background(bg: Background, size: int) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    a, b = np.array(bg.colour_a, np.float32), np.array(bg.colour_b, np.float32)
    if bg.kind == "plain":
        w = np.zeros((size, size), np.float32)
    elif bg.kind == "gradient":
        proj = (xs - size / 2) * np.cos(bg.angle) + (ys - size / 2) * np.sin(bg.angle)
        w = np.clip(proj / size + 0.5, 0, 1)
    elif bg.kind == "stripes":
        proj = xs * np.cos(bg.angle) + ys * np.sin(bg.angle)
        w = 0.5 + 0.5 * np.sin(2 * np.pi * proj / bg.period)
    elif bg.kind == "checker":
        w = ((np.floor(xs / bg.period) + np.floor(ys / bg.period)) % 2).astype(np.float32)
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}")
    return a * (1 - w[..., None]) + b * w[..., None]


def render(scene: Scene) -> np.ndarray:
    """The scene as an H×W×3 uint8 RGB image."""
    img = render_background(scene.background, scene.size)
    for shape in scene.shapes:
        cov = shape_coverage(shape, scene.size)[..., None]
        img = img * (1 - cov) + np.array(shape.rgb, np.float32) * cov
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _muted_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A low-saturation colour (grey-ish), so saturated objects stay easy to find by colour."""
    grey = rng.uniform(40, 215)
    tint = rng.uniform(-18, 18, size=3)
    return tuple(int(v) for v in np.clip(grey + tint, 0, 255))


def random_background(rng: np.random.Generator) -> Background:
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    a = _muted_colour(rng)
    if kind == "plain":
        return Background("plain", a, a)
    b = _muted_colour(rng)
    if kind in ("stripes", "checker"):  # soft texture: the second colour close to the first
        b = tuple(int(np.clip(v + rng.uniform(-30, 30), 0, 255)) for v in a)
    return Background(kind, a, b, angle=float(rng.uniform(0, 2 * np.pi)), period=float(rng.uniform(6, 14)))


def _footprint_radius(shape: Shape) -> float:
    return shape.size * (np.sqrt(2) if shape.kind == "square" else 1.0)


def random_scene(seed: int, size: int = 64, max_objects: int = 3, min_objects: int = 1) -> Scene:
    """A scene drawn deterministically from ``seed``: objects inside the image, not overlapping (a gap of 2 px)."""
    rng = np.random.default_rng(seed)
    background = random_background(rng)
    n = int(rng.integers(min_objects, max_objects + 1))
    colours = list(rng.permutation(list(COLOURS)))
    shapes: list[Shape] = []
    for _ in range(200):
        if len(shapes) == n:
            break
        kind = KINDS[rng.integers(len(KINDS))]
        size_px = float(rng.uniform(0.08, 0.18) * size)
        probe = Shape(kind, colours[len(shapes)], 0.0, 0.0, size_px, float(rng.uniform(0, 2 * np.pi)))
        reach = _footprint_radius(probe) + 1
        cx, cy = rng.uniform(reach, size - reach, size=2)
        cand = probe.moved(float(cx), float(cy))
        if all(np.hypot(cand.cx - s.cx, cand.cy - s.cy) > reach + _footprint_radius(s) + 2 for s in shapes):
            shapes.append(cand)
    return Scene(size, background, tuple(shapes))


def replace_shape(scene: Scene, index: int, shape: Shape) -> Scene:
    shapes = list(scene.shapes)
    shapes[index] = shape
    return dataclasses.replace(scene, shapes=tuple(shapes))
