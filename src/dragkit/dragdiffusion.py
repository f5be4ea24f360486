"""DragDiffusion (Shi et al., CVPR 2024): optimise one DDIM-inverted latent z_t by motion supervision and point
tracking on UNet decoder features, then denoise it under reference-latent-control.

    1. z0 = E(x)·s;  z_t = DDIM-inversion(z0) to t* (k = round(T·strength) steps)           (stages.invert)
    2. this module's :func:`optimize` — for k = 0..K−1:  F, ε = UNet(ẑ_t^k);  ẑ_{t−1}^k = DDIM(ε, ẑ_t^k)
         k > 0: h ← track(F(z_t) at h⁰, F, h, r2)                                            (Eq. 5)
         stop when every ‖g − h‖ < 2;  L = Σ motion terms + λ‖(ẑ_{t−1} − z_{t−1})⊙(1−M)‖₁   (Eq. 3)
         ẑ_t ← Adam step on L                                                                 (Eq. 4)
    3. denoise [z_t, ẑ_t] with mutual self-attention on the decoder; decode the edited branch  (§3.4)

Steps 1 and 3 (and the identity LoRA before them) are shared with GoodDrag and told in
:meth:`dragkit.editor.DragEditor.edit`.

Generated images (``generation`` given, paper appendix C): no LoRA, no inversion (z_t is the generation's latent at
t*), CFG kept (F is the weighted concatenation of both branches' features, :mod:`dragkit.guidance`), and the DDIM
step is the generation sampler's step (:mod:`dragkit.sampling`).

Reference details kept (spec §1.3): F(z_t) is taken from step 0's forward, which also gives z_{t−1}, so the mask term's
residual is exactly zero at step 0; the mask term is dropped when no mask is drawn — and then the forward ends at the
feature block (nothing after it reaches the loss: same F, same gradients, a quarter less UNet work for SD-1.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from . import stages
from .config import DragDiffusionConfig
from .motion import LossTerms, dragdiffusion_motion_term, handles_on_host, masked_latent_term, motion_loss
from .optim import ScaledStepper
from .tracking import reference_vectors_at, track_points
from .types import ProgressCallback, ProgressEvent, Stage


def drag_loss(features, handles, targets, x_prev, x_prev_0, editable_latent, has_mask: bool,
              config: DragDiffusionConfig, active: Optional[list[int]] = None) -> LossTerms:
    """Eq. 3 with the reference's scaling: Σ_i (2r1+1)²·mean|sg(F_q) − F_{q+d_i}| + λ·Σ|(ẑ_{t−1} − z_{t−1})⊙(1−M)|;
    the λ-term is dropped when no mask is drawn."""
    regularizer = None
    if has_mask and config.mask_weight > 0:
        regularizer = lambda: config.mask_weight * masked_latent_term(x_prev, x_prev_0, editable_latent)  # noqa: E731
    return motion_loss(handles, targets, config.stop_distance,
                       lambda i: dragdiffusion_motion_term(features, handles[i], targets[i], config.motion_radius),
                       regularizer, active)


@dataclass
class Optimization:
    latent: torch.Tensor
    handles: torch.Tensor
    trajectory: list[torch.Tensor]  # handles used by each step's loss (entry 0 = start)
    steps: int


def optimize_latent(fm: stages.FeatureModel, edit: stages.Edit, z_t: torch.Tensor, config: DragDiffusionConfig,
                    callback: Optional[ProgressCallback] = None) -> Optimization:
    """Motion supervision + point tracking on the single latent at t* (Adam, ≤ K steps, stop at distance < 2)."""
    t = edit.t_star
    z = z_t.detach().clone().float().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=config.latent_lr)
    stepper = ScaledStepper(optimizer, z.device, fm.model.dtype, "latent optimisation")
    handles, targets = edit.handles.clone(), edit.targets
    reference, x_prev_0 = None, None
    trajectory = [handles.clone()]
    steps = 0
    # Without the mask term only F is needed: the forward stops at the feature block (ε and ẑ_{t−1} are unused)
    needs_eps = edit.has_mask and config.mask_weight > 0

    def evaluate():
        if not needs_eps:
            return fm.features(z, t, edit.text), None
        eps, features = fm(z, t, edit.text)
        return features, edit.step(eps, edit.t_index, z)

    for k in range(config.optimization_steps):
        features, x_prev = evaluate()
        if k == 0:
            reference = reference_vectors_at(features, edit.handles)
            x_prev_0 = x_prev.detach() if x_prev is not None else None
        else:
            handles = track_points(reference, features.detach(), handles, config.tracking_radius)
            trajectory.append(handles.clone())
        active, on_host = handles_on_host(handles, targets, config.stop_distance)  # the step's one stop-test sync
        if not active:
            break
        loss = drag_loss(features, handles, targets, x_prev, x_prev_0, edit.editable_latent, edit.has_mask, config,
                         active)
        while not stepper.step(loss.total):  # fp16 overflow: z unchanged; evaluate it again at the lowered scale
            features, x_prev = evaluate()
            loss = drag_loss(features, handles, targets, x_prev, x_prev_0, edit.editable_latent, edit.has_mask,
                             config, active)
        steps += 1
        if callback is not None:
            callback(ProgressEvent(Stage.OPTIMIZATION, k + 1, config.optimization_steps,
                                   handles=edit.to_image_points(on_host), loss=loss.total.item(),
                                   timestep=t, skipped=stepper.skipped))
    return Optimization(z.detach(), handles, trajectory, steps)


def optimize(fm: stages.FeatureModel, edit: stages.Edit, z_t: torch.Tensor, config: DragDiffusionConfig,
             callback: Optional[ProgressCallback] = None) -> stages.DragOutcome:
    """DragDiffusion's part of an edit (:meth:`dragkit.editor.DragEditor.edit` runs the rest): optimise z_t at t*;
    the reference branch of the final denoising is the un-optimised z_t, denoised from t* alongside."""
    opt = optimize_latent(fm, edit, z_t, config, callback)
    return stages.DragOutcome(opt.latent, z_t, edit.t_index, opt.handles, opt.trajectory, opt.steps)
