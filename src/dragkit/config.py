"""Method configurations: one frozen dataclass per method on a shared base, and the generation settings.

Every field carries its help in ``field(metadata=...)`` (peft's convention): ``help`` names the paper symbol and the
default of the paper / official code (see ../shared/spec/reference_behaviour.md); ``min`` / ``max`` (with ``open``
for a strict lower bound) are the range one validation routine checks for every config. CLI (``--set``), web app and
``--json`` read the same fields. This module imports no torch: ``dragkit --help`` stays light.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import DragError


def param(default: Any, help: str, *, min: Optional[float] = None, max: Optional[float] = None,
          open: bool = False) -> Any:
    """A config field with its help text and range (``open``: the lower bound itself is not allowed)."""
    return field(default=default, metadata={"help": help, "min": min, "max": max, "open": open})


def field_help(cfg_cls: type) -> dict[str, str]:
    """{field name: help text} of a config class."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cfg_cls)}


def validate(cfg: Any) -> None:
    """Every numeric field finite and in its declared range; a one-line :class:`DragError` otherwise."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                raise DragError(f"{f.name} must be a finite number (got {v})")
            lo, hi, is_open = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("open")
            if lo is not None and (v <= lo if is_open else v < lo):
                raise DragError(f"{f.name} must be {'>' if is_open else '>='} {lo:g} (got {v:g})")
            if hi is not None and v > hi:
                raise DragError(f"{f.name} must be <= {hi:g} (got {v:g})")


# --- the drag methods -------------------------------------------------------------------------------------------------

# Reasoning shared by both methods' layer choices (SD-1.5 UNet, 512² input, 64² latent). Outputs of the decoder
# blocks (after their upsamplers): up_blocks[0] 1280 ch at 16², [1] 1280 ch at 32², [2] 640 ch at 64², [3] 320 ch at
# 64². The supervision grid is half the image (256²); up_blocks[2]'s output — the last block with cross-attention
# that still upsamples, at latent resolution (1/8 of the image) — bilinearly resized, is the reference's "feature
# index 3": semantic enough to track, fine enough to move by a pixel.
# SDXL's blocks that play these roles, and why, are in dragkit.family (None = the loaded model family's choice).
FEATURE_BLOCK_HELP = ("F: output of unet.up_blocks[feature_block], resized to the supervision grid; None = the model "
                      "family's (SD-1.5: 2, the reference's \"feature index 3\", 640 ch at 1/8 of the image; SDXL: 1)")
REFERENCE_BLOCKS_HELP = ("decoder up_blocks whose self-attention reads the source branch's K/V; None = the model "
                         "family's (SD-1.5: 2, 3 as the reference; SDXL: 0, 1)")


@dataclass(frozen=True)
class MethodConfig:
    """Fields every drag method shares: DDIM schedule, latent optimisation, features, reference-latent-control and the
    identity LoRA. A method's subclass adds its own fields and may change these defaults (its paper's / code's)."""

    # --- DDIM ---
    num_inference_steps: int = param(50, "T: DDIM steps of the full schedule (\"leading\" spacing, offset 1)",
                                     min=1, max=1000)
    inversion_strength: float = param(0.7, "t = round(T·strength) inverted steps (0.7 → 35 → t* = 681)",
                                      min=0, max=1, open=True)
    # --- latent optimisation ---
    latent_lr: float = param(0.01, "η: Adam learning rate on the latent z_t", min=0, open=True)
    mask_weight: float = param(0.1, "λ: weight of the L1 term keeping x_{t−1} outside the mask (sum)", min=0)
    motion_radius: int = param(1, "r1: motion-supervision patch Ω(h, r1) is (2r1+1)²", min=0)
    tracking_radius: int = param(3, "r2: point-tracking search window Ω(h, r2) is (2r2+1)²", min=0)
    stop_distance: float = param(2.0, "stop when every handle is < this many feature px from its target", min=0,
                                 open=True)
    feature_block: Optional[int] = param(None, FEATURE_BLOCK_HELP, min=0)
    supervision_scale: float = param(0.5, "feature map is bilinearly resized to (int(s·H), int(s·W)) of the image",
                                     min=0, max=1, open=True)
    max_side: Optional[int] = param(None, "longest side of the working image, px: a larger input is downscaled for "
                                    "the edit (aspect kept) and the result scaled back to the input size; None = "
                                    "twice the model's native size (SD-1.5: 1024, SDXL: 2048); memory grows with "
                                    "the area (a 12-MP photo at full size would need ~200 GiB for the LoRA)", min=8)
    # --- reference-latent-control ---
    reference_attention: bool = param(True, "mutual self-attention while denoising the optimised latent")
    reference_attention_blocks: Optional[tuple[int, ...]] = param(None, REFERENCE_BLOCKS_HELP, min=0)
    # --- identity-preserving LoRA (DragDiffusion §3.2, Eq. 2) ---
    lora_steps: int = param(80, "fine-tuning steps of the identity LoRA (0 = no LoRA)", min=0, max=100_000)
    lora_rank: int = param(16, "LoRA rank on to_q, to_k, to_v, to_out.0 of every UNet attention (alpha = rank)",
                           min=1)
    lora_lr: float = param(5e-4, "AdamW learning rate of the LoRA", min=0, open=True)
    lora_batch_size: int = param(4, "images (noise draws) per LoRA step", min=1)
    lora_weight_decay: float = param(1e-2, "AdamW weight decay (reference: diffusers default 1e-2)", min=0)

    method = ""  # the registry name (METHODS)
    # a one-step method (no optimisation): a re-edit of a prepared image is one warp and a few denoising steps, fast
    # enough for the web app to re-run it live as points are placed
    one_step = False

    def __post_init__(self):
        validate(self)
        if self.inverted_steps < 1:
            raise DragError("inversion_strength x num_inference_steps rounds to 0 inverted steps")

    @property
    def inverted_steps(self) -> int:
        """k = round(T·strength), with Python's round (half to even) as the reference: 0.7→35, 0.75→38."""
        return round(self.num_inference_steps * self.inversion_strength)

    @property
    def copies_kv(self) -> bool:
        """Whether the inversion saves the decoder self-attention keys/values and the final denoising uses them
        instead of its own (FastDrag's consistency-preserving strategy) — the alternative to reference attention."""
        return False


@dataclass(frozen=True)
class DragDiffusionConfig(MethodConfig):
    """DragDiffusion (Shi et al., CVPR 2024), defaults as the official code (commit ebe659a, Dec-2023 defaults)."""

    optimization_steps: int = param(80, "K: max motion-supervision (Adam) iterations", min=0, max=100_000)

    method = "dragdiffusion"


@dataclass(frozen=True)
class GoodDragConfig(MethodConfig):
    """GoodDrag (Zhang et al., ICLR 2025): Alternating Drag and Denoising (AlDD) with information-preserving motion
    supervision; defaults as the official code's UI (commit fc01bc1, spec §2; the bench script differs where noted)."""

    inversion_strength: float = param(0.75, "round(T·strength) inverted steps (0.75 → 38 → the drag starts at "
                                            "t* = 741)", min=0, max=1, open=True)
    latent_lr: float = param(0.02, "η: Adam learning rate on the latent; a new optimiser at every denoising step",
                             min=0, open=True)
    mask_weight: float = param(0.2, "λ: weight of Σ|(x_{t−1}(ẑ) − x̄_{t−1})⊙(1−M)| vs the undragged trajectory "
                                    "(bench: 0.1)", min=0)
    motion_radius: int = param(4, "r1: patch (2r1+1)², loss = (2r1)²·mean L1 (the code's factor)", min=0)
    tracking_radius: int = param(12, "r2: point-tracking window (2r2+1)², clipped to the map (the code does not "
                                     "clip)", min=0)
    lora_steps: int = param(70, "fine-tuning steps of the identity LoRA (0 = no LoRA)", min=0, max=100_000)
    # --- AlDD (paper §3.3) ---
    drag_denoise_steps: int = param(7, "T_d (\"drag_end_step\"): denoising steps after inversion preceded by drag "
                                       "operations", min=0)
    trackings_per_denoise: int = param(10, "B: point trackings (drag operations) per denoising step", min=0)
    supervision_steps_per_tracking: int = param(3, "J: motion-supervision (Adam) steps per point tracking", min=1)
    early_stop_trackings: int = param(10, "stop dragging after this many consecutive trackings moving no handle "
                                          "(bench: 5)", min=1)
    # --- information-preserving motion supervision (paper §3.4, Eq. 8) ---
    drag_step_size: float = param(4.0, "β: the shifted patch sits at h + d·min(β, ‖g − h‖) (feature px)", min=0,
                                  open=True)
    information_preserving: bool = param(True, "motion target sg(F_orig) at h⁰ (Eq. 8); False: sg(F) at the current "
                                               "h (Eq. 7, the paper's w/o-IP ablation)")
    regularize_without_mask: bool = param(True, "code: with no mask drawn the whole latent is pinned; False drops "
                                                "the λ-term")
    # --- outputs ---
    animation: bool = param(False, "also return decoded intermediate results with the handles drawn "
                                   "(DragResult.frames)")

    method = "gooddrag"


@dataclass(frozen=True)
class FastDragConfig(MethodConfig):
    """FastDrag (Zhao et al., NeurIPS 2024): one-step latent warpage (LWF) + bilateral nearest-neighbour interpolation
    (BNNI) of the inverted latent, then denoising with the inversion's self-attention keys/values; no optimisation.
    Defaults as the official benchmark (``run_fast_drag.py``, "continuous drag", commit def3c4e; golden README §10.3).
    The latent-optimisation fields it inherits are unused."""

    num_inference_steps: int = param(10, "T: DDIM steps of the full schedule (reference: 10; 901, 801, …, 1)",
                                     min=1, max=1000)
    inversion_strength: float = param(0.7, "round(T·strength) inverted steps (0.7 → 7 → t* = 601): the warped "
                                           "latent lives at t*", min=0, max=1, open=True)
    reference_attention: bool = param(False, "mutual self-attention while denoising (reference: a MasaCtrl editor is "
                                             "built but never registered: off); cannot be combined with kv_copy")
    lora_steps: int = param(0, "fine-tuning steps of the identity LoRA (reference \"continuous drag\": none; 0 = no "
                               "LoRA)", min=0, max=100_000)
    kv_copy: bool = param(True, "consistency-preserving strategy (paper §3.4): the decoder self-attention uses the "
                                "keys/values the inversion saved at the same timestep instead of its own (reference: "
                                "on)")
    confine_to_mask: bool = param(False, "LWF relocation: drop a moved value whose destination lies outside the mask "
                                         "(reference: off — it overwrites that latent pixel)")

    method = "fastdrag"
    one_step = True

    def __post_init__(self):
        super().__post_init__()
        if self.reference_attention and self.kv_copy:
            raise DragError("reference_attention and kv_copy both control the decoder self-attention: turn one off")

    @property
    def copies_kv(self) -> bool:
        return self.kv_copy


@dataclass(frozen=True)
class SolidDragConfig(FastDragConfig):
    """SolidDrag (dragkit's own, :mod:`dragkit.soliddrag`): FastDrag's inversion, K/V copy and denoising, with the
    object under each handle moved whole — found in the UNet features, lifted out, its footprint filled from the
    background, laid back at its full drag — instead of stretched by LWF. Defaults from the shapes-world ablation
    (docs/shapes/soliddrag.md)."""

    inversion_strength: float = param(0.5, "round(T·strength) inverted steps (0.5 → 5 of 10 → t* = 401; FastDrag: "
                                           "0.7). Shapes world, 30 tasks: drag error 0.098 / 0.096 / 0.101 / 0.105 / "
                                           "0.117 of the distance at 0.3 / 0.4 / 0.5 / 0.6 / 0.7 — flat up to 0.5, "
                                           "the most denoising that keeps it", min=0, max=1, open=True)
    core_threshold: Optional[float] = param(None, "the object under a handle: connected latent pixels whose feature's "
                                                  "cosine similarity to the handle's is ≥ this; None = Otsu's cut "
                                                  "over the editable region", min=-1, max=1)

    method = "soliddrag"


# The registry: method name → config class (the optimisation each runs: dragkit.editor.OPTIMIZE).
METHODS: dict[str, type[MethodConfig]] = {"dragdiffusion": DragDiffusionConfig, "gooddrag": GoodDragConfig,
                                          "fastdrag": FastDragConfig, "soliddrag": SolidDragConfig}


def method_names() -> list[str]:
    return list(METHODS)


def default_config(method: str) -> MethodConfig:
    """The paper-default config of ``method``."""
    if method not in METHODS:
        raise DragError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method]()


# --- generation -------------------------------------------------------------------------------------------------------

SCHEDULERS = ("ddim", "dpm++2m", "dpm++2m-karras")  # samplers of a generation (dragkit.sampling builds them)


@dataclass(frozen=True)
class GenerationConfig:
    """Text-to-image generation whose every step latent is kept, so that the image can be dragged afterwards without
    LoRA or inversion (DragDiffusion §4.3, appendix C); defaults as the official UI's "Editing Generated Image" tab."""

    prompt: str = param("", "positive prompt")
    negative_prompt: str = param("", "negative prompt of CFG (\"\" = the null prompt)")
    seed: int = param(65536, "seed of the initial noise z_T (drawn on the CPU, so the same on every device)")
    guidance_scale: float = param(7.5, "s: classifier-free guidance scale (1 = no CFG, one UNet pass per step)",
                                  min=1)
    num_inference_steps: int = param(50, "T: sampling steps (the drag later starts at step T − round(T·strength))",
                                     min=1, max=1000)
    scheduler: str = param("ddim", "sampler: ddim (reference DDIM config) | dpm++2m | dpm++2m-karras")
    width: Optional[int] = param(None, "W in pixels, a multiple of the VAE factor (8 for SD); None = the model's "
                                       "default (SD-1.5 512, SDXL 1024)", min=1)
    height: Optional[int] = param(None, "H in pixels, a multiple of the VAE factor (8 for SD); None = the model's "
                                        "default (SD-1.5 512, SDXL 1024)", min=1)
    # --- FreeU (Si et al., CVPR 2024) through diffusers' enable_freeu; all 1.0 = off (reference UI defaults) ---
    freeu_b1: float = param(1.0, "b1: backbone factor of the first decoder stage (reference slider 1–1.6)", min=0,
                            open=True)
    freeu_b2: float = param(1.0, "b2: backbone factor of the second decoder stage (reference slider 1–1.6)", min=0,
                            open=True)
    freeu_s1: float = param(1.0, "s1: skip low-frequency factor of the first decoder stage (reference slider 0–1)",
                            min=0)
    freeu_s2: float = param(1.0, "s2: skip low-frequency factor of the second decoder stage (reference slider 0–1)",
                            min=0)

    method = "generate"

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise DragError(f"unknown scheduler {self.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
        validate(self)

    @property
    def freeu(self) -> tuple[float, float, float, float]:
        """(b1, b2, s1, s2), the reference's order."""
        return self.freeu_b1, self.freeu_b2, self.freeu_s1, self.freeu_s2


# --- reading and writing configs --------------------------------------------------------------------------------------

def config_fields(cfg_cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cfg_cls)}


def _parse_value(text: str, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin is typing.Union or type(typ).__name__ == "UnionType":  # Optional[X]: "none" / "auto" → None
        if text.strip().lower() in ("none", "auto", ""):
            return None
        (typ,) = [t for t in typing.get_args(typ) if t is not type(None)]
        return _parse_value(text, typ)
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


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise DragError(f"--set expects FIELD=VALUE, got {item!r}")
    name, value = (s.strip() for s in item.split("=", 1))
    return name, value


def apply_overrides(cfg: Any, assignments: list[str]) -> Any:
    """Return ``cfg`` with ``FIELD=VALUE`` strings applied (the CLI's ``--set``), typed by the dataclass fields."""
    hints = typing.get_type_hints(type(cfg))
    fields = config_fields(type(cfg))
    changes = {}
    for item in assignments:
        name, value = _split(item)
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise DragError(f"unknown config field {name!r} for {cfg.method}; known fields: {known}")
        try:
            changes[name] = _parse_value(value, hints[name])
        except ValueError:
            raise DragError(f"cannot read {name}={value!r} as {getattr(hints[name], '__name__', hints[name])}") from None
    return dataclasses.replace(cfg, **changes)


def configs_with_overrides(configs: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Each config with the ``FIELD=VALUE`` assignments that name one of its fields (a ``--set`` meant for several
    methods); an assignment no config has is an error."""
    for item in assignments:
        name, _ = _split(item)
        if not any(name in config_fields(type(c)) for c in configs.values()):
            raise DragError(f"--set {name}: no requested method ({', '.join(configs) or 'none'}) has this config "
                            "field")
    return {key: apply_overrides(c, [a for a in assignments if _split(a)[0] in config_fields(type(c))])
            for key, c in configs.items()}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
