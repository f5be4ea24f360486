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
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .scenes import Scene, coverage_centroid, render_background, shape_coverage

PSNR_CAP = 60.0  # dB; an 8-bit image differing in one pixel by one level over 64² pixels is ≈ 84 dB, so 60 = "same"
FOOTPRINT_MARGIN = 2  # px added around the old and new footprints before measuring the background
LOST_FRACTION = 0.1  # fewer object-coloured pixels than this fraction of the original area: the object is lost


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
    return {
        "drag_error_px": error,
        "drag_error_fraction": error / requested if requested > 0 else float("nan"),
        "background_psnr": psnr(original, edited, ~footprints),
        "shape_iou": iou(found, new_cov >= 0.5),
        "object_lost": lost,
        "object_centroid": None if centroid is None else [float(v) for v in centroid],
        "expected_centroid": [float(v) for v in expected],
    }
