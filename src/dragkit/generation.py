"""Generating an image while keeping what a later drag needs (DragDiffusion §4.3, appendix C), and the saved record.

    z_T ~ N(0, I)·σ_init (seeded, drawn on the CPU)
    for i = 0..T−1:  ε = CFG(UNet(z_i, t_i, [neg, prompt]), s);  z_{i+1} = sampler.step(ε, t_i, z_i)     (FreeU if on)
    image = D(z_T / scaling factor)

``latents[i]`` is the *input* of step i (``latents[0]`` the initial noise, ``latents[T]`` the final latent): a drag
that starts at t* = timesteps[T − k] takes ``latents[T − k]`` instead of inverting the image. The loop is the standard
CFG sampler written with the same UNet call as the drag (:func:`dragkit.stages.unet_eps`), so the drag's first
forward reproduces the generation's exactly.

Record on disk, next to the image ``gen.png`` (:func:`save_generation` / :func:`load_generation`):

* ``gen.generation.safetensors`` — tensor ``latents``, float32, (T+1)×4×H/f×W/f (f = the VAE factor);
* ``gen.generation.json`` — ``{"format": "dragkit-generation", "version": 1, "settings": GenerationConfig fields,
  "model": model id, "style_lora": {path, sha256, scale} or null, "timesteps": [...], "image_sha256": ...}``.

``image_sha256`` is the hash of the decoded pixels (:func:`dragkit.images.pixels_sha256`, dragkit's one image digest,
whose formula is this field's since version 1), so a record is never applied to an image changed since.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image

from . import sampling, stages
from .config import GenerationConfig, config_to_dict
from .family import resolve
from .freeu import freeu
from .images import pixels_sha256  # the hash of image_sha256 in records
from .models import DiffusionModel
from .types import DragError, ProgressCallback, ProgressEvent, Stage

logger = logging.getLogger(__name__)

FORMAT, VERSION = "dragkit-generation", 1


@dataclass
class Generation:
    """A generated image with every step latent and the settings that made it.

    Attributes:
        image: the generated image, ``config.width`` × ``config.height``.
        latents: (T+1)×C×h×w float32 on the CPU; ``latents[i]`` is the input of step i (at ``timesteps[i]``).
        config: the :class:`GenerationConfig` (prompt, negative prompt, seed, guidance, steps, sampler, size, FreeU).
        model: id of the model that generated it (dragging with another model is warned about).
        style_lora: the style LoRA that was applied ({path, sha256, scale}), or None.
        timesteps: the sampler's timesteps, for the record (recomputed from the config when dragging).
        timings: seconds ("generation", "decode", "total").
    """

    image: Image.Image
    latents: torch.Tensor
    config: GenerationConfig
    model: str = ""
    style_lora: Optional[dict] = None
    timesteps: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def latent_at(self, index: int) -> torch.Tensor:
        """The latent at timesteps[index], 1×C×h×w (the drag's z_{t*} when index = T − k)."""
        return self.latents[index:index + 1]


def check_size(config: GenerationConfig, factor: int) -> None:
    for name in ("width", "height"):
        value = getattr(config, name)
        if value % factor:
            raise DragError(f"{name} {value} is not a multiple of {factor} (the VAE factor of this model)")


def initial_noise(model: DiffusionModel, config: GenerationConfig, init_sigma: float) -> torch.Tensor:
    """z_T: standard normal from ``config.seed`` on the CPU (the same on every device), × the sampler's σ_init."""
    f = model.vae_scale_factor
    shape = (1, model.unet.config.in_channels, config.height // f, config.width // f)
    noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(config.seed), dtype=torch.float32)
    return noise.to(model.device) * init_sigma


@torch.no_grad()
def generate(model: DiffusionModel, config: GenerationConfig,
             callback: Optional[ProgressCallback] = None) -> Generation:
    """Sample an image with ``config`` (the narrative in the module docstring); ``callback`` gets a
    ``ProgressEvent("generation", i, T)`` per step (raise :class:`EditCancelled` in it to stop). A width / height
    left at None is the model's default canvas (the generation's config records the value used)."""
    config = resolve(config, model.family, model.default_size)
    check_size(config, model.vae_scale_factor)
    start = time.perf_counter()
    scheduler = sampling.make_scheduler(model.scheduler_config, config.scheduler, config.num_inference_steps)
    solver = sampling.restarted(scheduler, 0)
    text = stages.generation_conditioning(model, config)
    z = initial_noise(model, config, float(scheduler.init_noise_sigma))
    latents = [z.cpu()]
    timesteps = scheduler.timesteps.tolist()
    with freeu(model.unet, *config.freeu):
        for i, t in enumerate(timesteps):
            out = stages.unet_eps(model, solver.scale_model_input(z, t), t, text)
            z = solver.step(out, t, z, return_dict=False)[0].float()
            latents.append(z.cpu())
            if callback is not None:
                callback(ProgressEvent(Stage.GENERATION, i + 1, len(timesteps), timestep=int(t)))
    sampled = time.perf_counter()
    image = stages.to_pil(model.decode(z), (config.width, config.height))
    end = time.perf_counter()
    return Generation(image, torch.cat(latents), config, model.name, model.style_lora, [int(t) for t in timesteps],
                      {"generation": sampled - start, "decode": end - sampled, "total": end - start})


# --- the record on disk ------------------------------------------------------------------------------------------

def record_paths(image_path: str | Path) -> tuple[Path, Path]:
    """(``<stem>.generation.safetensors``, ``<stem>.generation.json``) next to ``image_path``."""
    p = Path(image_path)
    return p.with_name(p.stem + ".generation.safetensors"), p.with_name(p.stem + ".generation.json")


def record_json(generation: Generation) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "settings": config_to_dict(generation.config),
            "model": generation.model, "style_lora": generation.style_lora, "timesteps": generation.timesteps,
            "latent_shape": list(generation.latents.shape), "image_sha256": pixels_sha256(generation.image)}


def image_format(path: str | Path) -> str:
    """PIL format for ``path``'s extension; lossless formats only (the record pins the exact pixels)."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt not in ("PNG", "BMP", "TIFF"):
        raise DragError(f"{path}: save generated images as .png (lossless; the record pins the exact pixels)")
    return fmt


def save_generation(generation: Generation, image_path: str | Path) -> list[Path]:
    """Write the image and its record (atomically: all three files, or none). Returns the paths written."""
    from safetensors.torch import save_file

    from .io import atomic_paths

    tensors, meta = record_paths(image_path)
    fmt = image_format(image_path)
    with atomic_paths(tensors, meta, image_path) as (t_tmp, m_tmp, i_tmp):  # one transaction for the three files
        save_file({"latents": generation.latents.contiguous()}, str(t_tmp), metadata={"format": FORMAT})
        m_tmp.write_text(json.dumps(record_json(generation), indent=1))
        generation.image.save(i_tmp, format=fmt)
    return [Path(image_path), tensors, meta]


def load_generation(image_path: str | Path, image: Optional[Image.Image] = None) -> Generation:
    """The :class:`Generation` saved next to ``image_path`` (by ``dragkit generate`` or :func:`save_generation`).

    A clear :class:`DragError` when the record is missing, of another format, or made for other pixels."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .io import load_image

    tensors, meta = record_paths(image_path)
    if not tensors.is_file() or not meta.is_file():
        raise DragError(f"{image_path} has no saved generation ({meta.name} + {tensors.name}); --generated needs "
                        "an image made by `dragkit generate`")
    try:
        data = json.loads(meta.read_text())
        settings = data["settings"]
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError("unknown format/version")
        config = GenerationConfig(**{f.name: settings[f.name] for f in dataclasses.fields(GenerationConfig)
                                     if f.name in settings})
        latents = load_file(str(tensors))["latents"].float()
    except (ValueError, KeyError, TypeError, SafetensorError, OSError) as exc:
        raise DragError(f"{meta.name}: not a readable dragkit generation record ({exc})") from None
    image = image if image is not None else load_image(image_path)
    if tuple(latents.shape[:1]) != (config.num_inference_steps + 1,):
        raise DragError(f"{tensors.name}: {latents.shape[0]} latents for {config.num_inference_steps} steps")
    if image.size != (config.width, config.height):
        raise DragError(f"{image_path} is {image.size[0]}x{image.size[1]} but its generation is "
                        f"{config.width}x{config.height}")
    if data.get("image_sha256") not in (None, pixels_sha256(image)):
        raise DragError(f"{image_path} was changed after it was generated (its pixels differ from the record); "
                        "drag it as a real image instead (without --generated)")
    return Generation(image, latents, config, str(data.get("model", "")), data.get("style_lora"),
                      list(data.get("timesteps", [])))
