"""Point tracking (DragDiffusion Eq. 5): nearest neighbour of the original handle's feature in a window."""

from __future__ import annotations

import torch

from .features import FeatureMap
from .motion import square_window


def track_points(
    reference_vectors: torch.Tensor, features: torch.Tensor, handles: torch.Tensor, radius: int
) -> torch.Tensor:
    """h_i ← argmin_{q ∈ Ω(h_i, r2)} ‖F_q − F⁰_{h_i⁰}‖₁ for every handle; returns new N×2 (row, col), inputs untouched.

    ``reference_vectors`` is N×C (the reference features at the *initial* handles); ``features`` a
    :class:`~dragkit.features.FeatureMap` or a dense 1×C×h×w tensor. The window
    is clipped to the map (the reference GoodDrag code does not clip and breaks near borders). Ties resolve to the
    first minimum in row-major order, as ``argmin`` does.
    """
    fm = FeatureMap.of(features)
    new = []
    for ref, handle in zip(reference_vectors, handles):
        window, inside = square_window(handle, radius, fm.grid_hw)
        candidates = fm.at(window[:, 0], window[:, 1])  # C×M (positions off the map read clamped, then ruled out)
        dist = (candidates - ref[:, None]).abs().sum(dim=0).masked_fill(~inside, float("inf"))
        new.append(window[dist.argmin()].to(handles.dtype))
    return torch.stack(new) if new else handles.clone()


def reference_vectors_at(features: torch.Tensor, points_rc: torch.Tensor) -> torch.Tensor:
    """N×C feature vectors at integer (row, col) points (the initial handles, as the reference int-casts them)."""
    idx = points_rc.round().long()
    return FeatureMap.of(features).at(idx[:, 0], idx[:, 1]).T.detach()
