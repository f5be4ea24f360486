"""FastDrag (Zhao et al., NeurIPS 2024, arXiv 2405.15769): drag in one step — warp the inverted latent instead of
optimising it.

    1. z0 = E(x)·s;  z_t = DDIM-inversion(z0) to t* (k = round(T·strength) = 7 of T = 10 steps), saving the decoder
       self-attention K/V of every inversion call                                          (stages.invert, kv_copy)
    2. this module's :func:`optimize`: ẑ_t = BNNI(LWF(z_t; M, h → g))                      (paper §3.2–3.3, latent_warp)
    3. denoise ẑ_t from t*, each step's decoder self-attention reading the saved K/V of its t (paper §3.4), decode

Steps 1 and 3 are told in :meth:`dragkit.editor.DragEditor.edit` (the config's ``copies_kv`` makes the inversion
record and the denoising replace); the official defaults are in :class:`~dragkit.config.FastDragConfig`.

Mask and points as the reference (golden README §10.3 step 4). The mask is binarised and resized nearest to the
half-resolution supervision grid (:func:`dragkit.points.mask_to_grid`, as for the other methods), then bilinearly
(align_corners=False, no antialias: torchvision 0.15's tensor resize, the pinned version) to the latent grid; every
latent pixel > 0 is warped. Handles and targets are the supervision-grid points (:mod:`dragkit.points`, rounded half
to even) divided by the grid/latent ratio (4), not rounded: quarter-pixel latent positions.

Edge cases (golden README §10.10; the maths' own in :mod:`dragkit.latent_warp`):

* **No mask.** dragkit's convention is "no mask = the whole image is editable", so the warp region is the whole
  latent: the circle passes through the image corners and the stretch fades to zero there. The reference cannot run
  without a mask (an empty one crashes it); an all-ones mask is what its UI would pass for "everything", so this is
  the reference's behaviour on the mask that means what dragkit's "no mask" means.
* **A mask too thin for the bilinear resize** (it covers latent cells under the nearest mapping the edit checks, but
  no latent pixel gets a bilinear value > 0): the region is the nearest-mapped editable cells instead (never empty:
  :func:`dragkit.checks.check_mask_cells`), with a log line.
* **antialias.** torchvision ≥ 0.17 would antialias the resize and dilate the region; the pinned behaviour (none) is
  used.
* **Moves outside the mask** overwrite those latent pixels, as the reference; ``confine_to_mask`` drops them.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F

from . import latent_warp, points, stages
from .config import FastDragConfig
from .types import ProgressCallback, ProgressEvent, Stage

logger = logging.getLogger(__name__)


def warp_region(edit: stages.Edit, latent_hw: tuple[int, int]) -> torch.Tensor:
    """M: 1×1×h×w float, > 0 where the latent is warped (the mask via the supervision grid, bilinear without
    antialias; no mask: all ones; nothing > 0: the edit's nearest-mapped editable cells)."""
    if edit.request.mask is None:
        return torch.ones(1, 1, *latent_hw, device=edit.editable_latent.device)
    grid = points.mask_to_grid(edit.request.mask, edit.grid_hw)
    region = F.interpolate(grid, size=latent_hw, mode="bilinear", align_corners=False, antialias=False)
    if not bool((region > 0).any()):
        logger.info("the mask covers no latent pixel after the bilinear resize: warping its nearest latent cells")
        region = edit.editable_latent.float().cpu()
    return region.to(edit.editable_latent.device)


def latent_points(edit: stages.Edit, latent_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B): the handles and targets on the latent grid, (row, col), fractional: the supervision-grid points
    divided by the grid/latent ratio per axis (4 at the default supervision_scale 0.5), not rounded."""
    ratio = torch.tensor([edit.grid_hw[0] / latent_hw[0], edit.grid_hw[1] / latent_hw[1]],
                         dtype=torch.float32, device=edit.handles.device)
    return edit.handles.float() / ratio, edit.targets.float() / ratio


def warp_latent(edit: stages.Edit, z_t: torch.Tensor, config: FastDragConfig) -> latent_warp.Warp:
    """LWF + BNNI of the inverted latent ``z_t`` (float32) for this edit's mask and points."""
    latent_hw = tuple(z_t.shape[-2:])
    handles, targets = latent_points(edit, latent_hw)
    return latent_warp.warp(z_t.float(), warp_region(edit, latent_hw), handles, targets,
                            confine=config.confine_to_mask)


def optimize(fm: stages.FeatureModel, edit: stages.Edit, z_t: torch.Tensor, config: FastDragConfig,
             callback: Optional[ProgressCallback] = None) -> stages.DragOutcome:
    """FastDrag's part of an edit (:meth:`dragkit.editor.DragEditor.edit` runs the rest): the one-step warp of z_t
    at t*. There is no tracking: the handles are declared at their targets, the trajectory is [handles, targets] and
    no optimiser step is taken. (``fm`` is unused: nothing reads features.)"""
    warped = warp_latent(edit, z_t, config)
    if callback is not None:
        callback(ProgressEvent(Stage.OPTIMIZATION, 1, 1, handles=edit.to_image_points(edit.targets),
                               timestep=edit.t_star))
    return stages.DragOutcome(warped.filled, z_t, edit.t_index, edit.targets.clone(),
                              [edit.handles.clone(), edit.targets.clone()], 0)
