"""GoodDrag (Zhang et al., ICLR 2025): drag operations alternated with denoising steps (AlDD, §3.3) and
information-preserving motion supervision (§3.4), on the same primitives as DragDiffusion.

    1. z0 = E(x)·s;  z_{t*} = DDIM-inversion(z0), k = round(T·strength) steps (t* = 741)            (stages.invert)
    2. this module's :func:`optimize` — for the first T_d denoising steps t_i = t*, t*−20, …  (schedule: :mod:`dragkit.aldd`):
         x̄ (undragged source branch): F_orig[t_i] = F(x̄_{t_i}), x̄_{t_i−1} = DDIM(x̄_{t_i})  (once per edit, on device)
         new Adam on ẑ = z_{t_i};  initial tracking h ← track(F_orig[t_i] at h⁰, F(ẑ), h, r2)
         up to B times: stop if all ‖g − h‖ < 2 or no handle moved in the last `early_stop_trackings` trackings;
           J × [ L = Σ_i (2r1)²·mean|sg(F_orig[t_i])_{Ω(h⁰_i)} − F(ẑ)_{Ω(h_i + d_i)}|                        (Eq. 8)
                     + λ·Σ|(x_{t_i−1}(ẑ) − x̄_{t_i−1})⊙(1−M)|,   d_i = (g_i − h_i)/‖g_i − h_i‖·min(β, ‖g_i − h_i‖);
                 Adam step ]
           h ← track(F_orig[t_i] at h⁰, F(ẑ) of the last supervision forward, h, r2)   (one update stale)
         z_{t_{i+1}} = DDIM(ẑ) (no attention control)
    3. denoise [x̄, z] to the end with mutual self-attention on up_blocks 2, 3 (installed when dragging ends);
       decode the edited branch.

Steps 1 and 3 (and the identity LoRA before them) are shared with DragDiffusion and told in
:meth:`dragkit.editor.DragEditor.edit`.

Generated images (``generation`` given): z_{t*} is the generation's own latent, every evaluation is guided as the
generation was (CFG features, :mod:`dragkit.guidance`) and every "DDIM" step above is a step of the generation's
sampler, restarted at t* (:mod:`dragkit.sampling`).

Paper vs official code (spec §4): we follow the code. The features are up_blocks[2]'s output, not the UNet's
last layer; the motion term's factor is (2r1)², not (2r1+1)²; the λ-term is always on, so with no mask drawn the
whole latent is pinned (``regularize_without_mask=False`` drops it instead); λ = 0.2 as the UI and paper (the bench
script uses 0.1 and early stop 5); mutual self-attention is off while dragging.

Departures from the code that do not change the maths: windows are clipped / sampled with clamped indices at borders;
the undragged trajectory is computed lazily, one forward per drag step on the device (the code precomputes T_d + 1
steps on the CPU and re-denoises the source in a batch of two); the stop test runs before the forward it would waste;
the forward of an unchanged latent is reused for the denoising step. At t* the edited latent *is* the source, so the
undragged x̄_{t*−1} is taken from the first supervision forward itself: the λ-term's residual is exactly zero at the
first step, as in the code (golden README §7.3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch

from . import stages
from .aldd import INITIAL, AlddPlan, run_aldd
from .animation import draw_points
from .config import GoodDragConfig
from .motion import LossTerms, gooddrag_motion_term, handles_on_host, masked_latent_term, motion_loss
from .optim import ScaledStepper
from .sampling import predict_x0
from .tracking import reference_vectors_at, track_points
from .types import ProgressCallback, ProgressEvent, Stage

logger = logging.getLogger(__name__)


# --- maths (pure functions on tensors) -----------------------------------------------------------------------------

def gooddrag_loss(features: torch.Tensor, reference_features: torch.Tensor, handles: torch.Tensor,
                  initial_handles: torch.Tensor, targets: torch.Tensor, x_prev: torch.Tensor,
                  x_prev_reference: torch.Tensor, editable: Optional[torch.Tensor],
                  config: GoodDragConfig, active: Optional[list[int]] = None) -> LossTerms:
    """Eq. 8 with the code's scaling: Σ_i (2r1)²·mean|sg(F_orig)_{Ω(h⁰_i)} − F_{Ω(h_i+d_i)}| over the pairs still at
    ≥ the stop distance, + λ·Σ|(x_{t−1} − x̄_{t−1})⊙(1 − editable)|. ``editable`` None drops the λ-term.

    ``config.information_preserving`` False is the paper's ablation "w/o IP" (Eq. 7, §5.3): the target patch is
    sg(F) of the *current* latent around the *current* handle h_i, as DragDiffusion, instead of F_orig around h⁰_i."""
    source, origins = (reference_features, initial_handles) if config.information_preserving else (features, handles)
    regularizer = None
    if editable is not None and config.mask_weight > 0:
        regularizer = lambda: config.mask_weight * masked_latent_term(x_prev, x_prev_reference, editable)  # noqa: E731
    return motion_loss(handles, targets, config.stop_distance,
                       lambda i: gooddrag_motion_term(features, source, handles[i], origins[i], targets[i],
                                                      config.motion_radius, config.drag_step_size),
                       regularizer, active)


def regularized_region(edit: stages.Edit, config: GoodDragConfig) -> Optional[torch.Tensor]:
    """The ``editable`` map of the λ-term: the drawn mask; with none, all-zero (the code pins the whole latent) or
    None (term dropped) when ``regularize_without_mask`` is off."""
    if edit.has_mask:
        return edit.editable_latent
    return torch.zeros_like(edit.editable_latent) if config.regularize_without_mask else None


# --- one UNet evaluation and the undragged trajectory --------------------------------------------------------------

@dataclass
class Forward:
    """One UNet evaluation of ``latent`` at ``t``: features on the grid, ε and the sampler's step x_{t−1}."""

    t: int
    latent: torch.Tensor  # detached copy of the evaluated latent
    features: torch.Tensor
    eps: torch.Tensor
    x_prev: torch.Tensor


def forward(fm: stages.FeatureModel, edit: stages.Edit, z: torch.Tensor, t: int) -> Forward:
    """Evaluate ``z`` at ``t`` (differentiable when grad is enabled and ``z`` requires it)."""
    eps, features = fm(z, t, edit.text)
    return Forward(t, z.detach(), features, eps, edit.step(eps, edit.index_of(t), z))


@dataclass
class UndraggedStep:
    """The undragged trajectory at one drag timestep: F_orig[t], x̄_{t−1}[t] and the tracking descriptors."""

    t: int
    features: torch.Tensor  # F_orig[t] = F(x̄_t)
    x_prev: torch.Tensor  # x̄_{t−1}[t], the λ-term's target and the source branch's next latent
    vectors: torch.Tensor  # N×C: F_orig[t] at the initial handles


def undragged_from(fwd: Forward, initial_handles: torch.Tensor) -> UndraggedStep:
    """The undragged step from an evaluation of the source latent itself (same tensors, detached)."""
    features = fwd.features.detach()
    return UndraggedStep(fwd.t, features, fwd.x_prev.detach(), reference_vectors_at(features, initial_handles))


@torch.no_grad()
def undragged_step(fm: stages.FeatureModel, edit: stages.Edit, source: torch.Tensor, t: int) -> UndraggedStep:
    """Evaluate the source branch x̄_t once (no grad)."""
    return undragged_from(forward(fm, edit, source, t), edit.handles)


# --- the ops the AlDD schedule drives ------------------------------------------------------------------------------

class _AlddRun:
    """Per-edit state of the drag phase (created for one edit, then dropped). Implements :class:`aldd.AlddOps`."""

    def __init__(self, fm: stages.FeatureModel, edit: stages.Edit, z_t: torch.Tensor, config: GoodDragConfig,
                 total_steps: int, callback: Optional[ProgressCallback], trajectory: Optional[dict] = None):
        self.model, self.fm, self.edit, self.config, self.callback = fm.model, fm, edit, config, callback
        self.known = trajectory if trajectory is not None else {}  # the undragged trajectory: read and filled
        self.total_steps = total_steps
        self.latent = z_t.detach().float()  # edited branch, at the current drag timestep
        self.source = self.latent  # undragged branch x̄
        self.handles = edit.handles.clone()
        # (active pairs, handles) on the host, refreshed by each tracking: the supervision steps between two
        # trackings read them without waiting for the device
        self.on_host = handles_on_host(self.handles, edit.targets, config.stop_distance)
        self.editable = regularized_region(edit, config)
        self.trajectory = [self.handles.clone()]
        self.frames = [self._frame_of(None)] if config.animation else []
        self.supervision_steps = 0
        # one scaler per edit (its scale carries over); each drag step gives it a fresh Adam (``begin``)
        self.stepper = ScaledStepper(None, self.latent.device, self.model.dtype, "latent optimisation")
        self.z = self.undragged = None
        self.pending: Optional[Forward] = None  # evaluation of the current z, not yet used by a supervision step
        self.last: Optional[Forward] = None  # evaluation used by the latest supervision step (pre-update)

    def timestep(self, step: int) -> int:
        return int(self.edit.scheduler.timesteps[self.edit.t_index + step])

    def begin(self, step: int) -> None:
        t = self.timestep(step)
        self.z = self.latent.clone().requires_grad_(True)
        self.stepper.optimizer = torch.optim.Adam([self.z], lr=self.config.latent_lr)
        self.pending = forward(self.fm, self.edit, self.z, t)  # initial tracking + first supervision step
        self.last = None
        known = self.known.get(t)  # a re-edit of the same image: F_orig[t], x̄_{t−1} already computed
        if known is not None:
            self.undragged = UndraggedStep(t, *known, reference_vectors_at(known[0], self.edit.handles))
        elif torch.equal(self.latent, self.source):  # at t*: the source itself → λ-residual exactly 0 at step 1
            self.undragged = undragged_from(self.pending, self.edit.handles)
        else:
            self.undragged = undragged_step(self.fm, self.edit, self.source, t)
        self.known[t] = (self.undragged.features, self.undragged.x_prev)

    def track(self, step: int, kind: str) -> bool:
        fwd = self.pending if kind == INITIAL else self.last  # after J steps: the stale, pre-update features
        new = track_points(self.undragged.vectors, fwd.features.detach(), self.handles, self.config.tracking_radius)
        before = self.on_host[1]
        self.handles = new
        self.on_host = handles_on_host(new, self.edit.targets, self.config.stop_distance)  # the tracking's one sync
        moved = self.on_host[1] != before
        self.trajectory.append(new.clone())
        if self.config.animation:
            self.frames.append(self._frame_of(fwd))
        return moved

    def reached(self) -> bool:
        return not self.on_host[0]

    def _loss(self, fwd: Forward) -> LossTerms:
        u = self.undragged
        return gooddrag_loss(fwd.features, u.features, self.handles, self.edit.handles, self.edit.targets, fwd.x_prev,
                             u.x_prev, self.editable, self.config, self.on_host[0])

    def supervise(self, step: int) -> None:
        fwd = self.pending if self.pending is not None else forward(self.fm, self.edit, self.z, self.timestep(step))
        self.pending = None
        terms = self._loss(fwd)
        while not self.stepper.step(terms.total):  # fp16 overflow: z unchanged; evaluate it again, lower scale
            fwd = forward(self.fm, self.edit, self.z, self.timestep(step))
            terms = self._loss(fwd)
        self.last = Forward(fwd.t, fwd.latent, fwd.features.detach(), fwd.eps.detach(), fwd.x_prev.detach())
        self.supervision_steps += 1
        if self.callback is not None:
            self.callback(ProgressEvent(Stage.OPTIMIZATION, self.supervision_steps, self.total_steps,
                                        handles=self.edit.to_image_points(self.on_host[1]),
                                        loss=terms.total.item(),
                                        timestep=fwd.t, skipped=self.stepper.skipped))

    @torch.no_grad()
    def denoise(self, step: int) -> None:
        t = self.timestep(step)
        z = self.z.detach()
        eps = self.pending.eps.detach() if self.pending is not None else self.fm(z, t, self.edit.text)[0]
        self.latent = self.edit.step(eps, self.edit.t_index + step, z)
        self.source = self.undragged.x_prev
        self.pending = self.last = self.undragged = None

    @torch.no_grad()
    def _frame_of(self, fwd: Optional[Forward]):
        """The decoded prediction x̂0 of ``fwd`` (the input image before any step) with the current handles."""
        request = self.edit.request
        if fwd is None:
            image = request.image
        else:
            x0 = predict_x0(self.edit.scheduler, fwd.eps.detach(), fwd.t, fwd.latent)
            image = stages.to_pil(self.model.decode(x0), request.size)
        return draw_points(image, self.edit.to_image_points(self.handles), request.targets)


# --- the method ----------------------------------------------------------------------------------------------------

def optimize(fm: stages.FeatureModel, edit: stages.Edit, z_t: torch.Tensor, config: GoodDragConfig,
             callback: Optional[ProgressCallback] = None, trajectory: Optional[dict] = None) -> stages.DragOutcome:
    """GoodDrag's part of an edit (:meth:`dragkit.editor.DragEditor.edit` runs the rest): AlDD from the inverted
    latent ``z_t`` — the T_d drag-and-denoise steps (see the module docstring). The outcome's latent and source are at
    the timestep where the final, reference-controlled denoising resumes.

    ``trajectory``: the undragged trajectory of this image and settings, {t: (F_orig[t], x̄_{t−1})} — the editor passes
    a :class:`~dragkit.prepared.PreparedImage`'s (:meth:`~dragkit.prepared.PreparedImage.trajectory`), so re-edits
    reuse what the first computed; it is read and filled here. None: a fresh one, dropped with this edit."""
    plan = AlddPlan.from_config(config, len(edit.scheduler.timesteps) - edit.t_index)
    run = _AlddRun(fm, edit, z_t, config, plan.max_supervision_steps, callback, trajectory)
    outcome = run_aldd(plan, run)
    logger.info("drag phase: %d denoising steps, %d supervision steps, %d trackings, stop: %s",
                outcome.drag_steps_run, outcome.supervision_steps, outcome.trackings, outcome.stop_reason)
    return stages.DragOutcome(run.latent, run.source, edit.t_index + outcome.drag_steps_run, run.handles,
                              run.trajectory, outcome.supervision_steps, run.frames if config.animation else None)
