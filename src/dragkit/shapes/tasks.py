"""The tasks of the shapes benchmark: "move this object by this offset", with exact ground truth.

:func:`make_tasks` is deterministic in ``(n, seed)``; the first k tasks of a larger n are the same k tasks, so a run
can be extended. Task i is drawn from benchmark scenes ``scenes.BENCH_SEED + seed·100_000 + j`` (j = 0, 1, …; a seed
range disjoint from the training and evaluation scenes) as follows:

- the object: one, at random, of the scene's objects whose size √area is ≥ :data:`MIN_OBJECT_FRACTION` of the image
  (a scene without one is skipped) — big enough to cover several cells of the 32×32 feature grid;
- the offset: length uniform in [:data:`MIN_OFFSET`, :data:`MAX_OFFSET`]·image size, direction uniform; redrawn (up
  to :data:`ATTEMPTS` times, else the next scene) until the moved object lies fully inside the image with a 1 px
  margin and the region it sweeps keeps ≥ :data:`CLEARANCE` px from every other object (so the editable region
  never contains another object, and "the object" stays unambiguous);
- handle = the object's centroid (on the object: every shape is convex); target = handle + offset;
- mask (editable region) = the union of the object's footprints along the straight path from the old to the new
  position, dilated by :data:`MASK_MARGIN` px = one latent cell (VAE factor 4), so that the nearest-neighbour
  downsampling to the latent grid never cuts the path.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..types import DragRequest
from .metrics import dilate
from .scenes import BENCH_SEED, Scene, random_scene, render, replace_shape, shape_coverage

MIN_OBJECT_FRACTION = 0.1
MIN_OFFSET, MAX_OFFSET = 0.10, 0.30  # offset length as a fraction of the image size
CLEARANCE = 2  # px between the swept region and any other object
MASK_MARGIN = 4  # px of dilation of the swept region
ATTEMPTS = 20  # offset draws per scene
SWEEP_STEP = 0.5  # px between successive footprints along the path


@dataclass(frozen=True)
class ShapeTask:
    """Move object ``index`` of ``scene`` from ``handle`` to ``target`` ((x, y) pixels), editing only ``mask``."""

    task_id: str
    scene_seed: int
    scene: Scene
    index: int
    handle: tuple[float, float]
    target: tuple[float, float]
    mask: np.ndarray = dataclasses.field(compare=False, repr=False)  # H×W bool, True = editable

    @property
    def offset(self) -> tuple[float, float]:
        return self.target[0] - self.handle[0], self.target[1] - self.handle[1]

    @property
    def distance(self) -> float:
        return math.hypot(*self.offset)

    @property
    def prompt(self) -> str:
        return self.scene.caption()

    def image(self) -> np.ndarray:
        """The input scene, H×W×3 uint8."""
        return render(self.scene)

    def moved_scene(self) -> Scene:
        """The ground truth: the same scene with the object translated by the offset."""
        return replace_shape(self.scene, self.index, self.scene.shapes[self.index].moved(*self.offset))

    def request(self) -> DragRequest:
        return DragRequest(Image.fromarray(self.image()), [self.handle], [self.target], self.mask.astype(np.uint8),
                           self.prompt)


def swept_region(shape, offset: tuple[float, float], size: int) -> np.ndarray:
    """Pixels touched (any coverage) by ``shape`` moving in a straight line by ``offset``."""
    steps = max(1, math.ceil(math.hypot(*offset) / SWEEP_STEP))
    region = np.zeros((size, size), bool)
    for s in np.linspace(0.0, 1.0, steps + 1):
        region |= shape_coverage(shape.moved(s * offset[0], s * offset[1]), size) > 0
    return region


def _fits(scene: Scene, index: int, offset: tuple[float, float], others: np.ndarray) -> bool:
    moved = shape_coverage(scene.shapes[index].moved(*offset), scene.size)
    inside = np.zeros_like(moved, dtype=bool)
    inside[1:-1, 1:-1] = True  # the 1 px margin
    if moved[~inside].any() or moved.sum() < 0.999 * scene.coverage(index).sum():  # cut by, or beyond, the border
        return False
    return not (swept_region(scene.shapes[index], offset, scene.size) & others).any()


def task_from_scene(scene: Scene, scene_seed: int, task_id: str) -> ShapeTask | None:
    """One task on ``scene`` (its random choices seeded by ``scene_seed``), or None when none fits."""
    rng = np.random.default_rng([scene_seed, 1])  # a stream independent of the scene's own draws
    big = [i for i in range(len(scene.shapes)) if math.sqrt(scene.mask(i).sum()) >= MIN_OBJECT_FRACTION * scene.size]
    if not big:
        return None
    index = int(rng.choice(big))
    others = np.zeros((scene.size, scene.size), bool)
    for j in range(len(scene.shapes)):
        if j != index:
            others |= scene.coverage(j) > 0
    others = dilate(others, CLEARANCE)
    for _ in range(ATTEMPTS):
        length = rng.uniform(MIN_OFFSET, MAX_OFFSET) * scene.size
        angle = rng.uniform(0, 2 * math.pi)
        offset = (length * math.cos(angle), length * math.sin(angle))
        if _fits(scene, index, offset, others):
            hx, hy = scene.centroid(index)
            mask = dilate(swept_region(scene.shapes[index], offset, scene.size), MASK_MARGIN)
            return ShapeTask(task_id, scene_seed, scene, index, (hx, hy), (hx + offset[0], hy + offset[1]), mask)
    return None


def make_tasks(n: int, seed: int = 0, size: int = 64) -> list[ShapeTask]:
    """The first ``n`` tasks of task set ``seed`` (see the module docstring), ids "000", "001", …"""
    tasks: list[ShapeTask] = []
    j = 0
    while len(tasks) < n:
        if j >= 100_000:
            raise RuntimeError(f"could not draw {n} shape tasks from 100000 scenes")
        scene_seed = BENCH_SEED + seed * 100_000 + j
        task = task_from_scene(random_scene(scene_seed, size), scene_seed, f"{len(tasks):03d}")
        if task is not None:
            tasks.append(task)
        j += 1
    return tasks
