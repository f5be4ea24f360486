"""Train the shapes model from scratch: VAE first, then UNet + text encoder on its latents. Resumable.

    dragkit shapes train --work runs/shapes-train --export src/dragkit/shapes/weights

Scenes are drawn on the fly from seeds (step × batch + i, so a resumed run sees exactly the same data); held-out
evaluation and the benchmark use disjoint seed ranges (:data:`.scenes.EVAL_SEED`, :data:`.scenes.BENCH_SEED`). Each
stage writes a checkpoint every ``--checkpoint-every`` steps (atomically); re-running the same command continues from
it.

Stages: (1) VAE: MSE + 1e-6·KL; (2) latent statistics → ``scaling_factor`` = 1/std; (3) UNet (ε-prediction,
uniform t) and text encoder jointly, captions dropped 10 % of the time (classifier-free guidance), EMA of the
weights (decay 0.999) is what is exported.

``arch="sdxl"`` trains the XL toy (:mod:`.model`: SDXL's UNet layout and two text encoders) with the same recipe; with
``vae_from`` (a trained shapes model folder) stages 1–2 are skipped and that VAE, with its scaling factor, is used.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..io import atomic_path
from . import model as shapes_model
from .scenes import EVAL_SEED, random_scene

logger = logging.getLogger(__name__)

CAPTION_DROP = 0.1


def scene_batch(first_seed: int, n: int, size: int = shapes_model.IMAGE_SIZE) -> tuple[torch.Tensor, list[str]]:
    """Images (n×3×H×W in [−1, 1]) and captions of scenes first_seed … first_seed + n − 1."""
    scenes = [random_scene(first_seed + i, size) for i in range(n)]
    images = np.stack([s.image() for s in scenes]).astype(np.float32) / 127.5 - 1
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), [s.caption() for s in scenes]


def _lr(step: int, total: int, base: float, warmup: int = 200) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _checkpoint(ckpt: Path, step: int, opt, **modules) -> None:
    """Save ``modules`` (checkpoint key → module), the optimiser and the step, atomically."""
    state = {key: module.state_dict() for key, module in modules.items()}
    with atomic_path(ckpt) as tmp:
        torch.save({**state, "optim": opt.state_dict(), "step": step}, tmp)


def _resume(ckpt: Path, stage: str, opt, **modules) -> int:
    """Load what :func:`_checkpoint` saved into ``modules`` and ``opt`` if ``ckpt`` exists; the step to go on from."""
    if not ckpt.exists():
        return 0
    state = torch.load(ckpt, weights_only=True)
    for key, module in modules.items():
        module.load_state_dict(state[key])
    opt.load_state_dict(state["optim"])
    logger.info("%s: resuming at step %d", stage, state["step"])
    return state["step"]


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)


def random_crops(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``size``×``size`` crop per image (aligned to 8 px so crops keep the latent grid's phase)."""
    if size >= x.shape[-1]:
        return x
    n_pos = (x.shape[-1] - size) // 8 + 1
    pos = torch.randint(0, n_pos, (x.shape[0], 2), generator=generator) * 8
    return torch.stack([img[:, r:r + size, c:c + size] for img, (r, c) in zip(x, pos.tolist())])


def train_vae(work: Path, steps: int, batch_size: int = 16, lr: float = 1e-3, checkpoint_every: int = 200,
              progress: bool = True, crop: int = 32):
    """Stage 1 (on random ``crop``-pixel crops: the VAE is convolutional, and crops cost a quarter of the scenes).
    Returns the trained VAE (eval mode)."""
    ckpt = work / "vae.pt"
    vae = shapes_model.build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    step = _resume(ckpt, "VAE", opt, model=vae)
    vae.train()
    bar = _progress(steps, step, "VAE", progress)
    while step < steps:
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr, warmup=100)
        gen = torch.Generator().manual_seed(step)
        x = random_crops(scene_batch(step * batch_size, batch_size)[0], crop, gen)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        mse = F.mse_loss(recon, x)
        loss = mse + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(psnr=f"{10 * math.log10(4 / max(mse.item(), 1e-10)):.1f}")
        if step % checkpoint_every == 0 or step == steps:
            _checkpoint(ckpt, step, opt, model=vae)
    bar.close()
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def latent_scaling_factor(vae, n: int = 512, batch_size: int = 64) -> float:
    """1 / std of posterior samples over held-out scenes (how SD 1.5's scaling factor was chosen)."""
    zs = []
    for first in range(0, n, batch_size):
        x, _ = scene_batch(EVAL_SEED + first, min(batch_size, n - first))
        zs.append(vae.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(first)))
    return float(1.0 / torch.cat(zs).std())


def _ema_update(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pl in zip(ema.parameters(), live.parameters()):
            pe.lerp_(pl, 1 - decay)


def build_denoiser(arch: str):
    """(UNet, text module) of ``arch``: SD's UNet and one text encoder, or the XL toy's UNet and its two encoders
    (one ``ModuleList``, so checkpoints and the EMA treat them as one module)."""
    if arch == "sdxl":
        return shapes_model.build_unet_xl(), torch.nn.ModuleList(shapes_model.build_text_encoders_xl())
    return shapes_model.build_unet(), shapes_model.build_text_encoder()


def caption_conditioning(arch: str, text_encoder, tokenizer, captions: list[str], drop: torch.Tensor) -> dict:
    """UNet keyword arguments for a batch of captions, the ones where ``drop`` is set made unconditional: the empty
    caption (SD) or zero embeddings (SDXL's ``force_zeros_for_empty_prompt``)."""
    if arch != "sdxl":
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    if arch == "sdxl":
        return shapes_model.xl_conditioning(text_encoder, ids, drop)
    return {"encoder_hidden_states": text_encoder(ids)[0]}


def train_unet(work: Path, vae, scaling: float, steps: int, batch_size: int = 16, lr: float = 5e-4,
               checkpoint_every: int = 200, progress: bool = True, arch: str = "sd"):
    """Stage 3. Returns (EMA UNet, EMA text module), eval mode."""
    ckpt = work / "unet.pt"
    torch.manual_seed(0)
    unet, text_encoder = build_denoiser(arch)
    tokenizer = shapes_model.build_tokenizer()
    scheduler = shapes_model.build_scheduler()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    modules = dict(unet=unet, text=text_encoder, ema_unet=ema_unet, ema_text=ema_text)
    step = _resume(ckpt, "UNet", opt, **modules)
    unet.train()
    text_encoder.train()
    alphas = scheduler.alphas_cumprod
    bar = _progress(steps, step, "UNet", progress)
    running = None
    while step < steps:
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr)
        gen = torch.Generator().manual_seed(10_000_000 + step)
        x, captions = scene_batch(step * batch_size, batch_size)
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
            z0 = (posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)) * scaling
        drop = torch.rand(batch_size, generator=gen) < CAPTION_DROP
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        pred = unet(zt, t, **caption_conditioning(arch, text_encoder, tokenizer, captions, drop)).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        _ema_update(ema_text, text_encoder, decay)
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        if step % checkpoint_every == 0 or step == steps:
            _checkpoint(ckpt, step, opt, **modules)
    bar.close()
    return ema_unet.eval(), ema_text.eval()


def train(work: str | Path, export: Optional[str | Path], vae_steps: int, unet_steps: int, vae_batch: int = 16,
          unet_batch: int = 16, checkpoint_every: int = 200, progress: bool = True, vae_crop: int = 32,
          arch: str = "sd", vae_from: Optional[str | Path] = None):
    """All stages; exports the pipeline (fp16 safetensors diffusers folder) to ``export`` when given."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    if vae_from is not None:
        from diffusers import AutoencoderKL

        from ..models import dtype_kwargs

        vae = AutoencoderKL.from_pretrained(str(Path(vae_from) / "vae"), **dtype_kwargs(torch.float32))
        vae = vae.eval().requires_grad_(False)
        scaling = float(vae.config.scaling_factor)
    else:
        vae = train_vae(work, vae_steps, vae_batch, checkpoint_every=checkpoint_every, progress=progress,
                        crop=vae_crop)
        scaling = latent_scaling_factor(vae)
        vae.register_to_config(scaling_factor=scaling)
    logger.info("latent scaling factor %.5f", scaling)
    unet, text_encoder = train_unet(work, vae, scaling, unet_steps, unet_batch, checkpoint_every=checkpoint_every,
                                    progress=progress, arch=arch)
    if arch == "sdxl":
        pipe = shapes_model.assemble_pipeline_xl(vae, unet, list(text_encoder))
    else:
        pipe = shapes_model.assemble_pipeline(vae, unet, text_encoder)
    if export is not None:
        export = Path(export)
        tmp = export.with_name(export.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shapes_model.save_pipeline_fp16(pipe, tmp)
        shutil.rmtree(export, ignore_errors=True)
        os.replace(tmp, export)
        logger.info("exported to %s", export)
    return pipe


if __name__ == "__main__":  # python -m dragkit.shapes.train ARGS: the command of train_command.py, which imports this
    from .train_command import main

    raise SystemExit(main(prog="python -m dragkit.shapes.train"))
