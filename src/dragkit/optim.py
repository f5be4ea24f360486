"""The optimiser step every loop shares (identity LoRA, DragDiffusion's latent, GoodDrag's latent): gradients of a
float32 master copy, scaled while fp16 activations flow (a :class:`torch.amp.GradScaler` that is off otherwise).

In fp16 the scaler skips a step whose gradients overflowed (and halves its scale); such a step changed nothing, so it
does not count as an optimisation step: loops ask :meth:`ScaledStepper.step` whether the step was applied, and report
:attr:`ScaledStepper.skipped`. That question costs two host reads per step (the scale before and after), in fp16
only (bf16 and fp32 never skip)."""

from __future__ import annotations

import logging
from typing import Optional

import torch

from .types import DragError

logger = logging.getLogger(__name__)

# Consecutive skipped steps after which fp16 is given up on: from the default scale 2¹⁶ the scaler has halved its way
# down to 2⁻⁴; gradients that still overflow are NaN/Inf themselves, not a matter of scale.
MAX_CONSECUTIVE_SKIPS = 20


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A gradient scaler for a model running in ``dtype`` on ``device``: active for fp16 only (bf16 and fp32 have
    the range of fp32); one per optimisation, so its scale carries over from step to step."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)


class ScaledStepper:
    """zero_grad → backward of the (scaled) loss → step → update, for one optimisation (one scaler: its scale carries
    over from step to step; ``optimizer`` may be replaced between steps, as GoodDrag's fresh Adam per drag step).
    :meth:`step` says whether the step was applied; :attr:`skipped` counts those that were
    not (fp16 overflow)."""

    def __init__(self, optimizer: Optional[torch.optim.Optimizer], device: torch.device, dtype: torch.dtype,
                 what: str):
        self.optimizer, self.what = optimizer, what
        self.scaler = grad_scaler(device, dtype)
        self.skipped = 0
        self._consecutive = 0

    def step(self, loss: torch.Tensor) -> bool:
        optimizer, scaler = self.optimizer, self.scaler
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if not scaler.is_enabled():
            optimizer.step()
            return True
        before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() >= before:  # the scale only drops when the step found inf/nan gradients
            self._consecutive = 0
            return True
        self.skipped += 1
        self._consecutive += 1
        logger.debug("%s: fp16 gradient overflow, step skipped (scale now %g)", self.what, scaler.get_scale())
        if self._consecutive >= MAX_CONSECUTIVE_SKIPS:
            raise DragError(f"the {self.what} overflows in fp16 at every step ({self._consecutive} skipped in a row); "
                            "run with --dtype bf16 or fp32")
        return False
