"""The AlDD schedule (GoodDrag §3.3, Alternating Drag and Denoising) as a control loop without tensors.

Which denoising steps drag, how many supervision steps run, when the handles are tracked and when dragging stops is
decided here; *what* a drag, a tracking or a denoising step computes is injected (:class:`AlddOps`). The same loop
therefore drives the real method (:mod:`dragkit.gooddrag`) and the schedule tests (a fake ``ops``, no UNet).

For each drag step i = 0 … T_d−1 (the first T_d denoising steps after inversion), as the official code:

    1. ``begin(i)``: a new optimiser on the current latent at t_i;
    2. ``track(i, "initial")``: re-localise the handles after the previous denoising step (at t* it returns the
       starting points). It counts neither towards B nor towards the no-change counter;
    3. up to B times: stop dragging for good if every handle is within the stop distance of its target or the last
       ``early_stop_trackings`` trackings in a row moved no handle (the counter persists across timesteps); otherwise
       J × ``supervise(i)``, then ``track(i, "after_supervision")`` — with the features of the last supervision step's
       forward, i.e. from *before* its update (one update stale, as the reference);
    4. ``denoise(i)``: one DDIM step t_i → t_{i+1} of the dragged latent and the source branch (no attention control).

The stop test runs only before a supervision step (the code tests at the top of its loop): a handle set that reaches
its targets with the B-th tracking is re-tracked after the denoising step before the test. After the drag phase the
caller denoises to the end under reference-latent control, from step ``AlddOutcome.drag_steps_run``.

The reference's extra-tracking rule "motion loss ≤ threshold" is omitted: at its UI/bench threshold 0 it can only fire
when no pair is active, which the stop test already excludes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

INITIAL = "initial"
AFTER_SUPERVISION = "after_supervision"


@dataclass(frozen=True)
class AlddPlan:
    drag_steps: int  # T_d: denoising steps preceded by drag operations (≤ the steps left after inversion)
    trackings_per_step: int  # B
    supervision_per_tracking: int  # J
    early_stop_trackings: int  # stop after this many consecutive trackings that moved no handle

    @classmethod
    def from_config(cls, config, available_steps: int) -> "AlddPlan":
        return cls(min(config.drag_denoise_steps, available_steps), config.trackings_per_denoise,
                   config.supervision_steps_per_tracking, config.early_stop_trackings)

    @property
    def max_supervision_steps(self) -> int:
        return self.drag_steps * self.trackings_per_step * self.supervision_per_tracking


class AlddOps(Protocol):
    """What the schedule asks for; the real implementation is ``gooddrag._AlddRun``."""

    def begin(self, step: int) -> None:
        """Start drag step ``step``: a fresh optimiser on the current latent."""

    def track(self, step: int, kind: str) -> bool:
        """Track the handles (``INITIAL`` or ``AFTER_SUPERVISION``); return whether any handle moved."""

    def reached(self) -> bool:
        """Whether every handle is within the stop distance of its target."""

    def supervise(self, step: int) -> None:
        """One motion-supervision step (forward, loss, backward, optimiser step)."""

    def denoise(self, step: int) -> None:
        """One DDIM step of both branches, from the timestep of ``step`` to the next."""


@dataclass
class AlddOutcome:
    drag_steps_run: int  # denoising steps already taken (the final denoising resumes after them)
    supervision_steps: int
    trackings: int  # trackings after supervision (the per-step initial ones not counted)
    no_change: int  # consecutive trackings without movement at the end
    stop_reason: str  # "reached", "no_change" or "schedule_end"


def run_aldd(plan: AlddPlan, ops: AlddOps) -> AlddOutcome:
    """Drive ``ops`` through the AlDD drag phase (see the module docstring)."""
    no_change = supervision = trackings = 0
    for i in range(plan.drag_steps):
        ops.begin(i)
        ops.track(i, INITIAL)
        reason = None
        for _ in range(plan.trackings_per_step):
            if ops.reached():
                reason = "reached"
            elif no_change >= plan.early_stop_trackings:
                reason = "no_change"
            if reason:
                break
            for _ in range(plan.supervision_per_tracking):
                ops.supervise(i)
                supervision += 1
            moved = ops.track(i, AFTER_SUPERVISION)
            trackings += 1
            no_change = 0 if moved else no_change + 1
        ops.denoise(i)
        if reason:
            return AlddOutcome(i + 1, supervision, trackings, no_change, reason)
    return AlddOutcome(plan.drag_steps, supervision, trackings, no_change, "schedule_end")
