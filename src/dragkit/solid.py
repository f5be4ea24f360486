"""Objects that move as solids: the pure maths of dragkit's own one-step method (``--method soliddrag``).

FastDrag's latent warpage function (:mod:`dragkit.latent_warp`) moves each latent pixel of the editable region by
the drag scaled down linearly from the handle (scale 1) to a circle around the region (scale 0). A handle's object is
therefore not moved but *stretched*: its far side travels less than its handle, its near side collides with itself
(first writer wins), and the hole it leaves is filled by interpolating its neighbours — the moved object among them.
On the shapes world that leaves part of the drag undone and a smear of the object behind it.

SolidDrag keeps FastDrag's inversion, K/V copy and denoising and changes the warp only:

1. **The object under each handle** (:func:`object_core`): cosine similarity of the UNet decoder features at t*
   (the same features DragDiffusion tracks with) to the feature at the handle, thresholded by Otsu's method over
   the editable region — two classes, "like the handle" and "not" — and the 4-connected component that holds the
   handle. Only what a photo request has is used: the image's own features, the handle and the mask.
2. **Solid translation** (:func:`translate_cores`): each core moves by its whole drag d_i, at sub-latent-pixel
   precision — the value at a destination D is the bilinear sample of the latent at D − d_i over the core's own
   pixels (weights renormalised, so no background bleeds in), and D belongs to the moved core when those weights
   sum to at least a half. A pixel claimed by two cores takes the first handle's (handles in request order).
3. **Holes from the background** (:func:`fill_from_background`): the old footprint that the moved core does not
   cover is filled by inverse-distance interpolation of the nearest *background* pixels left, right, above and
   below — never from a moved object, so the object is not smeared back into the place it left.

Everything else in the latent is untouched (the editable region is where the object may go, not a material to
stretch). Where a handle's core is empty or the whole region (no object stands out from its surroundings), that
handle falls back to FastDrag's warp for its region: :func:`solid_warp` reports which handles did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def handle_similarity(features: torch.Tensor, handle_rc: torch.Tensor) -> torch.Tensor:
    """h×w cosine similarity of every feature vector of ``features`` (C×h×w) to the one at ``handle_rc`` (latent
    (row, col), float: bilinearly sampled)."""
    c, h, w = features.shape
    grid = torch.stack([handle_rc[1] / max(w - 1, 1) * 2 - 1, handle_rc[0] / max(h - 1, 1) * 2 - 1])
    ref = F.grid_sample(features[None].float(), grid.view(1, 1, 1, 2).float(), mode="bilinear",
                        align_corners=True)[0, :, 0, 0]
    return F.cosine_similarity(features.float(), ref[:, None, None], dim=0)


def otsu_threshold(values: torch.Tensor, bins: int = 64) -> float:
    """Otsu's threshold of ``values`` (1-D): the cut maximising the between-class variance of a histogram."""
    values = values.float().flatten()
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return hi
    hist = torch.histc(values, bins=bins, min=lo, max=hi).double()
    centres = lo + (torch.arange(bins, dtype=torch.float64) + 0.5) * (hi - lo) / bins
    weight = hist.cumsum(0)
    total = weight[-1]
    mass = (hist * centres).cumsum(0)
    w0, w1 = weight[:-1], total - weight[:-1]
    m0 = mass[:-1] / w0.clamp(min=1e-12)
    m1 = (mass[-1] - mass[:-1]) / w1.clamp(min=1e-12)
    between = w0 * w1 * (m0 - m1) ** 2
    k = int(between.argmax())
    return float(lo + (k + 1) * (hi - lo) / bins)


def connected_component(mask: torch.Tensor, seed: tuple[int, int]) -> torch.Tensor:
    """The 4-connected component of the h×w boolean ``mask`` that holds ``seed`` (empty if the seed is outside)."""
    out = torch.zeros_like(mask, dtype=torch.bool)
    if not bool(mask[seed]):
        return out
    out[seed] = True
    while True:  # grow by one pixel per pass (≤ the component's diameter passes; latents are small)
        grown = out.clone()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown &= mask
        if torch.equal(grown, out):
            return out
        out = grown


def object_core(features: torch.Tensor, handle_rc: torch.Tensor, region: torch.Tensor,
                threshold: float | None = None) -> torch.Tensor:
    """The object under a handle: latent pixels of ``region`` (h×w bool) whose feature is like the handle's
    (cosine similarity ≥ ``threshold``, None = Otsu's over the region) and connected to the handle's pixel."""
    sim = handle_similarity(features, handle_rc)
    h, w = region.shape
    seed = (int(handle_rc[0].round().clamp(0, h - 1)), int(handle_rc[1].round().clamp(0, w - 1)))
    inside = region.clone()
    inside[seed] = True  # the handle's own pixel belongs to its object even on a region's edge
    cut = otsu_threshold(sim[inside]) if threshold is None else threshold
    return connected_component((sim >= cut) & inside, seed)


@dataclass
class SolidWarp:
    """What :func:`solid_warp` computed (for tests and the ablations)."""

    latent: torch.Tensor  # 1×C×h×w, the warped and filled latent
    cores: torch.Tensor  # n×h×w bool, each handle's object before the move
    moved: torch.Tensor  # h×w bool, where the moved cores landed (coverage ≥ ½)
    holes: torch.Tensor  # h×w bool, the old footprints now showing the filled background
    solid: list[bool]  # per handle: moved as a solid (False: the core was empty or the whole region)


def translate_core(z: torch.Tensor, core: torch.Tensor, move: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The core (h×w bool) of ``z`` (1×C×h×w) translated by ``move`` (latent (drow, dcol), fractional), as
    (values C×h×w, coverage h×w in [0, 1]): the bilinear splat of the core's indicator is the coverage; the value at
    D is the bilinear sample at D − d over the core's pixels only (weights renormalised, so no background bleeds in).
    A partly covered pixel is later blended with what lies under it — sub-pixel moves stay sub-pixel."""
    h, w = z.shape[-2:]
    src_r = torch.arange(h, device=z.device, dtype=torch.float32)[:, None].expand(h, w) - move[0].float()
    src_c = torch.arange(w, device=z.device, dtype=torch.float32)[None, :].expand(h, w) - move[1].float()
    r0, c0 = src_r.floor(), src_c.floor()
    value, coverage = torch.zeros_like(z[0]), torch.zeros(h, w, device=z.device)
    for rr, wr in ((r0, 1 - (src_r - r0)), (r0 + 1, src_r - r0)):
        for cc, wc in ((c0, 1 - (src_c - c0)), (c0 + 1, src_c - c0)):
            on_map = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            ri, ci = rr.clamp(0, h - 1).long(), cc.clamp(0, w - 1).long()
            weight = wr * wc * on_map * core[ri, ci]
            value += z[0][:, ri, ci] * weight
            coverage += weight
    return value / coverage.clamp(min=1e-12), coverage.clamp(max=1.0)


def _nearest_source_before(sources: torch.Tensor) -> torch.Tensor:
    """Per pixel of the h×w bool ``sources``: the column of the nearest source at or left of it (−1: none)."""
    idx = torch.arange(sources.shape[1], device=sources.device).expand_as(sources)
    return torch.where(sources, idx, torch.full_like(idx, -1)).cummax(dim=1).values


def fill_from_background(z: torch.Tensor, holes: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """``z`` with every hole pixel set to the inverse-distance mean of the nearest ``sources`` pixel to its left,
    right, above and below (directions without one dropped; a hole with none keeps its value). Sources are fixed —
    filled holes are never sources — so the fill does not depend on a visiting order."""
    h, w = holes.shape
    rows = torch.arange(h, device=z.device)[:, None].expand(h, w)
    cols = torch.arange(w, device=z.device)[None, :].expand(h, w)
    total, weight = torch.zeros_like(z[0]), torch.zeros(h, w, device=z.device)
    for vertical in (False, True):  # along rows (left, right), then along columns (up, down)
        lines = sources.T if vertical else sources
        n = lines.shape[1]
        for backwards in (False, True):
            if backwards:  # the nearest source after = the nearest before on the mirrored lines
                nearest = n - 1 - _nearest_source_before(lines.flip(1)).flip(1)
                found = nearest < n
            else:
                nearest = _nearest_source_before(lines)
                found = nearest >= 0
            nearest, found = (nearest.T, found.T) if vertical else (nearest, found)
            nearest = nearest.clamp(0, n - 1)
            at = rows if vertical else cols
            dist = (at - nearest).abs().float()
            wgt = torch.where(found & (dist > 0), 1.0 / dist.clamp(min=1), torch.zeros_like(dist))
            src_r, src_c = (nearest, cols) if vertical else (rows, nearest)
            total += z[0][:, src_r, src_c] * wgt
            weight += wgt
    out = z.clone()
    fill = holes & (weight > 0)
    out[0][:, fill] = (total / weight.clamp(min=1e-12))[:, fill]
    return out


def solid_warp(z: torch.Tensor, features: torch.Tensor, region: torch.Tensor, handles: torch.Tensor,
               targets: torch.Tensor, threshold: float | None = None) -> SolidWarp:
    """Move the object under each handle (latent (row, col), fractional) to its target as a solid and fill what it
    leaves from the background (module docstring). ``features`` C×h×w on the latent grid, ``region`` h×w bool (the
    editable region). Handles whose core is empty or covers the whole region are left out (``solid`` False).

    z' = (1 − W)·z_bg + W·V, where z_bg is ``z`` with every core removed and filled from the pixels around it, and
    (V, W) the moved core's values and coverage (:func:`translate_core`); the first handle's core lies on top."""
    cores, solid = [], []
    for handle in handles:
        core = object_core(features, handle, region, threshold)
        ok = bool(core.any()) and int(core.sum()) < int(region.sum())
        cores.append(core if ok else torch.zeros_like(core))
        solid.append(ok)
    cores_t = torch.stack(cores) if cores else torch.zeros(0, *region.shape, dtype=torch.bool, device=z.device)
    removed = cores_t.any(0)
    latent = fill_from_background(z, removed, ~removed)
    moved = torch.zeros_like(removed)
    for core, move in reversed(list(zip(cores_t, targets - handles))):
        if core.any():
            value, coverage = translate_core(z, core, move)
            latent = latent * (1 - coverage) + value[None] * coverage
            moved |= coverage >= 0.5
    return SolidWarp(latent, cores_t, moved, removed & ~moved, solid)
