"""The shapes model's quality bar, measured on held-out scenes (seeds from :data:`train.EVAL_SEED`).

- VAE reconstruction PSNR: encode (posterior mean) → decode, per image, in 8-bit RGB.
- Inversion reconstruction PSNR: exactly the drag path without a drag — :func:`stages.prepare` (caption as prompt),
  DDIM inversion to strength 0.7 (35 of 50 steps, t* = 681) and DDIM denoising back, decoded — against the scene.
- A grid of samples (DDIM, 50 steps, classifier-free guidance) next to held-out scenes with the same captions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image

from .. import stages
from ..config import DragDiffusionConfig
from ..models import DiffusionModel
from ..types import DragRequest
from .scenes import random_scene
from .train import EVAL_SEED


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two uint8-range images (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _to_uint8(images01: torch.Tensor) -> np.ndarray:
    return (images01.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


@torch.no_grad()
def vae_psnr(model: DiffusionModel, n: int = 200, batch_size: int = 50) -> list[float]:
    out = []
    for first in range(0, n, batch_size):
        scenes = [random_scene(EVAL_SEED + i) for i in range(first, min(n, first + batch_size))]
        originals = [s.image() for s in scenes]
        x = torch.cat([model.image_to_tensor(Image.fromarray(o)) for o in originals])
        recon = _to_uint8(model.decode(model.encode_posterior(x)[0]))
        out += [psnr(o, r) for o, r in zip(originals, recon)]
    return out


@torch.no_grad()
def inversion_psnr(model: DiffusionModel, n: int = 50, strength: float = 0.7) -> list[float]:
    config = DragDiffusionConfig(inversion_strength=strength)
    out = []
    for i in range(n):
        scene = random_scene(EVAL_SEED + i)
        original = scene.image()
        # A request needs one point pair; it plays no part in inversion and denoising.
        request = DragRequest(Image.fromarray(original), [(1.0, 1.0)], [(2.0, 2.0)], None, scene.caption())
        edit = stages.prepare(model, request, config)
        _z0, z_t = stages.invert(model, edit, config.inverted_steps)
        _src, z = stages.denoise(model, edit, None, z_t, edit.t_index, None)
        out.append(psnr(original, _to_uint8(model.decode(z))[0]))
    return out


def sample_grid(model_path: str, n: int = 32, guidance: float = 3.0, seed: int = 0, columns: int = 8,
                device: Optional[str] = None) -> Image.Image:
    """Samples for the captions of the first ``n`` held-out scenes; rows alternate scenes / samples."""
    from ..models import load_pipeline, select_device

    pipe = load_pipeline(model_path, torch_dtype=torch.float32).to(select_device(device))
    pipe.set_progress_bar_config(disable=True)
    scenes = [random_scene(EVAL_SEED + i) for i in range(n)]
    size = scenes[0].size
    images = pipe([s.caption() for s in scenes], height=size, width=size, num_inference_steps=50,
                  guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), output_type="np").images
    samples = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    rows = []
    for r in range(0, n, columns):
        rows.append(np.concatenate([s.image() for s in scenes[r:r + columns]], axis=1))
        rows.append(np.concatenate(list(samples[r:r + columns]), axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0))


@dataclass
class QualityReport:
    vae_psnr_mean: float
    vae_psnr_min: float
    inversion_psnr_mean: float
    inversion_psnr_min: float
    n_vae: int
    n_inversion: int


def measure(model: DiffusionModel, n_vae: int = 200, n_inversion: int = 50) -> QualityReport:
    v = vae_psnr(model, n_vae)
    inv = inversion_psnr(model, n_inversion)
    return QualityReport(float(np.mean(v)), float(np.min(v)), float(np.mean(inv)), float(np.min(inv)), n_vae,
                         n_inversion)
