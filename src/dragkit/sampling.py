"""The samplers a generated image can come from (DDIM, DPM-Solver++(2M), DPM-Solver++(2M) with Karras sigmas), and the
two ways the drag steps them — always through the scheduler's own ``step`` on its own timesteps.

DDIM is one-step: x_{i+1} depends on x_i and the model output at t_i only, so dragging a DDIM trajectory is exactly
the real-image case (the reference DDIM configuration of :mod:`dragkit.ddim`).

DPM-Solver++(2M) is multistep: x_{i+1} also uses the model output of the step before. A dragged latent ẑ at t_i has
no such history of its own, so the drag *restarts* the solver at index i — a fresh copy of the scheduler whose
first step from t_i is the solver's first-order update (DPM-Solver++(1), which in data-prediction form is the DDIM
update between the solver's own t_i and t_{i+1}, Karras-spaced or not), after which it is second order again with
the dragged branch's own history:

* the mask term's x_{t−1}(ẑ) and GoodDrag's drag-phase denoising steps are that first-order step of a restarted
  copy (:func:`step`, a pure function of (output, index, sample));
* its target x̄_{t−1} is the same step applied to the saved generation latent z_{t_i} (so the two sides of the
  λ-term go through the same map and the residual is exactly zero before any drag);
* the final denoising is the restarted solver run to the end (:func:`restarted`), on its own timesteps.

The reference instead applies a hand-written DDIM step with t−20 spacing to every trajectory, which for DPM++
(whose timesteps are linspace- or Karras-spaced) steps to a timestep the solver never visits.
"""

from __future__ import annotations

import copy

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from .config import SCHEDULERS
from .ddim import ddim_step
from .ddim import make_scheduler as make_ddim_scheduler
from .types import DragError


def make_scheduler(scheduler_config, name: str, num_inference_steps: int):
    """A scheduler with its timesteps set, never stepped itself (steps go through :func:`step` / :func:`restarted`).

    ``ddim``: the reference DDIM (:func:`dragkit.ddim.make_scheduler`). ``dpm++2m[-karras]``: DPM-Solver++ of order 2
    from the model's own scheduler config, as the reference (``DPMSolverMultistepScheduler.from_config``)."""
    if name == "ddim":
        return make_ddim_scheduler(scheduler_config, num_inference_steps)
    if name not in SCHEDULERS:
        raise DragError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    scheduler = DPMSolverMultistepScheduler.from_config(
        scheduler_config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=name.endswith("karras"))
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def restarted(scheduler, index: int):
    """A fresh solver state that starts at ``scheduler.timesteps[index]`` (DDIM is stateless: itself)."""
    if isinstance(scheduler, DDIMScheduler):
        return scheduler
    fresh = copy.deepcopy(scheduler)
    fresh.set_timesteps(len(scheduler.timesteps), device=scheduler.timesteps.device)
    fresh.set_begin_index(index)
    return fresh


def step(scheduler, output: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
    """x_{i+1} from x_i = ``sample`` at timesteps[index]: the first step of the solver restarted at ``index``
    (differentiable in ``output`` and ``sample``)."""
    t = int(scheduler.timesteps[index])
    if isinstance(scheduler, DDIMScheduler):
        return ddim_step(scheduler, output, t, sample)
    return restarted(scheduler, index).step(output, t, sample, return_dict=False)[0].to(sample.dtype)


def predict_x0(scheduler, output: torch.Tensor, t: int, sample: torch.Tensor) -> torch.Tensor:
    """x̂₀ = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t for an ε-prediction output (v-prediction converted), any scheduler."""
    from .ddim import epsilon_from_output

    alpha = scheduler.alphas_cumprod[int(t)].to(sample.device)
    eps = epsilon_from_output(scheduler, output, sample, alpha)
    return (sample - (1 - alpha).sqrt() * eps) / alpha.sqrt()
