"""Dragging Accuracy Index (GoodDrag, Eq. 10): how well the content at each handle p_i of the original reached its
target q_i in the edited image, on RGB values in [0, 1].

Per pair: ‖φ(z₀)_Ω(p_i, γ) − φ(ẑ₀)_Ω(q_i, γ)‖² / (2γ+1)² over the (2γ+1)² × 3 patch values.
The official code (``evaluation/compute_DAI.py``) divides the per-image sum by the number of pairs N **twice**;
``official=True`` (the default) keeps that, so numbers compare with the paper's table; ``official=False`` gives the
plain mean over pairs (the paper's formula). Both are equal for N = 1.

Boundary-safe: near a border only the patch offsets that fall inside the image for *both* points are compared and
the squared error is normalised by that count (equal to (2γ+1)² away from borders; the reference slices out of range).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ..types import DragError

GAMMAS = (1, 5, 10, 20)


def to_unit_rgb(image) -> np.ndarray:
    """PIL image or H×W×3 uint8 array → float64 H×W×3 in [0, 1]."""
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    return arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)


def patch_error(original: np.ndarray, edited: np.ndarray, p: Sequence[float], q: Sequence[float], gamma: int) -> float:
    """Mean over the valid (2γ+1)² offsets of the squared RGB difference (summed over channels) between the patch of
    ``original`` at p and the patch of ``edited`` at q; points are (x, y) pixels, rounded to the nearest pixel."""
    h, w = original.shape[:2]
    (px, py), (qx, qy) = (int(round(v)) for v in p), (int(round(v)) for v in q)
    d = np.arange(-gamma, gamma + 1)
    dy_ok = d[(py + d >= 0) & (py + d < h) & (qy + d >= 0) & (qy + d < h)]
    dx_ok = d[(px + d >= 0) & (px + d < w) & (qx + d >= 0) & (qx + d < w)]
    if dy_ok.size == 0 or dx_ok.size == 0:
        raise DragError(f"DAI: point {tuple(p)} or {tuple(q)} lies outside the {w}x{h} image")
    a = original[np.ix_(py + dy_ok, px + dx_ok)]
    b = edited[np.ix_(qy + dy_ok, qx + dx_ok)]
    return float(((a - b) ** 2).sum() / (dy_ok.size * dx_ok.size))


def dai(original, edited, handles: Sequence[Sequence[float]], targets: Sequence[Sequence[float]], gamma: int,
        official: bool = True) -> float:
    """DAI of one image for patch half-size ``gamma`` (see the module docstring for ``official``)."""
    a, b = to_unit_rgb(original), to_unit_rgb(edited)
    if a.shape != b.shape:
        raise DragError(f"DAI: edited image is {b.shape[1]}x{b.shape[0]}, "
                        f"the original {a.shape[1]}x{a.shape[0]}")
    if len(handles) != len(targets) or not handles:
        raise DragError("DAI needs one target per handle and at least one pair")
    n = len(handles)
    mean = sum(patch_error(a, b, p, q, gamma) for p, q in zip(handles, targets)) / n
    return mean / n if official else mean


def dai_all(original, edited, handles, targets, gammas: Iterable[int] = GAMMAS,
            official: bool = True) -> dict[str, float]:
    """{"dai_1": …, "dai_5": …} for every γ in ``gammas``."""
    a, b = to_unit_rgb(original), to_unit_rgb(edited)
    return {f"dai_{g}": dai(a, b, handles, targets, g, official) for g in gammas}
