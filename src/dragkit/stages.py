"""Stages shared by every drag method: preparing an edit, the UNet forward with features, inversion, the final
reference-controlled denoising and decoding. Per-edit state lives in a fresh :class:`Edit`, never on the model.

Sizes. The input image (W×H, any size) is resized bilinearly to the *working size*: each side rounded to the nearest
multiple of the VAE factor (8 for SD), so the latent is (H_w/8)×(W_w/8) and no pixel is cropped. The feature grid is
(int(H_w/2), int(W_w/2)) as in the reference. Points map from input pixels straight to the grid (:mod:`points`);
the decoded result is resized bilinearly back to exactly W×H. Images whose sides are already multiples of 8 (all
golden cases, 512×512) are not resampled at all.

Generated images (DragDiffusion §4.3, appendix C): given the :class:`~dragkit.generation.Generation` an image came
from, there is no inversion — z_{t*} is the generation's own latent at step T − k — the UNet is conditioned as during
the generation (prompt, negative prompt, CFG scale: :mod:`dragkit.guidance`), steps follow the generation's sampler
(:mod:`dragkit.sampling`) and FreeU, if it was on, stays on for the drag.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from PIL import Image

from . import points
from . import sampling
from .ddim import ddim_invert, make_scheduler, start_index
from .features import capture_features, resize_features, supervision_size
from .guidance import TextConditioning
from .models import DiffusionModel
from .reference_attention import reference_attention
from .types import DragRequest, ProgressCallback, ProgressEvent


@dataclass
class Edit:
    """Everything one edit computes before optimisation (created per call; nothing lives on the model)."""

    request: DragRequest
    working_size: tuple[int, int]  # (W_w, H_w), multiples of the VAE factor
    grid_hw: tuple[int, int]  # feature grid (rows, cols)
    image: torch.Tensor  # 1×3×H_w×W_w in [−1, 1]
    handles: torch.Tensor  # N×2 (row, col) on the grid
    targets: torch.Tensor  # N×2 (row, col)
    has_mask: bool
    editable_latent: torch.Tensor  # 1×1×h×w {0,1}, 1 = may change
    text: TextConditioning  # prompt embedding (with the negative prompt and CFG scale for generated images)
    scheduler: object  # DDIM (real images) or the generation's sampler; timesteps set, never stepped itself
    t_index: int  # index of t* in scheduler.timesteps

    def to_image_points(self, rc: torch.Tensor) -> list[tuple[float, float]]:
        return points.to_image(rc, self.request.size, (self.grid_hw[1], self.grid_hw[0]))

    @property
    def t_star(self) -> int:
        return int(self.scheduler.timesteps[self.t_index])

    def index_of(self, t: int) -> int:
        """Index of timestep ``t`` in the schedule, searched from t* on (Karras schedules repeat their last few)."""
        hits = (self.scheduler.timesteps[self.t_index:] == int(t)).nonzero()
        if len(hits) == 0:
            raise ValueError(f"timestep {t} is not in the schedule after t* = {self.t_star}")
        return self.t_index + int(hits[0])

    def step(self, output: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        """x at timesteps[index + 1] from ``sample`` at timesteps[index] (differentiable; see :mod:`sampling`)."""
        return sampling.step(self.scheduler, output, index, sample)


def working_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Each side rounded to the nearest multiple (at least one multiple)."""
    return tuple(max(multiple, int(round(s / multiple)) * multiple) for s in size)


def prepare(model: DiffusionModel, request: DragRequest, config, generation=None) -> Edit:
    """Everything the drag needs before optimisation; with ``generation`` the conditioning and the sampler are the
    generation's (its ``num_inference_steps`` must be the config's)."""
    w, h = request.size
    work = working_size((w, h), model.vae_scale_factor)
    image = request.image if work == (w, h) else request.image.resize(work, Image.BILINEAR)
    grid_hw = supervision_size((work[1], work[0]), config.supervision_scale)
    latent_hw = (work[1] // model.vae_scale_factor, work[0] // model.vae_scale_factor)
    mask_grid = points.mask_to_grid(request.mask, grid_hw)
    editable_latent = torch.nn.functional.interpolate(mask_grid, size=latent_hw, mode="nearest")
    if generation is None:
        scheduler = make_scheduler(model.scheduler_config, config.num_inference_steps)
        text = TextConditioning(model.encode_prompt(request.prompt))
    else:
        if config.num_inference_steps != generation.config.num_inference_steps:
            raise ValueError("drag a generation with its own num_inference_steps (see editor.generated_config)")
        scheduler = sampling.make_scheduler(model.scheduler_config, generation.config.scheduler,
                                            generation.config.num_inference_steps)
        text = generation_conditioning(model, generation.config)
    return Edit(
        request=request,
        working_size=work,
        grid_hw=grid_hw,
        image=model.image_to_tensor(image),
        handles=points.to_grid(request.handles, (w, h), (grid_hw[1], grid_hw[0])).to(model.device),
        targets=points.to_grid(request.targets, (w, h), (grid_hw[1], grid_hw[0])).to(model.device),
        has_mask=request.mask is not None and bool(editable_latent.sum() > 0),
        editable_latent=editable_latent.to(model.device),
        text=text,
        scheduler=scheduler,
        t_index=start_index(config.num_inference_steps, config.inverted_steps),
    )


def generation_conditioning(model: DiffusionModel, config) -> TextConditioning:
    """Prompt, negative prompt and CFG scale of a :class:`~dragkit.config.GenerationConfig`."""
    uncond = model.encode_prompt(config.negative_prompt) if config.guidance_scale > 1 else None
    return TextConditioning(model.encode_prompt(config.prompt), uncond, config.guidance_scale)


def _conditioning(text) -> TextConditioning:
    return text if isinstance(text, TextConditioning) else TextConditioning(text)


def unet_eps(model: DiffusionModel, z: torch.Tensor, t: int, text) -> torch.Tensor:
    """UNet output for latents ``z`` (any batch) at integer timestep ``t``, as float32: one prediction per latent,
    CFG-combined when ``text`` (a :class:`TextConditioning` or a plain 1×L×d embedding) is guided."""
    cond = _conditioning(text)
    out = model.unet(cond.latents(z).to(model.dtype), t, encoder_hidden_states=cond.embeddings(z.shape[0])).sample
    return cond.output(out.float())


class FeatureModel:
    """UNet forward that also returns F(z_t) on the supervision grid (features captured by a forward hook)."""

    def __init__(self, model: DiffusionModel, capture, grid_hw: tuple[int, int]):
        self.model, self.capture, self.grid_hw = model, capture, grid_hw

    def __call__(self, z: torch.Tensor, t: int, text) -> tuple[torch.Tensor, torch.Tensor]:
        eps = unet_eps(self.model, z, t, text)
        return eps, _conditioning(text).features(resize_features(self.capture.pop(), self.grid_hw))


@contextmanager
def feature_model(model: DiffusionModel, edit: Edit, block: int) -> Iterator[FeatureModel]:
    """A :class:`FeatureModel` for ``unet.up_blocks[block]``; the hook is removed on exit."""
    with capture_features(model.unet, block) as capture:
        yield FeatureModel(model, capture, edit.grid_hw)


def invert(model: DiffusionModel, edit: Edit, inverted_steps: int,
           callback: Optional[ProgressCallback] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode (posterior mean × scaling factor) and DDIM-invert to t*. Returns (z0, z_{t*}) in float32."""
    z0 = model.encode_posterior(edit.image)[0].float()

    def on_step(i, t, _x):
        if callback is not None:
            callback(ProgressEvent("inversion", i + 1, inverted_steps, timestep=int(t)))

    z_t = ddim_invert(lambda x, t: unet_eps(model, x, t, edit.text), edit.scheduler, z0, inverted_steps, on_step)
    return z0, z_t


@torch.no_grad()
def denoise(model: DiffusionModel, edit: Edit, source: Optional[torch.Tensor], edited: torch.Tensor, from_index: int,
            blocks: Optional[tuple[int, ...]], callback: Optional[ProgressCallback] = None,
            on_step=None) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """Denoise ``edited`` (and ``source`` in lock-step) from ``timesteps[from_index]`` to the end.

    With ``blocks`` the pair is denoised as a batch [source, edited] under reference attention on those decoder
    blocks; without, ``edited`` alone (or both, uncontrolled, when a source is given).
    """
    from contextlib import nullcontext

    timesteps = edit.scheduler.timesteps[from_index:].tolist()
    solver = sampling.restarted(edit.scheduler, from_index)  # DDIM: stateless; DPM-Solver++: a fresh multistep state
    pair = source is not None
    z = torch.cat([source, edited]) if pair else edited
    control = reference_attention(model.unet, blocks) if (blocks and pair) else nullcontext()
    with control:
        for i, t in enumerate(timesteps):
            out = unet_eps(model, z, t, edit.text)
            z = solver.step(out, t, z, return_dict=False)[0].to(z.dtype)
            if on_step is not None:
                on_step(i, t, z)
            if callback is not None:
                callback(ProgressEvent("denoising", i + 1, len(timesteps), timestep=int(t)))
    return (z[:1], z[1:]) if pair else (None, z)


def to_pil(images01: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """1×3×h×w in [0, 1] → PIL image of ``size`` (bilinear back to the input size when the working size differs)."""
    x = images01.float()
    if (x.shape[-1], x.shape[-2]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=(size[1], size[0]), mode="bilinear", align_corners=False)
    arr = (x[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


@dataclass
class DragOutcome:
    """What a method's optimisation phase hands to the shared final stage."""

    latent: torch.Tensor  # edited latent, at timesteps[start_index]
    source: torch.Tensor  # undragged latent at the same timestep (the reference branch)
    start_index: int  # index into scheduler.timesteps where the final denoising starts
    handles: torch.Tensor  # final handles, (row, col)
    trajectory: list  # handles (row, col) at the start and after every tracking
    steps: int  # optimiser steps taken
    frames: Optional[list] = None  # animation frames, when the method records them


def run_drag(model: DiffusionModel, request: DragRequest, config, optimize,
             callback: Optional[ProgressCallback] = None, generation=None):
    """The narrative every method shares: prepare → invert (real image) or take the generation's latent at t*
    (generated image) → ``optimize(fm, edit, z_t)`` → reference-controlled denoising → decode. ``optimize`` returns a
    :class:`DragOutcome`. Returns a :class:`DragResult`."""
    from .freeu import freeu

    with freeu(model.unet, *(generation.config.freeu if generation is not None else ())):
        return _run_drag(model, request, config, optimize, callback, generation)


def _run_drag(model, request, config, optimize, callback, generation):
    import time

    from .animation import draw_points
    from .types import DragResult

    timings = {}
    clock = time.perf_counter()
    edit = prepare(model, request, config, generation)
    if generation is None:
        _z0, z_t = invert(model, edit, config.inverted_steps, callback)
    else:
        z_t = generation.latent_at(edit.t_index).to(model.device)
    timings["inversion"] = time.perf_counter() - clock

    clock = time.perf_counter()
    with torch.enable_grad(), feature_model(model, edit, config.feature_block) as fm:
        outcome = optimize(fm, edit, z_t)
    timings["optimization"] = time.perf_counter() - clock

    clock = time.perf_counter()
    blocks = tuple(config.reference_attention_blocks) if config.reference_attention else None
    _, edited = denoise(model, edit, outcome.source if blocks else None, outcome.latent, outcome.start_index, blocks,
                        callback)
    image = to_pil(model.decode(edited), request.size)
    timings["denoising"] = time.perf_counter() - clock
    final_handles = edit.to_image_points(outcome.handles)
    frames = None
    if outcome.frames is not None:
        frames = list(outcome.frames) + [draw_points(image, final_handles, request.targets)]
    return DragResult(image=image, final_handles=final_handles,
                      trajectory=[edit.to_image_points(h) for h in outcome.trajectory], timings=timings,
                      steps=outcome.steps, latent=edited, frames=frames)
