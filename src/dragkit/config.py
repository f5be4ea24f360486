"""Method configurations: one dataclass per method, every field named after what it controls and commented with the
paper's symbol and the default of the paper / official code (see ../shared/spec/reference_behaviour.md)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from .types import DragError


@dataclass(frozen=True)
class DragDiffusionConfig:
    """DragDiffusion (Shi et al., CVPR 2024), defaults as the official code (commit ebe659a, Dec-2023 defaults)."""

    # --- DDIM (paper §4.1) ---
    num_inference_steps: int = 50  # T: DDIM steps of the full schedule ("leading" spacing, offset 1)
    inversion_strength: float = 0.7  # t = round(T·strength) = 35 inverted steps → latent at t* = 681
    # --- latent optimisation (Eq. 3–5) ---
    optimization_steps: int = 80  # K: max motion-supervision iterations
    latent_lr: float = 0.01  # η: Adam learning rate on the latent z_t
    mask_weight: float = 0.1  # λ: weight of ‖(ẑ_{t−1} − sg(z_{t−1}))⊙(1−M)‖₁ (sum); off when no mask is drawn
    motion_radius: int = 1  # r1: motion-supervision patch Ω(h, r1) is (2r1+1)²; loss = (2r1+1)²·mean L1
    tracking_radius: int = 3  # r2: point-tracking search window Ω(h, r2) is (2r2+1)², clipped to the map
    stop_distance: float = 2.0  # stop when every handle is < this many feature px from its target
    feature_block: int = 2  # F: output of unet.up_blocks[feature_block] (reference "feature index 3")
    supervision_scale: float = 0.5  # feature map is bilinearly resized to (int(s·H), int(s·W)) of the image
    # --- reference-latent-control (paper §3.4) ---
    reference_attention: bool = True  # mutual self-attention while denoising the optimised latent
    reference_attention_blocks: tuple[int, ...] = (2, 3)  # decoder up_blocks whose self-attention reads the source K/V
    # --- identity-preserving LoRA (paper §3.2, Eq. 2) ---
    lora_steps: int = 80  # fine-tuning steps (0 = no LoRA)
    lora_rank: int = 16  # LoRA rank on to_q, to_k, to_v, to_out.0 of every UNet attention (alpha = rank)
    lora_lr: float = 5e-4  # AdamW learning rate
    lora_batch_size: int = 4  # images (noise draws) per LoRA step
    lora_weight_decay: float = 1e-2  # AdamW weight decay (reference: diffusers default 1e-2)

    method = "dragdiffusion"

    def __post_init__(self):
        _validate_common(self)

    @property
    def inverted_steps(self) -> int:
        """k = round(T·strength), with Python's round (half to even) as the reference: 0.7→35, 0.75→38."""
        return round(self.num_inference_steps * self.inversion_strength)


def _validate_common(cfg: Any) -> None:
    if cfg.num_inference_steps < 1:
        raise DragError("num_inference_steps must be >= 1")
    if not 0.0 < cfg.inversion_strength <= 1.0:
        raise DragError("inversion_strength must be in (0, 1]")
    if cfg.inverted_steps < 1:
        raise DragError("inversion_strength x num_inference_steps rounds to 0 inverted steps")
    for name in ("optimization_steps", "lora_steps", "motion_radius", "tracking_radius"):
        if getattr(cfg, name, 0) < 0:
            raise DragError(f"{name} must be >= 0")
    for name in ("lora_rank", "lora_batch_size"):
        if getattr(cfg, name) < 1:
            raise DragError(f"{name} must be >= 1")
    if cfg.latent_lr <= 0 or cfg.lora_lr <= 0:
        raise DragError("learning rates must be > 0")
    if cfg.mask_weight < 0:
        raise DragError("mask_weight must be >= 0")
    if not 0 < cfg.supervision_scale <= 1:
        raise DragError("supervision_scale must be in (0, 1]")


def config_fields(cfg_cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cfg_cls)}


def _parse_value(text: str, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {text!r}")
    if typ is int:
        return int(text)
    if typ is float:
        return float(text)
    if origin is tuple:
        (item_t, *_rest) = typing.get_args(typ) or (str,)
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        return tuple(_parse_value(p.strip(), item_t) for p in parts)
    return text


def apply_overrides(cfg: Any, assignments: list[str]) -> Any:
    """Return ``cfg`` with ``FIELD=VALUE`` strings applied (the CLI's ``--set``), typed by the dataclass fields."""
    hints = typing.get_type_hints(type(cfg))
    fields = config_fields(type(cfg))
    changes = {}
    for item in assignments:
        if "=" not in item:
            raise DragError(f"--set expects FIELD=VALUE, got {item!r}")
        name, value = (s.strip() for s in item.split("=", 1))
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise DragError(f"unknown config field {name!r} for {cfg.method}; known fields: {known}")
        try:
            changes[name] = _parse_value(value, hints[name])
        except ValueError:
            raise DragError(f"cannot read {name}={value!r} as {getattr(hints[name], '__name__', hints[name])}") from None
    return dataclasses.replace(cfg, **changes)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass(frozen=True)
class GoodDragConfig:
    """GoodDrag (Zhang et al., ICLR 2025): Alternating Drag and Denoising (AlDD) with information-preserving motion
    supervision; defaults as the official code's UI (commit fc01bc1, spec §2; the bench script differs where noted)."""

    # --- DDIM (paper §3.1) ---
    num_inference_steps: int = 50  # T: DDIM steps of the full schedule ("leading" spacing, offset 1)
    inversion_strength: float = 0.75  # round(T·strength) = 38 inverted steps → the drag starts at t* = 741
    # --- AlDD (paper §3.3) ---
    drag_denoise_steps: int = 7  # T_d ("drag_end_step"): denoising steps after inversion preceded by drag operations
    trackings_per_denoise: int = 10  # B: point trackings (drag operations) per denoising step
    supervision_steps_per_tracking: int = 3  # J: motion-supervision (Adam) steps per point tracking
    early_stop_trackings: int = 10  # stop dragging after this many consecutive trackings moving no handle (bench: 5)
    # --- information-preserving motion supervision (paper §3.4, Eq. 8) ---
    latent_lr: float = 0.02  # η: Adam learning rate on the latent; a new optimiser at every denoising step
    drag_step_size: float = 4.0  # β: the shifted patch sits at h + d·min(β, ‖g − h‖) (feature px)
    motion_radius: int = 4  # r1: patch (2r1+1)², loss = (2r1)²·mean L1 (the code's factor)
    tracking_radius: int = 12  # r2: point-tracking window (2r2+1)², clipped to the map (the code does not clip)
    information_preserving: bool = True  # motion target sg(F_orig) at h⁰ (Eq. 8); False: sg(F) at the current h (Eq. 7)
    mask_weight: float = 0.2  # λ: weight of Σ|(x_{t−1}(ẑ) − x̄_{t−1})⊙(1−M)| vs the undragged trajectory (bench: 0.1)
    regularize_without_mask: bool = True  # code: with no mask drawn the whole latent is pinned; False drops the λ-term
    stop_distance: float = 2.0  # stop when every handle is < this many feature px from its target
    feature_block: int = 2  # F: output of unet.up_blocks[feature_block] (reference "feature index 3")
    supervision_scale: float = 0.5  # feature map is bilinearly resized to (int(s·H), int(s·W)) of the image
    # --- reference-latent control after the drag phase ---
    reference_attention: bool = True  # mutual self-attention for the denoising steps after dragging ends
    reference_attention_blocks: tuple[int, ...] = (2, 3)  # decoder up_blocks whose self-attention reads the source K/V
    # --- outputs ---
    animation: bool = False  # also return decoded intermediate results with the handles drawn (DragResult.frames)
    # --- identity-preserving LoRA (as DragDiffusion, 70 steps) ---
    lora_steps: int = 70  # fine-tuning steps (0 = no LoRA)
    lora_rank: int = 16  # LoRA rank on to_q, to_k, to_v, to_out.0 of every UNet attention (alpha = rank)
    lora_lr: float = 5e-4  # AdamW learning rate
    lora_batch_size: int = 4  # images (noise draws) per LoRA step
    lora_weight_decay: float = 1e-2  # AdamW weight decay

    method = "gooddrag"

    def __post_init__(self):
        _validate_common(self)
        for name in ("drag_denoise_steps", "trackings_per_denoise"):
            if getattr(self, name) < 0:
                raise DragError(f"{name} must be >= 0")
        for name in ("supervision_steps_per_tracking", "early_stop_trackings"):
            if getattr(self, name) < 1:
                raise DragError(f"{name} must be >= 1")
        if self.drag_step_size <= 0:
            raise DragError("drag_step_size must be > 0")
        if self.stop_distance < 0:
            raise DragError("stop_distance must be >= 0")

    @property
    def inverted_steps(self) -> int:
        """k = round(T·strength), with Python's round (half to even) as the reference: 0.75 → 38."""
        return round(self.num_inference_steps * self.inversion_strength)


@dataclass(frozen=True)
class GenerationConfig:
    """Text-to-image generation whose every step latent is kept, so that the image can be dragged afterwards without
    LoRA or inversion (DragDiffusion §4.3, appendix C); defaults as the official UI's "Editing Generated Image" tab."""

    prompt: str = ""  # positive prompt
    negative_prompt: str = ""  # negative prompt of CFG ("" = the null prompt)
    seed: int = 65536  # seed of the initial noise z_T (drawn on the CPU, so the same on every device)
    guidance_scale: float = 7.5  # s: classifier-free guidance scale (1 = no CFG, one UNet pass per step)
    num_inference_steps: int = 50  # T: sampling steps (the drag later starts at step T − round(T·strength))
    scheduler: str = "ddim"  # sampler: ddim (reference DDIM config) | dpm++2m | dpm++2m-karras
    width: int = 512  # W in pixels, a multiple of the VAE factor (8 for SD)
    height: int = 512  # H in pixels, a multiple of the VAE factor (8 for SD)
    # --- FreeU (Si et al., CVPR 2024) through diffusers' enable_freeu; all 1.0 = off (reference UI defaults) ---
    freeu_b1: float = 1.0  # b1: backbone factor of the first decoder stage (reference slider 1–1.6)
    freeu_b2: float = 1.0  # b2: backbone factor of the second decoder stage (reference slider 1–1.6)
    freeu_s1: float = 1.0  # s1: skip low-frequency factor of the first decoder stage (reference slider 0–1)
    freeu_s2: float = 1.0  # s2: skip low-frequency factor of the second decoder stage (reference slider 0–1)

    method = "generate"

    def __post_init__(self):
        from .sampling import SCHEDULERS

        if self.scheduler not in SCHEDULERS:
            raise DragError(f"unknown scheduler {self.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
        if self.num_inference_steps < 1:
            raise DragError("num_inference_steps must be >= 1")
        if self.guidance_scale < 1:
            raise DragError("guidance_scale must be >= 1 (1 = no classifier-free guidance)")
        if self.width < 1 or self.height < 1:
            raise DragError("width and height must be positive")
        if min(self.freeu_b1, self.freeu_b2) <= 0 or min(self.freeu_s1, self.freeu_s2) < 0:
            raise DragError("FreeU factors must be positive (b1, b2 > 0; s1, s2 >= 0)")

    @property
    def freeu(self) -> tuple[float, float, float, float]:
        """(b1, b2, s1, s2), the reference's order."""
        return self.freeu_b1, self.freeu_b2, self.freeu_s1, self.freeu_s2
