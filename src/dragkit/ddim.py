"""DDIM (Song et al., 2021) with the reference timestep convention, on top of the diffusers scheduler.

Notation (DDIM paper Eq. 12, η = 0):  x̂₀ = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t,   x_{t'} = √ᾱ_{t'}·x̂₀ + √(1−ᾱ_{t'})·ε.
Denoising (t' < t) goes through ``scheduler.step``; inversion (t' > t) is the one small function below.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from diffusers import DDIMScheduler

# The official code builds its DDIM scheduler with these settings, ignoring the checkpoint's scheduler config.
REFERENCE_DDIM = dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")


def make_scheduler(scheduler_config, num_inference_steps: int) -> DDIMScheduler:
    """A fresh DDIM scheduler (per edit: schedulers carry state) with the model's betas and prediction type."""
    scheduler = DDIMScheduler.from_config(scheduler_config, **REFERENCE_DDIM)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def start_index(num_inference_steps: int, inverted_steps: int) -> int:
    """Index into ``scheduler.timesteps`` of t*, where the inverted latent lives: t* = timesteps[T − k]."""
    return num_inference_steps - inverted_steps


def alpha_prev(scheduler: DDIMScheduler, t: int) -> torch.Tensor:
    """ᾱ of the timestep one DDIM step below t (ᾱ[0] at the bottom, since set_alpha_to_one=False)."""
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod


def epsilon_from_output(scheduler: DDIMScheduler, output: torch.Tensor, sample: torch.Tensor, alpha: torch.Tensor):
    """The UNet's prediction as ε, for epsilon- and v-prediction models."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return output
    if kind == "v_prediction":
        return alpha.sqrt() * output + (1 - alpha).sqrt() * sample
    raise ValueError(f"unsupported prediction_type {kind!r}")


def ddim_step(scheduler: DDIMScheduler, model_output: torch.Tensor, t: int, sample: torch.Tensor) -> torch.Tensor:
    """x_t → x_{t−1} with η = 0 via the scheduler's own ``step`` (differentiable in ``sample`` and the output)."""
    return scheduler.step(model_output, t, sample, eta=0.0, return_dict=False)[0]


def inversion_timesteps(scheduler: DDIMScheduler, inverted_steps: int) -> list[int]:
    """The ``inverted_steps`` smallest timesteps in increasing order (1, 21, …, t*)."""
    return scheduler.timesteps.flip(0)[:inverted_steps].tolist()


def ddim_inversion_step(eps_model: Callable[[torch.Tensor, int], torch.Tensor], scheduler: DDIMScheduler,
                        x: torch.Tensor, t: int) -> torch.Tensor:
    """One inversion step from the level below t up to t.

    As the reference: the UNet is queried at the *destination* timestep t with the latent still at the level below,
    and the clean latent sits at ᾱ[0] (not 1). ``eps_model(x, t)`` returns the raw UNet output.
    """
    a_cur, a_next = alpha_prev(scheduler, t), scheduler.alphas_cumprod[t]
    eps = epsilon_from_output(scheduler, eps_model(x, t), x, a_cur)
    x0 = (x - (1 - a_cur).sqrt() * eps) / a_cur.sqrt()
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


@torch.no_grad()
def ddim_invert(
    eps_model: Callable[[torch.Tensor, int], torch.Tensor],
    scheduler: DDIMScheduler,
    z0: torch.Tensor,
    inverted_steps: int,
    on_step: Optional[Callable[[int, int, torch.Tensor], None]] = None,
) -> torch.Tensor:
    """Deterministic DDIM inversion z₀ → z_{t*} over the ``inverted_steps`` smallest timesteps (1, 21, …, t*)."""
    x = z0
    for i, t in enumerate(inversion_timesteps(scheduler, inverted_steps)):
        x = ddim_inversion_step(eps_model, scheduler, x, t)
        if on_step is not None:
            on_step(i, t, x)
    return x
