"""The shapes model's quality bar, measured on held-out scenes (seeds from :data:`scenes.EVAL_SEED`).

- VAE reconstruction PSNR: encode (posterior mean) → decode, per image, in 8-bit RGB.
- Inversion reconstruction PSNR: exactly the drag path without a drag — :func:`stages.start_edit` (caption as
  prompt), DDIM inversion to strength 0.7 (35 of 50 steps, t* = 681) and DDIM denoising back, decoded — against the
  scene.
- A grid of samples (DDIM, 50 steps, classifier-free guidance) next to held-out scenes with the same captions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .. import stages
from ..config import DragDiffusionConfig
from ..models import DiffusionModel
from ..types import DragRequest
from .metrics import psnr as capped_psnr
from .scenes import EVAL_SEED, random_scene


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Plain PSNR (dB, 8-bit peak) of two whole images: the benchmark's, uncapped."""
    return capped_psnr(a, b, cap=float("inf"))


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
        edit = stages.start_edit(model, request, config)
        z_t = stages.invert(model, edit, stages.encode(model, edit)[0])
        z = stages.denoise(model, edit, stages.DragOutcome(z_t, z_t, edit.t_index, edit.handles, [], 0), None)
        out.append(psnr(original, _to_uint8(model.decode(z))[0]))
    return out


def sample_grid(model: DiffusionModel, n: int = 32, guidance: float = 3.0, seed: int = 0,
                columns: int = 8) -> Image.Image:
    """Samples (the library's own :func:`dragkit.generation.generate`: DDIM, 50 steps, classifier-free guidance) for
    the captions of the first ``n`` held-out scenes, noise seeds ``seed + i``; rows alternate scenes / samples."""
    from ..config import GenerationConfig
    from ..generation import generate

    scenes = [random_scene(EVAL_SEED + i) for i in range(n)]
    size = scenes[0].size
    samples = [np.asarray(generate(model, GenerationConfig(prompt=s.caption(), seed=seed + i, guidance_scale=guidance,
                                                           width=size, height=size)).image)
               for i, s in enumerate(scenes)]
    rows = []
    for r in range(0, n, columns):
        rows.append(np.concatenate([s.image() for s in scenes[r:r + columns]], axis=1))
        rows.append(np.concatenate(samples[r:r + columns], axis=1))
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
