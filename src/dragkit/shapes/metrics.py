"""Metrics of the shapes benchmark: did the object move where it was asked to, and did nothing else change?

Every scene is known exactly (:mod:`dragkit.shapes.scenes`), so each metric compares against ground truth:

- **object mask** of an image: the pixels whose colour is nearer the object's colour than to every other colour that
  belongs there — the scene's background at that pixel and its blends with the other objects' colours (their
  anti-aliased edges) (:func:`object_mask`). A
  nearest-reference rule instead of one fixed RGB tolerance, because the backgrounds range from dark to light grey:
  an anti-aliased edge pixel of coverage c is c·object + (1 − c)·background, so "nearer the object than the
  background" is exactly coverage ≥ 0.5 on the unedited image (IoU 1 with the true mask, centroid within a few
  hundredths of a pixel), and the rule degrades gracefully on a VAE-blurred or colour-shifted object.
- **drag error**: ‖centroid(object mask) − (original centroid + offset)‖ in pixels, and as a fraction of ‖offset‖
  (identity → 1.0, a perfect move → 0). When the colour has vanished (fewer than :data:`LOST_FRACTION` of the
  original pixels) the error is counted as ‖offset‖ — no better than not editing — and ``object_lost`` is set.
- **background PSNR**: PSNR between the edited and the original image over the pixels outside the union of the
  object's old and new footprints (any coverage, dilated by :data:`FOOTPRINT_MARGIN` px for anti-aliased edges and
  small shape changes), capped at :data:`PSNR_CAP` dB so that an unchanged background (identity) is finite.
- **shape IoU**: IoU of the object mask with the original shape translated by the offset (coverage ≥ 0.5 of the
  re-rendered moved shape).

Two metrics of what a move leaves behind, over the **vacated region**: the object's old footprint minus its new
footprint dilated by :data:`FOOTPRINT_MARGIN` px (so that a slightly misplaced or blurred object at its target, and
the anti-aliased edge of the new footprint, do not count). Both are None when the region has fewer than
:data:`MIN_VACATED_PIXELS` px (a move too short to vacate anything; summaries skip them):

- **ghost**: the fraction of the vacated *interior* — old coverage exactly 1, so no anti-aliased edge pixel — that
  the object mask (the nearest-reference rule above, on the edited image) still finds: a copy instead of a move.
  Identity → 1 (exactly: those pixels are the object's colour), a perfect move → 0 (exactly: they are background),
  the object drawn at both places → 1, a smear along the path → the fraction of the interior it covers.
- **hole PSNR**: PSNR (dB, capped at :data:`PSNR_CAP`) over the vacated footprint — old coverage > 0, edges
  included, since in the ground truth every one of those pixels changed — between the edited image and the
  ground-truth moved scene (the object re-rendered at its target: the true background there, or whatever else the
  scene has there; :func:`moved_render`). Identity → low (the object's colour against the background), a perfect
  move → :data:`PSNR_CAP`. Unlike background PSNR, which compares with the input, this compares with the answer.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .scenes import Scene, coverage_centroid, render, render_background, replace_shape, shape_coverage

PSNR_CAP = 60.0  # dB; an 8-bit image differing in one pixel by one level over 64² pixels is ≈ 84 dB, so 60 = "same"
FOOTPRINT_MARGIN = 2  # px added around the old and new footprints before measuring the background
LOST_FRACTION = 0.1  # fewer object-coloured pixels than this fraction of the original area: the object is lost
MIN_VACATED_PIXELS = 8  # a vacated region (interior for ghost, footprint for hole PSNR) smaller than this: None


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of an H×W mask by a disc of ``radius`` px (numpy only)."""
    mask = np.asarray(mask, bool)
    if radius <= 0:
        return mask.copy()
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                out |= padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
    return out


def _distance_to_segment(pixels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel RGB distance from ``pixels`` (H×W×3) to the segment a–b (``a`` H×W×3 or 3, ``b`` 3)."""
    ab = b - a
    t = np.clip(((pixels - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-6), 0.0, 1.0)
    return np.linalg.norm(pixels - (a + t[..., None] * ab), axis=-1)


def object_mask(image: np.ndarray, scene: Scene, index: int) -> np.ndarray:
    """Pixels of ``image`` (H×W×3 uint8) nearer object ``index``'s colour than anything else that belongs there: the
    local background and every blend of it with another object's colour (their anti-aliased edges)."""
    pixels = np.asarray(image, np.float32)[..., :3]
    background = render_background(scene.background, scene.size)
    own = np.linalg.norm(pixels - np.array(scene.shapes[index].rgb, np.float32), axis=-1)
    nearest_other = np.linalg.norm(pixels - background, axis=-1)
    for j, other in enumerate(scene.shapes):
        if j != index:
            blend = _distance_to_segment(pixels, background, np.array(other.rgb, np.float32))
            nearest_other = np.minimum(nearest_other, blend)
    return own < nearest_other


def psnr(a: np.ndarray, b: np.ndarray, region: Optional[np.ndarray] = None, cap: float = PSNR_CAP) -> float:
    """PSNR (dB, 8-bit peak) between two H×W×3 images over ``region`` (all pixels if None), capped at ``cap``."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if region is not None:
        diff = diff[np.asarray(region, bool)]
    if diff.size == 0:
        return float("nan")
    mse = float(np.mean(diff ** 2))
    return cap if mse == 0 else min(cap, 10 * math.log10(255.0 ** 2 / mse))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def drag_metrics(original: np.ndarray, edited: np.ndarray, scene: Scene, index: int,
                 offset: tuple[float, float]) -> dict:
    """All metrics of one edit: object ``index`` of ``scene`` (rendered as ``original``) asked to move by ``offset``
    (dx, dy) pixels; ``edited`` is the result (H×W×3 uint8). Returns a JSON-ready dict."""
    shape = scene.shapes[index]
    old_cov = shape_coverage(shape, scene.size)
    new_cov = shape_coverage(shape.moved(*offset), scene.size)
    cx, cy = coverage_centroid(old_cov)
    expected = np.array([cx + offset[0], cy + offset[1]])
    requested = float(np.hypot(*offset))

    found = object_mask(edited, scene, index)
    lost = bool(found.sum() < LOST_FRACTION * (old_cov >= 0.5).sum())
    if lost:
        centroid, error = None, requested
    else:
        centroid = np.array(coverage_centroid(found.astype(np.float32)))
        error = float(np.linalg.norm(centroid - expected))
    footprints = dilate((old_cov > 0) | (new_cov > 0), FOOTPRINT_MARGIN)
    interior, vacated = vacated_regions(old_cov, new_cov)
    return {
        "drag_error_px": error,
        "drag_error_fraction": error / requested if requested > 0 else float("nan"),
        "background_psnr": psnr(original, edited, ~footprints),
        "shape_iou": iou(found, new_cov >= 0.5),
        "object_lost": lost,
        "object_centroid": None if centroid is None else [float(v) for v in centroid],
        "expected_centroid": [float(v) for v in expected],
        "ghost": ghost_fraction(found, interior),
        "hole_psnr": None if vacated.sum() < MIN_VACATED_PIXELS else
        psnr(edited, moved_render(scene, index, offset), vacated),
    }


def vacated_regions(old_cov: np.ndarray, new_cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(interior, footprint) of the region an object vacates, from its old and new coverage (H×W in [0, 1]): the
    pixels of old coverage exactly 1 (interior) and > 0 (footprint) outside the new footprint (coverage > 0) dilated
    by :data:`FOOTPRINT_MARGIN` px."""
    outside_new = ~dilate(np.asarray(new_cov) > 0, FOOTPRINT_MARGIN)
    old_cov = np.asarray(old_cov)
    return (old_cov >= 1.0) & outside_new, (old_cov > 0) & outside_new


def ghost_fraction(found: np.ndarray, interior: np.ndarray) -> Optional[float]:
    """Fraction of the vacated ``interior`` (H×W bool) where the object mask ``found`` still finds the object; None
    when the interior has fewer than :data:`MIN_VACATED_PIXELS` px."""
    interior = np.asarray(interior, bool)
    count = int(interior.sum())
    return None if count < MIN_VACATED_PIXELS else float(np.asarray(found, bool)[interior].sum() / count)


def moved_render(scene: Scene, index: int, offset: tuple[float, float]) -> np.ndarray:
    """The ground truth of a drag: ``scene`` with object ``index`` translated by ``offset``, H×W×3 uint8 (as
    :meth:`dragkit.shapes.tasks.ShapeTask.moved_scene` renders)."""
    return render(replace_shape(scene, index, scene.shapes[index].moved(*offset)))
