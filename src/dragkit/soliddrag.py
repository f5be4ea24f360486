"""SolidDrag — dragkit's own method: FastDrag's one-step drag with objects that move as solids, so the drag finishes.

    1. z0 = E(x)·s;  z_t = DDIM-inversion(z0) to t*, saving the decoder self-attention K/V      (as FastDrag)
    2. this module's :func:`optimize`: F = UNet decoder features at t* (the ones DragDiffusion tracks with);
       for each handle, its object = the connected pixels of the editable region whose F is like the handle's
       (Otsu's cut); lift the objects out, fill their footprints from the background around them, lay each back at
       its whole drag d_i                                                                        (:mod:`dragkit.solid`)
    3. denoise from t*, each step's decoder self-attention reading the saved K/V of its t        (as FastDrag)

Why. The founding methods stop early because their point tracker declares arrival on near-ties; FastDrag imposes
the motion but stretches it (scale 1 at the handle, 0 at a circle around the mask), so an object's far side travels
less than its handle and the hole it leaves is interpolated from its own moved pixels (a ghost). Moving the handle's
object by exactly d_i — and filling only from what is not the object — removes both. Handles on content that no
object stands out from (the core is empty or the whole region) keep FastDrag's warp.

It sees only what a photo request has: the image (through the model's own features), the prompt, the points and the
mask. Defaults are FastDrag's (10 DDIM steps, strength 0.7, no LoRA, K/V copy); the ablation is in docs/shapes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import fastdrag, latent_warp, solid, stages
from .config import SolidDragConfig
from .types import ProgressCallback, ProgressEvent, Stage


def latent_features(fm: stages.FeatureModel, edit: stages.Edit, z_t: torch.Tensor) -> torch.Tensor:
    """C×h×w: the decoder features F(z_t*) (the config's feature block) on the latent grid — bilinearly resized
    from the block's output, the conditional branch under CFG."""
    with torch.no_grad():
        raw = fm.features(z_t, edit.t_star, edit.text).raw
    return F.interpolate(raw[-1:].float(), size=tuple(z_t.shape[-2:]), mode="bilinear", align_corners=False)[0]


def optimize(fm: stages.FeatureModel, edit: stages.Edit, z_t: torch.Tensor, config: SolidDragConfig,
             callback: Optional[ProgressCallback] = None) -> stages.DragOutcome:
    """SolidDrag's part of an edit (:meth:`dragkit.editor.DragEditor.edit` runs the rest): the objects under the
    handles moved whole at t*; handles without a distinct object warped as FastDrag does."""
    latent_hw = tuple(z_t.shape[-2:])
    handles, targets = fastdrag.latent_points(edit, latent_hw)
    region = fastdrag.warp_region(edit, latent_hw)[0, 0] > 0
    result = solid.solid_warp(z_t.float(), latent_features(fm, edit, z_t), region, handles, targets,
                              config.core_threshold)
    latent = result.latent
    rest = [i for i, ok in enumerate(result.solid) if not ok]
    if rest:  # FastDrag's warp for these handles, over the region the solids left alone
        free = region & ~result.moved & ~result.cores.any(0)
        latent = latent_warp.warp(latent, free, handles[rest], targets[rest], confine=config.confine_to_mask).filled
    if callback is not None:
        callback(ProgressEvent(Stage.OPTIMIZATION, 1, 1, handles=edit.to_image_points(edit.targets),
                               timestep=edit.t_star))
    return stages.DragOutcome(latent, z_t, edit.t_index, edit.targets.clone(),
                              [edit.handles.clone(), edit.targets.clone()], 0)
