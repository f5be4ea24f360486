"""Identity-preserving fine-tuning (DragDiffusion §3.2, Eq. 2) with a PEFT LoRA on the UNet.

L_ft = E_{ε,t} ‖ε − ε_{θ+Δθ}(α_t z + σ_t ε)‖²  on the single input image. LoRA on to_q, to_k, to_v and to_out.0 of every
UNet attention (as the official code), rank r, alpha = r, gaussian init (down ~ N(0, 1/r), up = 0).
The adapter lives on the shared UNet only inside :func:`attached_lora`; training returns plain tensors so they can be
cached and re-attached for later edits of the same image.

Memory. A LoRA step back-propagates through the whole UNet at batch ``batch_size`` (4): without checkpointing the
forward leaves 3.9 GiB of activations for the backward in fp16 (SD-1.5, 512²; SDXL at 1024²: 29 GiB), the largest
working set of an edit (docs/performance.md, "Memory"). On accelerators the step therefore runs with the UNet's
gradient checkpointing on (:func:`gradient_checkpointing`: only each resnet / transformer block's inputs are kept,
0.56 GiB, and one block at a time is recomputed during the backward — ~30 % more time, the same gradients); it is
switched off again afterwards, so the drag that follows runs unchanged.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from .guidance import TextConditioning
from .optim import ScaledStepper
from .types import ProgressCallback, ProgressEvent, Stage

logger = logging.getLogger(__name__)

ADAPTER_NAME = "dragkit_identity"
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


def lora_config(rank: int) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGET_MODULES)


@contextmanager
def attached_lora(unet, rank: int, weights: Optional[dict[str, torch.Tensor]] = None) -> Iterator[list]:
    """Add the identity adapter to ``unet`` (fresh, or with ``weights``), yield its trainable parameters, remove it.

    Adapters already on the UNet (a user's style LoRA) stay active beside it, frozen, and are left as they were."""
    others = _active_adapters(unet)
    unet.add_adapter(lora_config(rank), adapter_name=ADAPTER_NAME)
    try:
        if others:  # add_adapter activates only the new adapter; keep the style LoRA on, and frozen
            unet.set_adapter(others + [ADAPTER_NAME])
            _freeze_all_but(unet, ADAPTER_NAME)
        if weights is not None:
            set_peft_model_state_dict(unet, weights, adapter_name=ADAPTER_NAME)
        yield [p for n, p in unet.named_parameters() if ADAPTER_NAME in n]
    finally:
        unet.delete_adapters(ADAPTER_NAME)
        _unwrap_tuner_layers(unet)
        if others:
            unet.set_adapter(others)  # (peft marks active adapters trainable: freeze them again)
            _freeze_all_but(unet, None)


def _freeze_all_but(unet, adapter: Optional[str]) -> None:
    for name, p in unet.named_parameters():
        if adapter is None or adapter not in name:
            p.requires_grad_(False)


def _active_adapters(unet) -> list[str]:
    """Adapters active on ``unet`` other than the identity one (diffusers returns None, a name or a list)."""
    if not getattr(unet, "_hf_peft_config_loaded", False):
        return []
    active = unet.active_adapters() or []
    return [a for a in ([active] if isinstance(active, str) else active) if a != ADAPTER_NAME]


def _unwrap_tuner_layers(module) -> None:
    """Put back the original layers wherever a peft wrapper is left with no adapter at all, so the shared UNet is
    exactly what was loaded (``delete_adapters`` alone leaves some wrappers in place, which changes state-dict keys);
    wrappers still holding another adapter (a style LoRA) are kept."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, child in list(module.named_children()):
        if isinstance(child, BaseTunerLayer):
            if not any(len(getattr(child, n, ())) for n in child.adapter_layer_names):
                setattr(module, name, child.get_base_layer())
        else:
            _unwrap_tuner_layers(child)


@contextmanager
def frozen_lora(unet, rank: int, weights: Optional[dict[str, torch.Tensor]]) -> Iterator[None]:
    """The identity LoRA ``weights`` attached to ``unet`` for the drag, frozen (the drag optimises the latent only:
    no LoRA weight gradients are computed or held); nothing when ``weights`` is None."""
    if weights is None:
        yield
        return
    with attached_lora(unet, rank, weights) as params:
        for p in params:
            p.requires_grad_(False)
        yield


def checkpointing_by_default(device: torch.device) -> bool:
    """Whether the LoRA step checkpoints the UNet when the caller does not say: on accelerators (their memory is the
    limit), not on the CPU (memory is plentiful there; checkpointing only costs time)."""
    return torch.device(device).type != "cpu"


@contextmanager
def gradient_checkpointing(unet, enabled: bool) -> Iterator[None]:
    """The UNet's activation checkpointing on while the context is open (when ``enabled`` and the model supports
    it), restored to what it was afterwards — also on exceptions: the same UNet runs the drag next."""
    was_on = bool(getattr(unet, "is_gradient_checkpointing", False))
    switch = enabled and not was_on and getattr(unet, "_supports_gradient_checkpointing", False)
    if switch:
        unet.enable_gradient_checkpointing()
    try:
        yield
    finally:
        if switch:
            unet.disable_gradient_checkpointing()


def train_identity_lora(
    unet,
    scheduler_config,
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    text: TextConditioning,
    *,
    steps: int,
    rank: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    generator: Optional[torch.Generator] = None,
    callback: Optional[ProgressCallback] = None,
    checkpointing: Optional[bool] = None,
) -> dict[str, torch.Tensor]:
    """Fine-tune a fresh LoRA for ``steps`` AdamW steps; return its weights (CPU float32), leaving the UNet clean.

    ``latent_mean``/``latent_std`` is the VAE posterior of the image, already × the VAE scaling factor; each step draws
    ``batch_size`` latents from it (the GoodDrag trick: encode once), a timestep t ~ U{0..T−1} and noise per sample.
    ``text`` is the edit's conditioning (unguided; for SDXL with its pooled embedding and size ids).
    ``checkpointing``: recompute the UNet's activations in the backward instead of holding them (same weights,
    ~30 % slower, far less memory); None = :func:`checkpointing_by_default` for the latents' device.
    """
    noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    device = latent_mean.device
    amp = unet.dtype != torch.float32
    cond = text.unet_kwargs(batch_size)
    if checkpointing is None:
        checkpointing = checkpointing_by_default(device)
    with attached_lora(unet, rank) as params, gradient_checkpointing(unet, checkpointing):
        for name, p in zip([n for n, _ in unet.named_parameters() if ADAPTER_NAME in n], params):
            p.data = p.data.float()
            if "lora_A" in name:  # gaussian init N(0, 1/r), drawn from *our* generator so edits are reproducible
                p.data.normal_(0.0, 1.0 / rank, generator=generator)
        optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, eps=1e-8)
        stepper = ScaledStepper(optimizer, device, unet.dtype, "identity LoRA")
        unet.train()
        try:
            for step in range(steps):
                shape = (batch_size, *latent_mean.shape[1:])
                sample = torch.randn(shape, generator=generator, device=device, dtype=latent_mean.dtype)
                latents = latent_mean + latent_std * sample
                noise = torch.randn(shape, generator=generator, device=device, dtype=latent_mean.dtype)
                t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator,
                                  device=device)
                noisy = noise_scheduler.add_noise(latents, noise, t)
                target = noise_scheduler.get_velocity(latents, noise, t) if (
                    noise_scheduler.config.prediction_type == "v_prediction") else noise

                def batch_loss():
                    with torch.autocast(device.type, dtype=unet.dtype, enabled=amp):
                        pred = unet(noisy.to(unet.dtype), t, **cond).sample
                    return F.mse_loss(pred.float(), target.float())

                loss = batch_loss()
                while not stepper.step(loss):  # fp16 overflow: the same batch again at the lowered scale (uncounted)
                    loss = batch_loss()
                if callback is not None:
                    callback(ProgressEvent(Stage.LORA, step + 1, steps, loss=loss.item(), skipped=stepper.skipped))
        finally:
            unet.eval()
        weights = {k: v.detach().float().cpu().clone() for k, v in
                   get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME).items()}
    return weights


class LoraCache:
    """Identity LoRAs on disk, keyed by what determines them (image bytes, prompt, model, LoRA settings, seed).

    Re-editing the same image with the same model (another drag, another method, a re-run of a benchmark) reuses the
    fine-tuned weights instead of training again. Files are written atomically.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @staticmethod
    def key(*parts: object) -> str:
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part if isinstance(part, bytes) else repr(part).encode())
            digest.update(b"\0")
        return digest.hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def get(self, key: str) -> Optional[dict[str, torch.Tensor]]:
        path = self._path(key)
        if not path.exists():
            return None
        logger.info("reusing cached identity LoRA %s", path)
        return load_file(path)

    def put(self, key: str, weights: dict[str, torch.Tensor]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self._path(key).with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp))
        tmp.replace(self._path(key))
