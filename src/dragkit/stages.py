"""Stages shared by every drag method: preparing an edit, encoding, the UNet forward with features, inversion, the
final reference-controlled denoising and decoding. Per-edit state lives in a fresh :class:`Edit`, never on the model.
:meth:`dragkit.editor.DragEditor.edit` tells the story of one edit with these stages and a method's ``optimize``.

Sizes. The input image (W×H, any size) is resized bilinearly to the *working size*: each side rounded to the nearest
multiple of the VAE factor (8 for SD), so the latent is (H_w/8)×(W_w/8) and no pixel is cropped. The feature grid is
(int(H_w/2), int(W_w/2)) as in the reference. The identity LoRA, the inversion and the supervision all see this one
working image (:attr:`Edit.image`). Points map from input pixels straight to the grid (:mod:`points`);
the decoded result is resized bilinearly back to exactly W×H. Images whose sides are already multiples of 8 (all
golden cases, 512×512) are not resampled at all.

Generated images (DragDiffusion §4.3, appendix C): given the :class:`~dragkit.generation.Generation` an image came
from, there is no inversion — z_{t*} is the generation's own latent at step T − k — the UNet is conditioned as during
the generation (prompt, negative prompt, CFG scale: :mod:`dragkit.guidance`), steps follow the generation's sampler
(:mod:`dragkit.sampling`) and FreeU, if it was on, stays on for the drag.
"""

from __future__ import annotations

from contextlib import closing, contextmanager, nullcontext
import logging
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from PIL import Image

from . import points
from . import sampling
from .ddim import ddim_invert, make_scheduler, start_index
from .features import FeatureMap, FeaturesReady, capture_features, supervision_size
from .guidance import TextConditioning
from .kv_copy import SavedKV, kv_copy  # noqa: F401  (SavedKV: the type of an inversion's saved K/V)
from .models import DiffusionModel
from .reference_attention import reference_attention
from .types import DragRequest, ProgressCallback, ProgressEvent, Stage

logger = logging.getLogger(__name__)


@dataclass
class Edit:
    """Everything one edit computes before optimisation (created per call; nothing lives on the model): the
    :class:`WorkingImage` (what edits of the same image share) and the points and mask of this request."""

    request: DragRequest
    working: WorkingImage  # the working image, its conditioning and sampler (its fields read through: edit.image…)
    grid_hw: tuple[int, int]  # feature grid (rows, cols)
    handles: torch.Tensor  # N×2 (row, col) on the grid
    targets: torch.Tensor  # N×2 (row, col)
    has_mask: bool
    editable_latent: torch.Tensor  # 1×1×h×w {0,1}, 1 = may change

    @property
    def working_size(self) -> tuple[int, int]:
        """(W_w, H_w), multiples of the VAE factor."""
        return self.working.working_size

    @property
    def image(self) -> torch.Tensor:
        """1×3×H_w×W_w in [−1, 1]: the one working image (LoRA, inversion, supervision)."""
        return self.working.image

    @property
    def text(self) -> TextConditioning:
        """The prompt embedding (with the negative prompt and CFG scale for generated images)."""
        return self.working.text

    @property
    def scheduler(self):
        """DDIM (real images) or the generation's sampler; timesteps set, never stepped itself."""
        return self.working.scheduler

    @property
    def inverted_steps(self) -> int:
        """k = round(T·strength): t* = timesteps[T − k]."""
        return self.working.inverted_steps

    def to_image_points(self, rc: torch.Tensor | list) -> list[tuple[float, float]]:
        return points.to_image(rc, self.request.size, (self.grid_hw[1], self.grid_hw[0]))

    @property
    def t_index(self) -> int:
        """Index of t* in ``scheduler.timesteps``."""
        return start_index(len(self.scheduler.timesteps), self.inverted_steps)

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


@dataclass
class DragOutcome:
    """What a method's ``optimize`` hands back to the edit's final stage."""

    latent: torch.Tensor  # edited latent, at timesteps[start_index]
    source: torch.Tensor  # undragged latent at the same timestep (the reference branch)
    start_index: int  # index into scheduler.timesteps where the final denoising starts
    handles: torch.Tensor  # final handles, (row, col)
    trajectory: list  # handles (row, col) at the start and after every tracking
    steps: int  # optimiser steps taken
    frames: Optional[list] = None  # animation frames, when the method records them


def working_size(size: tuple[int, int], multiple: int, max_side: Optional[int] = None) -> tuple[int, int]:
    """Each side rounded to the nearest multiple (at least one multiple), after scaling the image down (aspect kept)
    so that its longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(size)) if max_side else 1.0
    return tuple(max(multiple, int(round(s * scale / multiple)) * multiple) for s in size)


@dataclass
class WorkingImage:
    """The image side of an edit, without points: what the identity LoRA and the inversion see, so what edits of the
    same image can share (:class:`dragkit.prepared.PreparedImage`)."""

    working_size: tuple[int, int]  # (W_w, H_w), multiples of the VAE factor
    image: torch.Tensor  # 1×3×H_w×W_w in [−1, 1]
    text: TextConditioning
    scheduler: object
    inverted_steps: int


def working_image(model: DiffusionModel, image: Image.Image, prompt: str, config, generation=None) -> WorkingImage:
    """The working image (resized to multiples of the VAE factor), its conditioning and the sampler; with
    ``generation`` the conditioning and the sampler are the generation's (its ``num_inference_steps`` must be the
    config's)."""
    work = working_size(image.size, model.vae_scale_factor, config.max_side)
    if work != working_size(image.size, model.vae_scale_factor):
        logger.info("the %dx%d image is edited at %dx%d (max_side %d) and scaled back", *image.size, *work,
                    config.max_side)
    resized = image if work == image.size else image.resize(work, Image.BILINEAR)
    if generation is None:
        scheduler = make_scheduler(model.scheduler_config, config.num_inference_steps)
        text = model.conditioning(prompt, (work[1], work[0]))
    else:
        if config.num_inference_steps != generation.config.num_inference_steps:
            raise ValueError("drag a generation with its own num_inference_steps (see editor.generated_config)")
        scheduler = sampling.make_scheduler(model.scheduler_config, generation.config.scheduler,
                                            generation.config.num_inference_steps)
        text = generation_conditioning(model, generation.config)
    return WorkingImage(work, model.image_to_tensor(resized), text, scheduler, config.inverted_steps)


def start_edit(model: DiffusionModel, request: DragRequest, config, generation=None) -> Edit:
    """Everything the drag needs before optimisation: the :func:`working_image` and the points on the grid."""
    w, h = request.size
    base = working_image(model, request.image, request.prompt, config, generation)
    work = base.working_size
    grid_hw = supervision_size((work[1], work[0]), config.supervision_scale)
    latent_hw = (work[1] // model.vae_scale_factor, work[0] // model.vae_scale_factor)
    mask_grid = points.mask_to_grid(request.mask, grid_hw)
    editable_latent = torch.nn.functional.interpolate(mask_grid, size=latent_hw, mode="nearest")
    return Edit(
        request=request,
        working=base,
        grid_hw=grid_hw,
        handles=points.to_grid(request.handles, (w, h), (grid_hw[1], grid_hw[0])).to(model.device),
        targets=points.to_grid(request.targets, (w, h), (grid_hw[1], grid_hw[0])).to(model.device),
        has_mask=request.mask is not None and bool(editable_latent.sum() > 0),
        editable_latent=editable_latent.to(model.device),
    )


def generation_conditioning(model: DiffusionModel, config) -> TextConditioning:
    """Prompt, negative prompt, CFG scale and size of a :class:`~dragkit.config.GenerationConfig`."""
    return model.conditioning(config.prompt, (config.height, config.width), config.negative_prompt,
                              config.guidance_scale)


def unet_eps(model: DiffusionModel, z: torch.Tensor, t: int, text: TextConditioning) -> torch.Tensor:
    """UNet output for latents ``z`` (any batch) at integer timestep ``t``, as float32: one prediction per latent,
    CFG-combined when ``text`` is guided."""
    out = model.unet(text.latents(z).to(model.dtype), t, **text.unet_kwargs(z.shape[0])).sample
    return text.output(out.float())


class FeatureModel:
    """UNet forward that also returns F(z_t) on the supervision grid (features captured by a forward hook), as a
    lazily read :class:`~dragkit.features.FeatureMap`: no full-resolution map is built."""

    def __init__(self, model: DiffusionModel, capture, grid_hw: tuple[int, int]):
        self.model, self.capture, self.grid_hw = model, capture, grid_hw

    def __call__(self, z: torch.Tensor, t: int, text: TextConditioning) -> tuple[torch.Tensor, FeatureMap]:
        eps = unet_eps(self.model, z, t, text)
        return eps, FeatureMap(self.capture.pop(), self.grid_hw, text.feature_weights)

    def features(self, z: torch.Tensor, t: int, text: TextConditioning) -> FeatureMap:
        """F(z_t) alone: the forward ends at the feature block (for SD-1.5's up_blocks[2], the last decoder block
        and the output convolution — about a quarter of the UNet's work — are skipped, and so is their backward)."""
        self.capture.stop = True
        try:
            unet_eps(self.model, z, t, text)
        except FeaturesReady:
            pass
        finally:
            self.capture.stop = False
        return FeatureMap(self.capture.pop(), self.grid_hw, text.feature_weights)


@contextmanager
def feature_model(model: DiffusionModel, edit: Edit, block: int) -> Iterator[FeatureModel]:
    """A :class:`FeatureModel` for ``unet.up_blocks[block]``; the hook is removed on exit."""
    with capture_features(model.unet, block) as capture:
        yield FeatureModel(model, capture, edit.grid_hw)


@torch.no_grad()
def encode(model: DiffusionModel, edit: Edit | WorkingImage) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior (mean, std) × scaling factor of the working image, float32: z0 is the mean (the reference's
    inversion start); the identity LoRA samples from the whole posterior."""
    mean, std = model.encode_posterior(edit.image)
    return mean.float(), std.float()


def invert(model: DiffusionModel, edit: Edit | WorkingImage, z0: torch.Tensor,
           callback: Optional[ProgressCallback] = None, record_kv: Optional[SavedKV] = None) -> torch.Tensor:
    """DDIM-invert ``z0`` by ``edit.inverted_steps`` steps to t*. Returns z_{t*} in float32. With ``record_kv`` (a
    dict to fill), the decoder self-attention K/V of each inversion call are saved into it under its timestep
    (FastDrag's consistency-preserving strategy, :mod:`dragkit.kv_copy`)."""

    def on_step(i, t, _x):
        if callback is not None:
            callback(ProgressEvent(Stage.INVERSION, i + 1, edit.inverted_steps, timestep=int(t)))

    with kv_copy(model.unet, "record", record_kv) if record_kv is not None else nullcontext():
        return ddim_invert(lambda x, t: unet_eps(model, x, t, edit.text), edit.scheduler, z0, edit.inverted_steps,
                           on_step)


@torch.no_grad()
def generation_kv(model: DiffusionModel, edit: Edit, latents: torch.Tensor) -> SavedKV:
    """The K/V an inversion of a generated image would save, from its generation's step latents (``latents[i]`` at
    timesteps[i], ``latents[T]`` the final one): for each denoising timestep t_i from t* on, the UNet at t_i on the
    latent one level below, ``latents[i + 1]`` — as the DDIM inversion queries the UNet at the destination t with
    the latent still at the level below. Under CFG the saved batch is [uncond, cond] (the denoising's layout)."""
    saved: SavedKV = {}
    timesteps = edit.scheduler.timesteps.tolist()
    with kv_copy(model.unet, "record", saved):
        for i in range(edit.t_index, len(timesteps)):
            unet_eps(model, latents[i + 1:i + 2].to(model.device), timesteps[i], edit.text)
    return saved


def attention_control(model: DiffusionModel, blocks: Optional[tuple[int, ...]] = None,
                      kv: Optional[SavedKV] = None):
    """The denoising's attention control: reference attention on the decoder ``blocks`` (the batch is [source,
    edited] pairs: DragDiffusion, GoodDrag), K/V replacement from ``kv`` (FastDrag), or none."""
    if blocks and kv is not None:
        raise ValueError("reference attention and K/V copy both control the decoder self-attention: choose one")
    if blocks:
        return reference_attention(model.unet, blocks)
    return kv_copy(model.unet, "replace", kv) if kv is not None else nullcontext()


def denoising(model: DiffusionModel, edit: Edit, z: torch.Tensor, from_index: int,
              blocks: Optional[tuple[int, ...]] = None, kv: Optional[SavedKV] = None) -> Iterator[torch.Tensor]:
    """Denoise the batch ``z`` from ``timesteps[from_index]`` to the end, yielding it after every step. With
    ``blocks``, ``z`` is a [source, edited] pair under reference attention on those decoder blocks; with ``kv``, the
    decoder self-attention uses those saved keys/values of each step's timestep (:func:`attention_control`; installed
    for as long as the generator runs: close it, e.g. with :func:`contextlib.closing`, when stopping early)."""
    timesteps = edit.scheduler.timesteps[from_index:].tolist()
    solver = sampling.restarted(edit.scheduler, from_index)  # DDIM: stateless; DPM-Solver++: a fresh multistep state
    with torch.no_grad(), attention_control(model, blocks, kv):
        for t in timesteps:
            out = unet_eps(model, z, t, edit.text)
            z = solver.step(out, t, z, return_dict=False)[0].to(z.dtype)
            yield z


def denoise(model: DiffusionModel, edit: Edit, outcome: DragOutcome, blocks: Optional[tuple[int, ...]],
            callback: Optional[ProgressCallback] = None, kv: Optional[SavedKV] = None) -> torch.Tensor:
    """The edit's final stage: denoise ``outcome.latent`` to the end — beside its source branch under reference
    attention on ``blocks`` (reference-latent-control), alone with the inversion's keys/values ``kv`` (FastDrag's
    K/V copy), or alone when both are None. Returns the edited latent."""
    z = torch.cat([outcome.source, outcome.latent]) if blocks else outcome.latent
    total = len(edit.scheduler.timesteps) - outcome.start_index
    with closing(denoising(model, edit, z, outcome.start_index, blocks, kv)) as steps:
        for i, z in enumerate(steps):
            if callback is not None:
                t = int(edit.scheduler.timesteps[outcome.start_index + i])
                callback(ProgressEvent(Stage.DENOISING, i + 1, total, timestep=t))
    return z[-1:]


def to_pil(images01: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """1×3×h×w in [0, 1] → PIL image of ``size`` (bilinear back to the input size when the working size differs)."""
    x = images01.float()
    if (x.shape[-1], x.shape[-2]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=(size[1], size[0]), mode="bilinear", align_corners=False)
    arr = (x[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)
