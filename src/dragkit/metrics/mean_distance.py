"""Mean Distance (DragDiffusion §5, ``drag_bench_evaluation/run_eval_point_matching.py``).

DIFT correspondence: features of an SD-2.1 UNet (``up_blocks[1]`` output, noise at t = 261, ensemble of 8 noise
draws averaged, the sample's prompt, no CFG) for the original and the edited image, both **bilinearly upsampled to the
full image size**; each handle's source feature vector is matched by **argmax of cosine similarity** over the edited
image's map, and the Euclidean pixel distance of the match to the target is the error. MD averages over all pairs.

The upsampled 1280-channel maps are never held at full resolution. Bilinear upsampling U is linear, so the numerator
⟨s, U(f)(p)⟩ = U(⟨s, f⟩)(p) is the upsampled low-resolution dot map. The norm is not linear, but U(f)(p) is a weighted
sum of the four low-resolution corners around p, so ‖U(f)(p)‖² = ωᵀ G ω with ω the four bilinear weights of p and G the
4×4 Gram matrix of those corners, computed once per low-resolution cell. Cosine maps are therefore exactly the
definition's (up to float rounding) at the cost of a few single-channel full-size maps.

**m-MD** (DragLoRA, ``drag_bench_evaluation/run_eval_point_matching.py``): the same, with the match searched only
among the pixels of the editable region (``region=`` the sample's mask), so that a handle cannot "match" in an
unrelated part of the picture. DIFT's noise is seeded per sample (:mod:`.seeds`), so both share one feature pass.

**Noise.** The original and the edited image get *independent* noise draws (the report seeds them ``dift-original``
and ``dift-edited`` of the sample id, :func:`.seeds.dift_seeds`), as the official evaluator. With one shared draw an
unchanged region has identical features in both images and every handle matches its own pixel, which biases MD toward
"did not move" (an identity edit then scores exactly the no-move distance).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import first_line
from ..features import FeatureCapture
from ..hub import DIFT_MODEL, offline
from ..types import DragError

logger = logging.getLogger(__name__)


# --- exact cosine similarity against bilinearly upsampled features ---------------------------------------------------

def bilinear_taps(n_in: int, n_out: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices (i0, i1) and weights (w0, w1) of each output index, as ``F.interpolate(mode="bilinear",
    align_corners=False)`` with an output size: src = max((dst + ½)·n_in/n_out − ½, 0), i1 = min(i0 + 1, n_in − 1)."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    w1 = src - i0
    return i0, i1, 1 - w1, w1


def upsampled_at(features: torch.Tensor, points_xy: Sequence[Sequence[int]], size_hw: tuple[int, int]) -> torch.Tensor:
    """K×C: the C×h×w ``features`` bilinearly upsampled to ``size_hw``, read at integer (x, y) pixels."""
    (H, W), (_, h, w) = size_hw, features.shape
    ri0, ri1, rw0, rw1 = bilinear_taps(h, H, features.device)
    ci0, ci1, cw0, cw1 = bilinear_taps(w, W, features.device)
    out = []
    for x, y in points_xy:
        out.append(rw0[y] * (cw0[x] * features[:, ri0[y], ci0[x]] + cw1[x] * features[:, ri0[y], ci1[x]])
                   + rw1[y] * (cw0[x] * features[:, ri1[y], ci0[x]] + cw1[x] * features[:, ri1[y], ci1[x]]))
    return torch.stack(out)


def upsampled_norm(features: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """H×W: ‖U(f)(p)‖ of the bilinear upsampling U of the C×h×w ``features``, via 4×4 corner Gram matrices."""
    (H, W), (_, h, w) = size_hw, features.shape
    padded = F.pad(features[None], (0, 1, 0, 1), mode="replicate")[0]  # corner i0+1 / j0+1 clamped like i1 / j1
    corners = [padded[:, :h, :w], padded[:, :h, 1:], padded[:, 1:, :w], padded[:, 1:, 1:]]  # 00, 01, 10, 11
    ri0, _, rw0, rw1 = bilinear_taps(h, H, features.device)
    ci0, _, cw0, cw1 = bilinear_taps(w, W, features.device)
    # at the last row/col i1 = i0 and the replicated corner equals it, so the weights stay (w0, w1) as in F.interpolate
    omega = [torch.outer(rw0, cw0), torch.outer(rw0, cw1), torch.outer(rw1, cw0), torch.outer(rw1, cw1)]
    norm2 = torch.zeros(H, W, dtype=features.dtype, device=features.device)
    for a in range(4):
        for b in range(a, 4):
            gram = (corners[a] * corners[b]).sum(0)[ri0][:, ci0]  # ⟨corner_a, corner_b⟩ of each output pixel's cell
            norm2 += (1 if a == b else 2) * omega[a] * omega[b] * gram
    return norm2.clamp_min(0).sqrt()


def cosine_maps(vectors: torch.Tensor, features: torch.Tensor, size_hw: tuple[int, int],
                eps: float = 1e-8) -> torch.Tensor:
    """K×H×W cosine similarity of each of the K×C ``vectors`` with every pixel of the C×h×w ``features`` bilinearly
    upsampled to ``size_hw`` — equal to upsampling first, without the C×H×W map."""
    dots = torch.einsum("kc,chw->khw", vectors, features)
    dots = F.interpolate(dots[None], size=size_hw, mode="bilinear", align_corners=False)[0]
    norms = vectors.norm(dim=1)[:, None, None] * upsampled_norm(features, size_hw)[None]
    return dots / norms.clamp_min(eps)


def _pixel(p: Sequence[float], size_hw: tuple[int, int]) -> tuple[int, int]:
    H, W = size_hw
    return min(max(int(round(p[0])), 0), W - 1), min(max(int(round(p[1])), 0), H - 1)


def match_handles(source: torch.Tensor, edited: torch.Tensor, handles: Sequence[Sequence[float]],
                  size_hw: tuple[int, int], region=None) -> list[tuple[int, int]]:
    """(x, y) in the edited image best matching each handle of the source: argmax of cosine similarity of the
    upsampled C×h×w feature maps (handles rounded to the nearest pixel, as DragBench's integer points).

    ``region`` (H×W, nonzero = searched; m-MD passes the editable region): only those pixels can be the match; ties
    go to the first in raster order, as the reference's candidate list."""
    source, edited = source.float(), edited.float()
    vectors = upsampled_at(source, [_pixel(p, size_hw) for p in handles], size_hw)
    maps = cosine_maps(vectors, edited, size_hw)
    if region is not None:
        allowed = torch.as_tensor(np.asarray(region) != 0, device=maps.device)
        if tuple(allowed.shape) != tuple(size_hw):
            raise DragError(f"m-MD: region is {allowed.shape[1]}x{allowed.shape[0]}, the image "
                            f"{size_hw[1]}x{size_hw[0]}")
        if not allowed.any():
            raise DragError("m-MD: the editable region is empty")
        maps = maps.masked_fill(~allowed, -math.inf)
    flat = maps.flatten(1).argmax(dim=1).tolist()
    W = size_hw[1]
    return [(i % W, i // W) for i in flat]


def point_distances(source: torch.Tensor, edited: torch.Tensor, handles, targets,
                    size_hw: tuple[int, int], region=None) -> list[float]:
    """Per pair: Euclidean pixel distance from the DIFT match of the handle to the target (MD); with ``region`` the
    match is searched only there (m-MD with the editable region)."""
    matches = match_handles(source, edited, handles, size_hw, region)
    return [math.dist(m, t) for m, t in zip(matches, targets)]


# --- which model, and where it came from -----------------------------------------------------------------------------

def hub_revision(model: str) -> Optional[str]:
    """The commit of a Hub model's cached snapshot (what ``from_pretrained`` loaded), None for a local folder or file
    or when it cannot be told."""
    if Path(model).expanduser().exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "model_index.json")
    except Exception:  # not a repo id, or no huggingface_hub: unknown
        return None
    parts = Path(found).parts if isinstance(found, str) else ()
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def dift_load_error(model: str, exc: Exception) -> str:
    """One line: which DIFT model was tried, where, why it failed, and how to pass a local copy instead."""
    if Path(model).expanduser().exists():
        tried = f"the local folder {model}"
    else:
        where = ("the Hugging Face cache only (HF_HUB_OFFLINE is set)" if offline()
                 else "the Hugging Face cache, then the Hub")
        tried = f"{model!r} from {where}"
    reason = first_line(exc).split("; download it once")[0].replace("--model ", "--dift-model ")
    if reason.startswith("cannot fetch"):  # models.py's Hub message: say it short, without its --model hint
        reason = "not in the cache" if offline() else "not in the cache, and the Hub did not give it"
    return (f"Mean Distance: cannot load the DIFT model: tried {tried}: {reason}; pass a local diffusers copy of "
            f"SD 2.1 with --dift-model PATH (e.g. `hf download {DIFT_MODEL} --local-dir sd21`, "
            "then --dift-model sd21)")


# --- DIFT feature extractor ------------------------------------------------------------------------------------------

class _StopForward(Exception):
    """Raised by the capture hook: nothing after the hooked block is needed."""


class DiftFeaturizer:
    """DIFT (Tang et al. 2023) features of any diffusers Stable-Diffusion-style model (default SD 2.1, as DragBench).

    ``features(image, prompt)`` → C×h×w float32: the output of ``unet.up_blocks[block]`` for the VAE posterior sample
    noised to ``timestep``, averaged over ``ensemble`` noise draws. The UNet forward stops right after that block.
    The noise is seeded per call (``seed``; the report derives it from the sample id, :mod:`.seeds`), so a sample's
    features do not depend on which samples came before (the reference seeds once per evaluated folder). Give the
    original and the edited image different seeds (:func:`.seeds.dift_seeds`): one seed for both shares their noise.
    """

    def __init__(self, model, timestep: int = 261, block: int = 1, ensemble: int = 8):
        from diffusers import DDIMScheduler

        self.model = model
        self.scheduler = DDIMScheduler.from_config(model.scheduler_config)
        self.timestep, self.block, self.ensemble = timestep, block, ensemble
        self.revision: Optional[str] = None  # the Hub commit, set by from_pretrained when known
        if not 0 <= block < len(model.unet.up_blocks):
            raise DragError(f"DIFT block {block}: the UNet has {len(model.unet.up_blocks)} up blocks")

    @classmethod
    def from_pretrained(cls, model: str = DIFT_MODEL, *, device: Optional[str] = None, dtype: Optional[str] = "fp32",
                        **kwargs) -> "DiftFeaturizer":
        from ..models import DiffusionModel, ModelLoadError

        try:
            loaded = DiffusionModel.from_pretrained(model, device=device, dtype=dtype)
        except ModelLoadError as exc:
            raise DragError(dift_load_error(model, exc)) from None
        dift = cls(loaded, **kwargs)
        dift.revision = hub_revision(model)
        return dift

    def describe(self) -> dict:
        """What a report records of the features: model, its Hub revision (when known), timestep, block, draws."""
        return {"model": self.model.name, "revision": self.revision, "timestep": self.timestep,
                "block": self.block, "ensemble": self.ensemble}

    @torch.no_grad()
    def features(self, image, prompt: str = "", seed: int = 42) -> torch.Tensor:
        model = self.model
        generator = torch.Generator(device=model.device).manual_seed(seed)
        posterior = model.vae.encode(model.image_to_tensor(image)).latent_dist
        shape = (self.ensemble, *posterior.mean.shape[1:])
        draw = torch.randn(shape, generator=generator, device=model.device, dtype=posterior.mean.dtype)
        latents = (posterior.mean + posterior.std * draw) * model.vae.config.scaling_factor
        noise = torch.randn(shape, generator=generator, device=model.device, dtype=latents.dtype)
        t = torch.tensor(self.timestep, device=model.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        cond = model.encode_prompt(prompt).expand(self.ensemble, -1, -1)
        capture = FeatureCapture()

        def hook(module, inputs, output):
            capture(module, inputs, output)
            raise _StopForward

        handle = model.unet.up_blocks[self.block].register_forward_hook(hook)
        try:
            model.unet(noisy.to(model.dtype), t, cond)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return capture.pop().float().mean(0)
