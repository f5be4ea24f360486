"""The one place where (x, y) image pixels meet the feature grid's (row, col).

Reference convention (spec §0.6, golden §5.8): ``row = round(y·sup_h/H)``, ``col = round(x·sup_w/W)`` with
``torch.round`` (half to even), where (W, H) is the input image size and (sup_w, sup_h) the feature-grid size.
Back: ``x = col·W/sup_w``, ``y = row·H/sup_h``. We additionally clamp to the grid so that points on the last image
row/column (which round to ``sup``) stay on the map.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def to_grid(points_xy: Sequence[Sequence[float]], image_size: tuple[int, int], grid_size: tuple[int, int]) -> torch.Tensor:
    """(x, y) pixels of an image of ``image_size`` = (W, H) → float tensor N×2 of (row, col) on a grid (w, h)."""
    (w, h), (gw, gh) = image_size, grid_size
    xy = torch.as_tensor(np.asarray(points_xy, dtype=np.float64).reshape(-1, 2), dtype=torch.float32)
    rows = torch.round(xy[:, 1] * gh / h).clamp(0, gh - 1)
    cols = torch.round(xy[:, 0] * gw / w).clamp(0, gw - 1)
    return torch.stack([rows, cols], dim=1)


def to_image(points_rc: torch.Tensor | list, image_size: tuple[int, int], grid_size: tuple[int, int]) -> list[tuple[float, float]]:
    """(row, col) on a grid (w, h) — a tensor, or a list already on the host — → list of (x, y) pixels of an image
    of ``image_size`` = (W, H)."""
    (w, h), (gw, gh) = image_size, grid_size
    rc = points_rc.detach().double().cpu().tolist() if isinstance(points_rc, torch.Tensor) else points_rc
    return [(float(c) * w / gw, float(r) * h / gh) for r, c in rc]


def mask_to_grid(mask: np.ndarray | None, size_hw: tuple[int, int]) -> torch.Tensor:
    """Binary editable mask (H×W, nonzero = editable) → 1×1×h×w float {0,1}, nearest-neighbour like the reference.

    ``None`` → all ones (everything editable).
    """
    if mask is None:
        return torch.ones(1, 1, *size_hw)
    m = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))[None, None]
    return F.interpolate(m, size=size_hw, mode="nearest")
