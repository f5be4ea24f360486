"""The optimiser step every loop shares (identity LoRA, DragDiffusion's latent, GoodDrag's latent): gradients of a
float32 master copy, scaled while fp16 activations flow (a :class:`torch.amp.GradScaler` that is off otherwise)."""

from __future__ import annotations

import torch


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A gradient scaler for a model running in ``dtype`` on ``device``: active for fp16 only (bf16 and fp32 have
    the range of fp32); one per optimisation, so its scale carries over from step to step."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor) -> None:
    """zero_grad → backward of the (scaled) loss → step (skipped by the scaler on inf/nan gradients) → update."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
