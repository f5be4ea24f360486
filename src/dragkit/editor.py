"""The editor: a model loaded once, any number of edits, any method. :meth:`DragEditor.edit` is the story of one
edit, top to bottom; each method contributes its config and an ``optimize`` (registry :data:`OPTIMIZE`)."""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
from PIL import Image

from . import dragdiffusion, fastdrag, gooddrag, soliddrag, stages
from .animation import draw_points
from .checks import check_edit, check_finite, check_generation, check_image_size, check_steps, guard_progress
from .config import METHODS, DragDiffusionConfig, GenerationConfig, MethodConfig
from .config import default_config, method_names  # noqa: F401  (re-exported: the editor is where methods run)
from .family import resolve as resolve_family_defaults
from .freeu import freeu
from .generation import Generation, generate
from .hub import DEFAULT_MODEL
from .io import to_rgb
from .lora import LoraCache, frozen_lora, train_identity_lora
from .models import DiffusionModel
from .prepared import PreparedImage
from .types import DragError, DragRequest, DragResult, ProgressCallback, ProgressEvent, Stage, StageObserver

logger = logging.getLogger(__name__)

# Method name → its optimisation phase: ``optimize(fm, edit, z_t, config, callback) -> stages.DragOutcome``.
OPTIMIZE: dict[str, Callable[..., stages.DragOutcome]] = {
    "dragdiffusion": dragdiffusion.optimize,
    "gooddrag": gooddrag.optimize,
    "fastdrag": fastdrag.optimize,  # not an optimisation: the one-step warp
    "soliddrag": soliddrag.optimize,  # the one-step warp with objects moved whole
}
# Methods whose optimize also takes ``trajectory=``: the undragged trajectory a prepared image keeps for re-edits.
TAKES_TRAJECTORY = frozenset({"gooddrag"})


def generated_config(config, generation: Generation, request: DragRequest, model: DiffusionModel):
    """``config`` for dragging ``generation``: its step count T (t* = timesteps[T − round(T·strength)] of the
    generation's sampler) and no identity LoRA (appendix C: the model already encodes a generated image)."""
    if request.size != generation.image.size:
        raise DragError(f"the image is {request.size[0]}x{request.size[1]} but its generation is "
                        f"{generation.image.size[0]}x{generation.image.size[1]}")
    if generation.model and generation.model != model.name:
        logger.warning("the image was generated with %s but is dragged with %s", generation.model, model.name)
    theirs = (generation.style_lora or {}).get("sha256")
    if theirs != (model.style_lora or {}).get("sha256"):
        logger.warning("the image was generated with style LoRA %s but the model has %s",
                       (generation.style_lora or {}).get("path"), (model.style_lora or {}).get("path"))
    steps = generation.config.num_inference_steps
    if config.num_inference_steps != steps:
        logger.info("dragging a %d-step generation: num_inference_steps %d -> %d", steps, config.num_inference_steps,
                    steps)
    return dataclasses.replace(config, num_inference_steps=steps, lora_steps=0)


class DragEditor:
    """Holds a :class:`DiffusionModel` and runs edits on it.

    >>> editor = DragEditor.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")
    >>> result = editor.edit(DragRequest(image, handles=[(120, 200)], targets=[(180, 200)]))
    >>> result.image.save("edited.png")
    """

    def __init__(self, model: DiffusionModel, lora_cache: Optional[LoraCache] = None):
        self.model = model
        self.lora_cache = lora_cache
        self.observers: list[StageObserver] = []  # told of every stage entered and left (:meth:`observe`)

    @contextmanager
    def observe(self, observer: StageObserver) -> Iterator[StageObserver]:
        """Tell ``observer`` of every stage this editor enters and leaves while the block runs (edits, preparations
        and generations; ``stage_exited`` gets the stage's wall seconds, as ``DragResult.timings``)."""
        self.observers.append(observer)
        try:
            yield observer
        finally:
            self.observers.remove(observer)

    @contextmanager
    def _stage(self, timings: dict[str, float], stage: Stage) -> Iterator[None]:
        """Wall-clock seconds of the block into ``timings[stage]``, the observers told of its start and end."""
        for observer in self.observers:
            observer.stage_entered(stage)
        try:
            with _timed(timings, stage):
                yield
        finally:
            for observer in reversed(self.observers):
                observer.stage_exited(stage, timings[stage])

    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, *, lora_cache_dir: Optional[str] = None, **kwargs):
        """Load a model (Hub id, diffusers folder or .safetensors; see :meth:`DiffusionModel.from_pretrained`)."""
        cache = LoraCache(lora_cache_dir) if lora_cache_dir else None
        return cls(DiffusionModel.from_pretrained(model, **kwargs), lora_cache=cache)

    def generate(self, config: Optional[GenerationConfig] = None,
                 callback: Optional[ProgressCallback] = None) -> Generation:
        """Generate an image keeping every step latent (save it with :func:`dragkit.generation.save_generation`);
        ``callback`` gets a ``ProgressEvent("generation", …)`` per step. Settings are checked against the model first."""
        config = config if config is not None else GenerationConfig()
        check_generation(self.model, config)
        with self._stage({}, Stage.GENERATION):
            return generate(self.model, config, callback)

    def edit(self, request: DragRequest, config: Optional[MethodConfig] = None,
             callback: Optional[ProgressCallback] = None, seed: int = 0,
             generation: Optional[Generation] = None, prepared: Optional[PreparedImage] = None) -> DragResult:
        """Drag ``request`` with ``config`` (a method config; default DragDiffusion with paper defaults).

        ``callback(ProgressEvent)`` is called at every step of every stage; raising :class:`EditCancelled` in it
        stops the edit. ``seed`` drives the only randomness (LoRA noise and timesteps).

        ``prepared`` (from :meth:`prepare`, for ``request.image`` and ``request.prompt``) is what earlier edits of the
        same image computed — the identity LoRA, the inverted latent, GoodDrag's undragged trajectory — reused here
        where the settings match, and filled where they do not: re-edits with new points only drag and denoise.

        ``generation`` (the :class:`Generation` that produced ``request.image``) drags a generated image: no identity
        LoRA, no inversion, the generation's prompts, guidance, sampler, step count and FreeU (see
        :func:`generated_config`); ``request.prompt`` is not used.
        """
        model, timings, skipped = self.model, {}, {}
        config = self.check(request, config, generation)
        if prepared is not None:
            if generation is not None:
                raise DragError("a generated image is dragged from its generation's latents: it needs no preparation")
            prepared.check(model, request)
        reuse = prepared if prepared is not None or generation is not None else PreparedImage.of(
            model, request.image, request.prompt)  # without one: a fresh one, dropped with this edit
        callback = guard_progress(_counting_skips(callback, skipped))  # NaN/Inf loss: stop at once
        with self._stage(timings, Stage.TOTAL):
            edit = stages.start_edit(model, request, config, generation)
            with self._stage(timings, Stage.LORA):
                weights, lora_cached = self.identity_lora(edit, reuse, config, callback, seed)
            freeu_setting = generation.config.freeu if generation is not None else ()
            with frozen_lora(model.unet, config.lora_rank, weights), freeu(model.unet, *freeu_setting):
                with self._stage(timings, Stage.INVERSION):
                    if generation is None:
                        z_t, kv, inversion_cached = self.inverted(edit, reuse, config, callback, seed)
                    else:
                        z_t, inversion_cached = generation.latent_at(edit.t_index).to(model.device), False
                        kv = stages.generation_kv(model, edit, generation.latents) if config.copies_kv else None
                    check_finite(z_t, "inversion")
                with self._stage(timings, Stage.OPTIMIZATION), torch.enable_grad(), \
                        stages.feature_model(model, edit, config.feature_block) as fm:
                    cache = {"trajectory": reuse.trajectory(config, seed) if generation is None else None} \
                        if config.method in TAKES_TRAJECTORY else {}
                    outcome = OPTIMIZE[config.method](fm, edit, z_t, config, callback, **cache)
                    check_finite(outcome.latent, "latent optimisation", "lower latent_lr?")
                with self._stage(timings, Stage.DENOISING):  # attention control: a source branch's (blocks) or saved K/V (kv)
                    blocks = tuple(config.reference_attention_blocks) if config.reference_attention else None
                    latent = check_finite(stages.denoise(model, edit, outcome, blocks, callback, kv), "denoising")
                    image = stages.to_pil(check_finite(model.decode(latent), "VAE decoding"), request.size)
        return _result(edit, outcome, image, latent, config, (lora_cached, inversion_cached), timings, skipped)

    def prepare(self, image: Image.Image, prompt: str = "", config: Optional[MethodConfig] = None, seed: int = 0,
                callback: Optional[ProgressCallback] = None,
                prepared: Optional[PreparedImage] = None) -> PreparedImage:
        """Do now what every edit of ``image`` with ``prompt`` shares — the VAE posterior, the identity LoRA and the
        inversion for ``config``'s settings (default DragDiffusion) — and return it for :meth:`edit`'s ``prepared``.
        With ``prepared`` (of this image and prompt) the pieces are added to it, reusing what it holds (another
        inversion strength keeps its LoRA). The web app calls this in the background as soon as an image is set, so
        Run only drags. ``callback`` gets the "lora" and "inversion" events; raising :class:`EditCancelled` in it
        stops the preparation."""
        config = resolve_family_defaults(config if config is not None else DragDiffusionConfig(), self.model.family,
                                         self.model.default_size)
        image = to_rgb(image)
        check_steps(self.model, config.num_inference_steps)
        check_image_size(self.model, image.size,
                         stages.working_size(image.size, self.model.vae_scale_factor, config.max_side))
        if prepared is None:
            prepared = PreparedImage.of(self.model, image, prompt)
        else:
            prepared.check_image(self.model, image, prompt)
        callback = guard_progress(callback)
        base, timings = stages.working_image(self.model, image, prompt, config), {}
        with self._stage(timings, Stage.LORA):
            weights, _ = self.identity_lora(base, prepared, config, callback, seed)
        with frozen_lora(self.model.unet, config.lora_rank, weights), self._stage(timings, Stage.INVERSION):
            self.inverted(base, prepared, config, callback, seed)
        return prepared

    def check(self, request: DragRequest, config: Optional[MethodConfig],
              generation: Optional[Generation] = None) -> MethodConfig:
        """The config the edit will run with — default DragDiffusion; a generated image's step count and no LoRA;
        the model family's feature block and reference-attention blocks where left at None — checked against the
        request and the model before any work."""
        config = config if config is not None else DragDiffusionConfig()
        if getattr(config, "method", None) not in METHODS or not isinstance(config, METHODS[config.method]):
            raise TypeError(f"not a method config: {type(config).__name__}")
        if generation is not None:
            config = generated_config(config, generation, request, self.model)
        config = resolve_family_defaults(config, self.model.family, self.model.default_size)
        check_edit(self.model, request, config, generation)
        return config

    def posterior(self, base: stages.WorkingImage | stages.Edit,
                  reuse: PreparedImage) -> tuple[torch.Tensor, torch.Tensor]:
        """The working image's VAE posterior (mean, std), encoded once per prepared image."""
        if reuse.posterior is None:
            reuse.posterior = stages.encode(self.model, base)
        return reuse.posterior

    def identity_lora(self, base: stages.WorkingImage | stages.Edit, reuse: Optional[PreparedImage],
                      config: MethodConfig, callback: Optional[ProgressCallback] = None,
                      seed: int = 0) -> tuple[Optional[dict[str, torch.Tensor]], bool]:
        """(identity LoRA weights fine-tuned on the working image, whether they were reused — from ``reuse`` or the
        editor's disk cache); None when lora_steps = 0. A reuse is reported as one
        ``ProgressEvent("lora", n, n, cached=True)``."""
        if config.lora_steps <= 0:
            return None, False
        model, key = self.model, reuse.lora_key(config, seed)
        weights = reuse.loras.get(key)
        disk_key = None
        if weights is None and self.lora_cache is not None:
            disk_key = reuse.disk_lora_key(model, config, seed)
            weights = self.lora_cache.get(disk_key)
        if weights is not None:
            reuse.loras[key] = weights
            if callback is not None:
                callback(ProgressEvent(Stage.LORA, config.lora_steps, config.lora_steps, cached=True))
            return weights, True
        mean, std = self.posterior(base, reuse)
        generator = torch.Generator(device=model.device).manual_seed(seed)
        weights = train_identity_lora(
            model.unet, model.scheduler_config, mean, std, base.text,
            steps=config.lora_steps, rank=config.lora_rank, lr=config.lora_lr, batch_size=config.lora_batch_size,
            weight_decay=config.lora_weight_decay, generator=generator, callback=callback)
        reuse.loras[key] = weights
        if self.lora_cache is not None:
            self.lora_cache.put(disk_key, weights)
        return weights, False

    def inverted(self, base: stages.WorkingImage | stages.Edit, reuse: PreparedImage, config: MethodConfig,
                 callback: Optional[ProgressCallback] = None,
                 seed: int = 0) -> tuple[torch.Tensor, Optional[stages.SavedKV], bool]:
        """(z_{t*}: the working image DDIM-inverted to t* under the attached LoRA; the decoder self-attention K/V the
        inversion saved when ``config.copies_kv`` (FastDrag), else None; whether they were reused from ``reuse``).
        A reuse is reported as one ``ProgressEvent("inversion", k, k, cached=True)``."""
        key = reuse.inversion_key(config, seed)
        z_t, kv = reuse.latents.get(key), reuse.kv.get(key) if config.copies_kv else None
        if z_t is not None and (kv is not None or not config.copies_kv):
            if callback is not None:
                callback(ProgressEvent(Stage.INVERSION, base.inverted_steps, base.inverted_steps, cached=True))
            return z_t, kv, True
        kv = {} if config.copies_kv else None
        z_t = stages.invert(self.model, base, self.posterior(base, reuse)[0], callback, record_kv=kv)
        reuse.latents[key] = z_t
        if kv is not None:
            reuse.kv[key] = kv
        return z_t, kv, False


def _counting_skips(callback: Optional[ProgressCallback], skipped: dict[str, int]) -> ProgressCallback:
    """``callback``, recording in ``skipped`` each stage's count of fp16-skipped optimiser steps."""
    def counting(event: ProgressEvent) -> None:
        if event.skipped:
            skipped[str(event.stage)] = event.skipped
        if callback is not None:
            callback(event)

    return counting


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Wall-clock seconds of the block into ``timings[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - start


def _result(edit: stages.Edit, outcome: stages.DragOutcome, image, latent: torch.Tensor, config: MethodConfig,
            reused: tuple[bool, bool], timings: dict[str, float], skipped: dict[str, int]) -> DragResult:
    """The public result, in image pixels (the animation gets the final image as its last frame)."""
    final_handles = edit.to_image_points(outcome.handles)
    frames = None
    if outcome.frames is not None:
        frames = list(outcome.frames) + [draw_points(image, final_handles, edit.request.targets)]
    order = (Stage.LORA, Stage.INVERSION, Stage.OPTIMIZATION, Stage.DENOISING, Stage.TOTAL)
    if skipped:
        logger.warning("fp16 gradient overflow: %s step(s) skipped and drawn again (not counted as steps)",
                       ", ".join(f"{stage} {n}" for stage, n in skipped.items()))
    # the public record keys the stages by their plain names: JSON encoders that insist on exact str keys take it
    return DragResult(image=image, final_handles=final_handles,
                      trajectory=[edit.to_image_points(h) for h in outcome.trajectory],
                      timings={k.value: timings[k] for k in order}, steps=outcome.steps, latent=latent, frames=frames,
                      config=config, lora_cached=reused[0], inversion_cached=reused[1],
                      skipped_steps=skipped)
