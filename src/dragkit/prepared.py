"""What edits of one image can share — the interactive loop's speed comes from not redoing it.

A user drags, looks, moves a point, drags again: every re-edit of the same image (and prompt, on the same model) has
the same VAE posterior, the same identity LoRA, the same inverted latent z_{t*} and, for GoodDrag, the same undragged
trajectory (F_orig[t], x̄_{t−1} at each drag timestep). Only the points (and the mask) change. A
:class:`PreparedImage` holds those pieces, each keyed by exactly the settings that determine it, so a re-edit with
other LoRA or inversion settings recomputes only what those settings change.

It is an explicit object the caller owns (:meth:`dragkit.editor.DragEditor.prepare`, then
``editor.edit(request, config, prepared=…)``), never state hidden on the editor or the model: drop it and its memory
(a LoRA on the CPU, a latent and ≤ T_d feature maps on the device) goes with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from PIL import Image

from .images import pixels_sha256
from .types import DragError


# The method settings each piece depends on (besides the image, prompt, model and seed): the identity LoRA sees the
# working image (its size: max_side) and its own settings; the inversion adds the schedule and the depth.
LORA_FIELDS = ("max_side", "lora_steps", "lora_rank", "lora_lr", "lora_batch_size", "lora_weight_decay")
INVERSION_FIELDS = LORA_FIELDS + ("num_inference_steps", "inversion_strength")


# The content hash of a prepared image's pixels: dragkit's one image digest (the name stays for importers).
image_digest = pixels_sha256


@dataclass(eq=False)
class PreparedImage:
    """The reusable part of edits of ``image`` with ``prompt`` on one model (named ``model``, in ``dtype``)."""

    image: Image.Image
    prompt: str
    model: str
    dtype: str
    digest: str
    posterior: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # VAE (mean, std) × scaling factor, float32
    loras: dict = field(default_factory=dict)  # lora_key → weights (CPU float32) or None
    latents: dict = field(default_factory=dict)  # inversion_key → z_{t*} (float32, on the device)
    kv: dict = field(default_factory=dict)  # inversion_key → the inversion's saved K/V (FastDrag; dragkit.kv_copy)
    undragged: dict = field(default_factory=dict)  # trajectory_key → {t: (F_orig[t], x̄_{t−1})}

    @classmethod
    def of(cls, model, image: Image.Image, prompt: str) -> "PreparedImage":
        return cls(image, prompt, model.name, str(model.dtype), image_digest(image))

    def check(self, model, request) -> None:
        """A one-line :class:`DragError` unless ``request`` edits this image with this prompt on this model."""
        self.check_image(model, request.image, request.prompt)

    def check_image(self, model, image: Image.Image, prompt: str) -> None:
        """A one-line :class:`DragError` unless ``image`` with ``prompt`` on ``model`` is what was prepared."""
        if (model.name, str(model.dtype)) != (self.model, self.dtype):
            raise DragError(f"the image was prepared on {self.model} ({self.dtype}), not on {model.name} "
                            f"({model.dtype}): prepare it again")
        if prompt != self.prompt:
            raise DragError("the image was prepared with another prompt: prepare it again")
        if image.size != self.image.size or image_digest(image) != self.digest:
            raise DragError("the request's image is not the prepared image: prepare it again")

    def holds(self, config, seed: int) -> bool:
        """Whether the identity LoRA (when ``config`` trains one) and z_{t*} for these settings are here: an edit
        with them only drags and denoises. ``config`` as edits run it: the model family's defaults filled in
        (:func:`dragkit.family.resolve`, as :meth:`DragEditor.check` does)."""
        lora = config.lora_steps <= 0 or self.lora_key(config, seed) in self.loras
        key = self.inversion_key(config, seed)
        return lora and key in self.latents and (not config.copies_kv or key in self.kv)

    # --- keys: exactly the settings each piece depends on -------------------------------------------------------
    @staticmethod
    def lora_key(config, seed: int) -> tuple:
        return tuple(getattr(config, name) for name in LORA_FIELDS) + (seed if config.lora_steps > 0 else None,)

    @classmethod
    def inversion_key(cls, config, seed: int) -> tuple:
        return cls.lora_key(config, seed) + (config.num_inference_steps, config.inverted_steps)  # k from T·strength

    @classmethod
    def trajectory_key(cls, config, seed: int) -> tuple:
        return cls.inversion_key(config, seed) + (config.feature_block, config.supervision_scale)

    def disk_lora_key(self, model, config, seed: int) -> str:
        """The identity LoRA's key in an on-disk :class:`~dragkit.lora.LoraCache`: this image (its digest), prompt,
        model (name, dtype, style LoRA) and exactly the settings of :meth:`lora_key` — the one list of what a LoRA
        depends on, so two working sizes of one image (``max_side``) never share a cached LoRA."""
        from .lora import LoraCache  # lora imports torch/peft helpers; keep this module light

        style = (model.style_lora["sha256"], model.style_lora["scale"]) if model.style_lora else ()
        return LoraCache.key(self.digest, self.prompt, self.model, self.dtype, *style, *self.lora_key(config, seed))

    def trajectory(self, config, seed: int) -> dict:
        """GoodDrag's undragged trajectory for these settings (filled by the first edit that computes it)."""
        return self.undragged.setdefault(self.trajectory_key(config, seed), {})
