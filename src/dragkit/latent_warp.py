"""FastDrag's one-step latent warp (Zhao et al., NeurIPS 2024, arXiv 2405.15769, §3): the latent warpage function
(LWF) moves every latent pixel of the drag region at once, then bilateral nearest-neighbour interpolation (BNNI)
fills the pixels nobody moved to. Pure functions on tensors, as the official code computes them (golden README §10.4,
``utils/continuous_drag.py``, commit def3c4e); the variable names are the paper's / README's.

Notation. z is the inverted latent 1×c×h×w (z_{t*}); M its warp region (h×w, > 0 = warped); P the pixels of M in
row-major order; handles A_i and targets B_i are latent (row, col), fractional (quarter pixels: the half-resolution
grid points divided by 4, not rounded); d_i = B_i − A_i.

LWF (paper §3.2, "stretched material")::

    circle    O = centre of the bounding box of P,  R = ‖O − (r0, c0) + ε‖   (ε = 1e-6, PairwiseDistance's)
              — the circle through the box corners (the paper's figure: "a circle circumscribing the mask")
    scale     for C ∈ P: e = (C − A_i)/‖C − A_i‖,  L0 = e·(A_i − O),  ‖A_iQ‖ = √(R² − ‖A_i − O‖² + L0²) − L0,
              Q = A_i + ‖A_iQ‖·e (the ray A_i→C leaves the circle at Q),   s_i(C) = ‖Q − C‖ / ‖Q − A_i‖
              — 1 at the handle, falling linearly to 0 on the circle
    weights   w_i(C) = 1/(‖C − A_i‖ + 1e-4),  w̄_i = w_i / Σ_j w_j
    move      m(C) = Σ_i w̄_i · s_i(C) · d_i;  D(C) = clamp(round(C + m(C)))   (round half to even, float32)

Relocation ("not recover"): z' = z with all of P zeroed; then in the order of P, z'[D(C)] = z[C] unless an earlier
C already wrote D(C) — the first writer wins. D(C) may lie outside M: the moved value overwrites that latent pixel
(the reference's behaviour; ``confine=True`` drops such moves instead).

BNNI (paper §3.3): the null pixels — channel 0 of z' exactly 0.0 — are visited in raster order; each takes
Σ_k v_k/δ_k / Σ_k 1/δ_k over the nearest pixel with non-zero channel 0 to its left, right, up and down (δ_k its
distance; directions without one are dropped). The search runs in the *partly filled* tensor, so earlier fills count
as neighbours: a raster-order recursive filter, as the code, not a symmetric interpolation between original pixels.

Edge cases (golden README §10.10), decided here and tested in tests/test_fastdrag_golden.py:

* A pixel C exactly on a handle A_i gives s_i = 0/0 = NaN: as the reference, C is not moved (status −1) and BNNI
  fills it. The reference crashes when that C is the first of P; here it is the same skip, wherever C is.
* An empty region: nothing moves and nothing is filled (the latent comes back unchanged; circle NaN). The editor never
  passes one (see :func:`dragkit.fastdrag.warp_region`).
* Moved values landing outside M: kept (faithful) unless ``confine``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

WRITTEN, DROPPED, NOT_MOVED = 1, 0, -1  # relocation status of each C ∈ P (dropped: destination taken, or outside M)
RADIUS_EPS = 1e-6  # torch.nn.PairwiseDistance's eps, added to each component difference of O − (r0, c0)
WEIGHT_EPS = 1e-4  # w_i = 1/(‖C − A_i‖ + 1e-4)


@dataclass
class Warp:
    """LWF + BNNI of one latent, with every intermediate value (tests compare them with the reference's)."""

    filled: torch.Tensor  # 1×c×h×w: the result, z' after BNNI (the latent the denoising starts from)
    prefill: torch.Tensor  # 1×c×h×w: z' after relocation, before BNNI (null pixels are exact zeros)
    null_mask: torch.Tensor  # 1×1×h×w float {0,1}: channel 0 of ``prefill`` == 0 (the pixels BNNI fills)
    points: torch.Tensor  # n_p×2 int64: P, the region's pixels (row, col) in row-major order
    center: torch.Tensor  # (2,) O, (row, col)
    radius: torch.Tensor  # () R
    scale: torch.Tensor  # n_p×n: s_i(C) (NaN where C = A_i)
    destinations_unclamped: torch.Tensor  # n_p×2 int64: round(C + m(C)), −1 where not moved
    destinations: torch.Tensor  # n_p×2 int64: clamped to the latent, −1 where not moved
    status: torch.Tensor  # n_p int64: WRITTEN 1, DROPPED 0, NOT_MOVED −1


def region_points(region: torch.Tensor) -> torch.Tensor:
    """P: the (row, col) of every pixel of ``region`` (h×w or 1×1×h×w) with value > 0, in row-major order."""
    return torch.nonzero(region.reshape(region.shape[-2:]) > 0)


def circle(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, R): the circle through the corners of the bounding box of ``points`` (n×2 int), float32; O = the box
    centre, R = ‖O − (r0, c0) + 1e-6‖ as the reference's ``torch.nn.PairwiseDistance``."""
    lo, hi = points.min(0).values.float(), points.max(0).values.float()
    center = (lo + hi) / 2
    radius = torch.linalg.vector_norm(center - lo + RADIUS_EPS)
    return center, radius


def scale_factors(points: torch.Tensor, handles: torch.Tensor, center: torch.Tensor,
                  radius: torch.Tensor) -> torch.Tensor:
    """s_i(C) = ‖Q − C‖/‖Q − A_i‖ for every C in ``points`` (n_p×2) and handle A_i in ``handles`` (n×2), where Q is
    where the ray from A_i through C leaves the circle (O, R): n_p×n float32, NaN where C = A_i."""
    c = points.float()[:, None, :]  # n_p×1×2
    a = handles.float()[None]  # 1×n×2
    ca = c - a
    e = ca / torch.linalg.vector_norm(ca, dim=-1, keepdim=True)
    ao = a - center
    l0 = (e * ao).sum(-1)
    aq = torch.sqrt(radius ** 2 - (ao * ao).sum(-1) + l0 ** 2) - l0  # ‖A_iQ‖
    q = a + aq[..., None] * e
    return torch.linalg.vector_norm(q - c, dim=-1) / torch.linalg.vector_norm(q - a, dim=-1)


def move_vectors(points: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor,
                 scale: torch.Tensor) -> torch.Tensor:
    """m(C) = Σ_i w̄_i(C)·s_i(C)·d_i with w_i = 1/(‖C − A_i‖ + 1e-4) normalised over i: n_p×2 float32 (NaN rows where
    some s_i is NaN)."""
    dist = torch.linalg.vector_norm(points.float()[:, None, :] - handles.float()[None], dim=-1)
    w = 1.0 / (dist + WEIGHT_EPS)
    w = w / w.sum(1, keepdim=True)
    d = (targets.float() - handles.float())[None]  # 1×n×2
    return ((w * scale)[..., None] * d).sum(1)


def relocate(z: torch.Tensor, points: torch.Tensor, destinations: torch.Tensor, moved: torch.Tensor,
             region_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(z', status): ``z`` with every pixel of ``points`` zeroed, then z'[D] = z[C] for each point C (in order) whose
    ``moved`` is True, unless an earlier point took D (first writer wins) or — with ``region_mask`` (h×w bool) — D lies
    outside it. Order-exact without a loop: a point writes iff it is the first in P with its destination."""
    h, w = z.shape[-2:]
    n = len(points)
    order = torch.arange(n, device=points.device)
    allowed = moved.clone()
    if region_mask is not None and n:
        allowed &= region_mask[destinations[:, 0].clamp(min=0), destinations[:, 1].clamp(min=0)]
    flat = destinations[:, 0] * w + destinations[:, 1]
    first = torch.full((h * w,), n, dtype=torch.long, device=points.device)
    first.scatter_reduce_(0, flat[allowed], order[allowed], reduce="amin")
    writes = allowed & (first[flat.clamp(min=0)] == order)
    status = torch.where(moved, torch.where(writes, WRITTEN, DROPPED), NOT_MOVED)
    out = z.clone()
    out[..., points[:, 0], points[:, 1]] = 0
    src, dst = points[writes], destinations[writes]
    out[..., dst[:, 0], dst[:, 1]] = z[..., src[:, 0], src[:, 1]]
    return out, status


def bnni(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(filled, null mask): bilateral nearest-neighbour interpolation of the null pixels of ``z`` (1×c×h×w; null =
    channel 0 exactly 0.0), sequentially in raster order over the partly filled latent (earlier fills are neighbours).
    Each null pixel becomes Σ_k v_k/δ_k / Σ_k 1/δ_k over the nearest non-null pixel left, right, up and down (summed
    in float32 in that order; the weight sum in double, as the reference's Python float)."""
    x = z.detach()[0].to("cpu", torch.float32).numpy().copy()  # c×h×w
    c0 = x[0]
    null = c0 == 0.0
    for r, c in zip(*np.nonzero(null)):
        num, wsum = None, 0.0
        for k in _nearest(c0, r, c):
            if k is None:
                continue
            (rr, cc), delta = k
            term = x[:, rr, cc] * np.float32(1.0 / delta)
            num = term if num is None else num + term
            wsum += 1.0 / delta
        if num is not None:
            x[:, r, c] = num / np.float32(wsum)
    filled = torch.from_numpy(x)[None].to(device=z.device, dtype=z.dtype)
    return filled, torch.from_numpy(null.astype(np.float32))[None, None].to(z.device)


def _nearest(c0: np.ndarray, r: int, c: int):
    """The nearest pixel with channel 0 ≠ 0 to the left, right, up and down of (r, c), each as ((row, col), distance)
    or None."""
    row, col = c0[r], c0[:, c]
    left, right = np.flatnonzero(row[:c]), np.flatnonzero(row[c + 1:])
    up, down = np.flatnonzero(col[:r]), np.flatnonzero(col[r + 1:])
    yield ((r, int(left[-1])), c - int(left[-1])) if len(left) else None
    yield ((r, c + 1 + int(right[0])), 1 + int(right[0])) if len(right) else None
    yield ((int(up[-1]), c), r - int(up[-1])) if len(up) else None
    yield ((r + 1 + int(down[0]), c), 1 + int(down[0])) if len(down) else None


def warp(z: torch.Tensor, region: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor,
         confine: bool = False) -> Warp:
    """LWF + relocation + BNNI of the latent ``z`` (1×c×h×w) over ``region`` (values > 0 warp; h×w or 1×1×h×w) for
    latent-grid (row, col) ``handles`` → ``targets`` (n×2, fractional allowed). ``confine``: a move whose destination
    lies outside the region is dropped (the reference lets it overwrite that pixel)."""
    h, w = z.shape[-2:]
    dev = z.device
    pts = region_points(region).to(dev)
    handles, targets = handles.to(dev, torch.float32), targets.to(dev, torch.float32)
    n_p, n = len(pts), len(handles)
    if n_p == 0:
        nan = torch.tensor(float("nan"), device=dev)
        empty = torch.zeros(0, 2, dtype=torch.long, device=dev)
        return Warp(z.clone(), z.clone(), torch.zeros(1, 1, h, w, device=dev), empty, nan.repeat(2), nan,
                    torch.zeros(0, n, device=dev), empty, empty, torch.zeros(0, dtype=torch.long, device=dev))
    center, radius = circle(pts)
    s = scale_factors(pts, handles, center, radius)
    m = move_vectors(pts, handles, targets, s)
    moved = torch.isfinite(m).all(1)
    m = torch.where(moved[:, None], m, torch.zeros_like(m))
    unclamped = torch.round(pts.float() + m).long()
    limit = torch.tensor([h - 1, w - 1], device=dev)
    dest = torch.minimum(unclamped.clamp(min=0), limit)
    unclamped = torch.where(moved[:, None], unclamped, -1)
    dest = torch.where(moved[:, None], dest, -1)
    inside = region.reshape(h, w).to(dev) > 0 if confine else None
    prefill, status = relocate(z, pts, dest, moved, inside)
    filled, null = bnni(prefill)
    return Warp(filled, prefill, null, pts, center, radius, s, unclamped, dest, status)
