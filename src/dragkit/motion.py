"""Motion supervision (DragDiffusion Eq. 3; GoodDrag Eq. 8), as pure functions on feature maps.

Feature maps are :class:`~dragkit.features.FeatureMap` (read lazily on the supervision grid) or dense 1×C×h×w
tensors; points are (row, col) on that grid. Patches are sampled bilinearly with clamped (border
replicate) indices, so handles anywhere, borders included, are safe; inside the map this equals the reference's
"four integer-shifted slices weighted by the fractional offsets".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .features import FeatureMap


def sample_points(features: FeatureMap | torch.Tensor, rc: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of the feature map (a :class:`~dragkit.features.FeatureMap` or a dense 1×C×h×w tensor) at
    float positions ``rc`` (…×2, (row, col)) → C×… .

    Out-of-map positions are clamped to the border. Differentiable in the features.
    """
    fm = FeatureMap.of(features)
    c = fm.shape[1]
    flat = rc.reshape(-1, 2)
    r0, c0 = flat[:, 0].floor(), flat[:, 1].floor()
    fr, fc = flat[:, 0] - r0, flat[:, 1] - c0
    r0, c0 = r0.long(), c0.long()
    out = (
        fm.at(r0, c0) * ((1 - fr) * (1 - fc))
        + fm.at(r0 + 1, c0) * (fr * (1 - fc))
        + fm.at(r0, c0 + 1) * ((1 - fr) * fc)
        + fm.at(r0 + 1, c0 + 1) * (fr * fc)
    )
    return out.reshape(c, *rc.shape[:-1])


def square_offsets(radius: int, device=None) -> torch.Tensor:
    """(2r+1)² integer (drow, dcol) offsets in row-major order."""
    ax = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return torch.stack(torch.meshgrid(ax, ax, indexing="ij"), dim=-1).reshape(-1, 2)


def square_window(center: torch.Tensor, radius: int, size_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The (2r+1)² integer positions around ``center`` (row-major) and which of them lie on the map: a fixed shape,
    so the hot loop never waits for the device to learn how many are inside (:func:`clipped_window` does)."""
    pos = center.round() + square_offsets(radius, center.device)
    inside = (pos[:, 0] >= 0) & (pos[:, 0] < size_hw[0]) & (pos[:, 1] >= 0) & (pos[:, 1] < size_hw[1])
    return pos, inside


def clipped_window(center: torch.Tensor, radius: int, size_hw: tuple[int, int]) -> torch.Tensor:
    """Integer positions of the (2r+1)² square around ``center`` that lie on the map (row-major)."""
    pos, inside = square_window(center, radius, size_hw)
    return pos[inside]


def drag_direction(handle: torch.Tensor, target: torch.Tensor, max_step: float | None = None) -> torch.Tensor:
    """d = (g − h)/‖g − h‖ (DragDiffusion, unit step), or × min(β, ‖g − h‖) when ``max_step`` = β (GoodDrag)."""
    delta = target - handle
    dist = delta.norm()
    d = delta / dist
    return d if max_step is None else d * torch.clamp(dist, max=max_step)


def active_pairs(handles: torch.Tensor, targets: torch.Tensor, stop_distance: float) -> list[int]:
    """Pairs still farther than ``stop_distance`` feature px from their target (the others are skipped)."""
    return [i for i, dist in enumerate((targets - handles).norm(dim=1).tolist()) if dist >= stop_distance]


def handles_on_host(handles: torch.Tensor, targets: torch.Tensor,
                    stop_distance: float) -> tuple[list[int], list[list[float]]]:
    """(:func:`active_pairs`, the handles as a list) in one device→host transfer: the stop test the algorithm needs
    each step, carrying the handles the progress event reports."""
    n = len(handles)
    values = torch.cat([(targets - handles).norm(dim=1), handles.reshape(-1).to(torch.float32)]).tolist()
    return [i for i in range(n) if values[i] >= stop_distance], [values[n + 2 * i:n + 2 * i + 2] for i in range(n)]


def dragdiffusion_motion_term(features: torch.Tensor, handle: torch.Tensor, target: torch.Tensor, radius: int):
    """One pair's DragDiffusion motion term: (2r1+1)² · mean |sg(F_q) − F_{q+d}| over q ∈ Ω(h, r1) (clipped).

    The source patch is the *current* features around the *current* handle, detached; the constant (2r1+1)² is
    kept even for clipped windows (reference behaviour). Returns (term, plain mean).
    """
    window, inside = square_window(handle, radius, features.shape[-2:])
    d = drag_direction(handle, target)
    source = sample_points(features.detach(), window)
    shifted = sample_points(features, window + d)
    weight = inside.to(source.dtype)  # the clipped window as weights: positions off the map count 0
    mean = ((source - shifted).abs() * weight).sum() / (weight.sum() * source.shape[0])
    return (2 * radius + 1) ** 2 * mean, mean


def gooddrag_motion_term(
    features: torch.Tensor,
    reference_features: torch.Tensor,
    handle: torch.Tensor,
    initial_handle: torch.Tensor,
    target: torch.Tensor,
    radius: int,
    max_step: float,
):
    """One pair's information-preserving motion term (GoodDrag Eq. 8, reference code):
    (2r1)² · mean |sg(F^orig_{p⁰+o}) − F_{h+d+o}| over o ∈ [−r1, r1]², d = unit·min(β, ‖g − h‖).

    The source always comes from the *undragged* features at the *original* handle, so the target never drifts.
    The factor is (2r1)², not (2r1+1)², as in the official code. Returns (term, plain mean).
    """
    offsets = square_offsets(radius, features.device)
    d = drag_direction(handle, target, max_step)
    source = sample_points(reference_features.detach(), initial_handle.round() + offsets)
    shifted = sample_points(features, handle + d + offsets)
    mean = (source - shifted).abs().mean()
    return (2 * radius) ** 2 * mean, mean


def masked_latent_term(x_prev: torch.Tensor, x_prev_reference: torch.Tensor, editable_latent: torch.Tensor):
    """‖(ẑ_{t−1} − sg(z_{t−1})) ⊙ (1 − M)‖₁ as a *sum* over latent elements (the reference's scaling)."""
    return ((x_prev - x_prev_reference.detach()).abs() * (1 - editable_latent)).sum()


@dataclass
class LossTerms:
    """One supervision step's loss: the differentiable total and its parts (detached tensors, read as floats only
    when asked, so the hot loop does not wait for the device)."""

    total: torch.Tensor
    motion_terms: list[torch.Tensor]  # per active pair: the motion term, with its area factor
    motion_mean_terms: list[torch.Tensor]  # per active pair: the plain mean L1
    active: list[int]  # indices of the pairs still farther than the stop distance

    @property
    def motion(self) -> list[float]:
        return [float(t) for t in self.motion_terms]

    @property
    def motion_means(self) -> list[float]:
        return [float(t) for t in self.motion_mean_terms]


def motion_loss(handles: torch.Tensor, targets: torch.Tensor, stop_distance: float,
                pair_term: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                regularizer: Optional[Callable[[], torch.Tensor]] = None,
                active: Optional[list[int]] = None) -> LossTerms:
    """Σ over the active pairs of ``pair_term(i)`` (→ (term, mean)), + ``regularizer()`` when given: the motion
    supervision loss of both methods (DragDiffusion Eq. 3, GoodDrag Eq. 8), which differ only in the pair term.
    ``active``: the active pairs when the caller already knows them (else computed here, one host sync)."""
    if active is None:
        active = active_pairs(handles, targets, stop_distance)
    total = handles.new_zeros((), dtype=torch.float32)
    terms, means = [], []
    for i in active:
        term, mean = pair_term(i)
        total = total + term
        terms.append(term.detach())
        means.append(mean.detach())
    if regularizer is not None:
        total = total + regularizer()
    return LossTerms(total, terms, means, active)
