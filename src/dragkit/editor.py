"""The editor: a model loaded once, any number of edits, any method."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Optional

import torch

from . import stages
from .config import DragDiffusionConfig, GenerationConfig, GoodDragConfig, default_config, method_names  # noqa: F401
from .generation import Generation, generate
from .io import image_bytes
from .lora import LoraCache, maybe_lora, train_identity_lora
from .models import DEFAULT_MODEL, DiffusionModel
from .types import DragError, DragRequest, DragResult, ProgressCallback, ProgressEvent

logger = logging.getLogger(__name__)


def _methods() -> dict[str, tuple[type, Callable]]:
    """Method name → (config class, drag function)."""
    from . import dragdiffusion, gooddrag

    return {"dragdiffusion": (DragDiffusionConfig, dragdiffusion.drag), "gooddrag": (GoodDragConfig, gooddrag.drag)}


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

    @classmethod
    def from_pretrained(cls, model: str = DEFAULT_MODEL, *, lora_cache_dir: Optional[str] = None, **kwargs):
        """Load a model (Hub id, diffusers folder or .safetensors; see :meth:`DiffusionModel.from_pretrained`)."""
        cache = LoraCache(lora_cache_dir) if lora_cache_dir else None
        return cls(DiffusionModel.from_pretrained(model, **kwargs), lora_cache=cache)

    def generate(self, config: Optional[GenerationConfig] = None,
                 callback: Optional[ProgressCallback] = None) -> Generation:
        """Generate an image keeping every step latent (save it with :func:`dragkit.generation.save_generation`);
        ``callback`` gets a ``ProgressEvent("generation", …)`` per step."""
        return generate(self.model, config if config is not None else GenerationConfig(), callback)

    def edit(self, request: DragRequest, config=None, callback: Optional[ProgressCallback] = None,
             seed: int = 0, generation: Optional[Generation] = None) -> DragResult:
        """Drag ``request`` with ``config`` (a method config; default DragDiffusion with paper defaults).

        ``callback(ProgressEvent)`` is called at every step of every stage; raising :class:`EditCancelled` in it
        stops the edit. ``seed`` drives the only randomness (LoRA noise and timesteps).

        ``generation`` (the :class:`Generation` that produced ``request.image``) drags a generated image: no identity
        LoRA, no inversion, the generation's prompts, guidance, sampler, step count and FreeU (see
        :func:`generated_config`); ``request.prompt`` is not used.
        """
        config = config if config is not None else DragDiffusionConfig()
        methods = {cls: fn for cls, fn in _methods().values()}
        if type(config) not in methods:
            raise TypeError(f"not a method config: {type(config).__name__}")
        start = time.perf_counter()
        if generation is not None:
            config = generated_config(config, generation, request, self.model)
        weights, cached = self.identity_lora(request, config, callback, seed)
        lora_time = time.perf_counter() - start
        with maybe_lora(self.model.unet, config.lora_rank, weights):
            result = methods[type(config)](self.model, request, config, callback, generation)
        result.timings = {"lora": lora_time, **result.timings, "total": time.perf_counter() - start}
        result.config, result.lora_cached = config, cached
        return result

    def identity_lora(self, request: DragRequest, config, callback: Optional[ProgressCallback] = None,
                      seed: int = 0) -> tuple[Optional[dict[str, torch.Tensor]], bool]:
        """(fine-tuned identity LoRA weights for this image, whether they came from the cache); None if lora_steps
        = 0. A cache hit is reported as one ``ProgressEvent("lora", n, n, cached=True)``."""
        if config.lora_steps <= 0:
            return None, False
        key = None
        if self.lora_cache is not None:
            style = (self.model.style_lora["sha256"], self.model.style_lora["scale"]) if self.model.style_lora else ()
            key = LoraCache.key(image_bytes(request.image), request.prompt, self.model.name, str(self.model.dtype),
                                config.lora_steps, config.lora_rank, config.lora_lr, config.lora_batch_size,
                                config.lora_weight_decay, seed, *style)
            cached = self.lora_cache.get(key)
            if cached is not None:
                if callback is not None:
                    callback(ProgressEvent("lora", config.lora_steps, config.lora_steps, cached=True))
                return cached, True
        model = self.model
        work = stages.working_size(request.size, model.vae_scale_factor)
        image = request.image if work == request.size else request.image.resize(work)
        mean, std = model.encode_posterior(model.image_to_tensor(image))
        generator = torch.Generator(device=model.device).manual_seed(seed)
        weights = train_identity_lora(
            model.unet, model.scheduler_config, mean.float(), std.float(), model.encode_prompt(request.prompt),
            steps=config.lora_steps, rank=config.lora_rank, lr=config.lora_lr, batch_size=config.lora_batch_size,
            weight_decay=config.lora_weight_decay, generator=generator, callback=callback)
        if self.lora_cache is not None:
            self.lora_cache.put(key, weights)
        return weights, False
