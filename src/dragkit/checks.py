"""Checks of an edit's inputs against the loaded model, before any work (diffusers' ``check_inputs`` habit), and of
its intermediate results (a NaN/Inf stops the edit with one line naming the stage)."""

from __future__ import annotations

import torch

from .types import DragError


def check_edit(model, request, config) -> None:
    """Everything about (request, config) that depends on the loaded model: a :class:`DragError` if it cannot run."""


def check_finite(x: torch.Tensor, stage: str, hint: str = "") -> torch.Tensor:
    """``x`` if every value is finite; otherwise a one-line :class:`DragError` naming ``stage`` (and ``hint``)."""
    if not bool(torch.isfinite(x).all()):
        raise DragError(f"the {stage} produced NaN/Inf values{'; ' + hint if hint else ''}")
    return x
