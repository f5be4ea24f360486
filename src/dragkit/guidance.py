"""Classifier-free guidance (Ho & Salimans, 2021) for generated images, and how DragDiffusion supervises with it
(paper appendix C; reference behaviour spec §1.2).

With guidance scale s > 1 every UNet evaluation runs the latent twice, with the negative (or null) prompt and with
the prompt, and

    ε = ε_u + s·(ε_c − ε_u)                                    (the usual CFG combination, used for every step)
    F = cat([(1 − c)·F_u, c·F_c], channels),  c = s / (2s − 1)  (the features motion supervision and tracking read)

The feature weighting is the official code's ("strategy 3"): at s = 7.5, c ≈ 0.536, so the two halves weigh
≈ 0.464 : 0.536; at s = 1 the unconditional half gets weight 0. The features of each branch are resized to the
supervision grid before they are combined (the two operations commute). With s ≤ 1 there is one pass and F, ε are
the conditional ones, as for real images.

Batch layout of a guided evaluation of latents z (batch n): ``cat([z, z])`` with embeddings ``[uncond]·n + [cond]·n``,
so a reference-attention pair [source, edited] becomes [uncond_src, uncond_edit, cond_src, cond_edit] — consecutive
(source, edited) pairs, as :mod:`dragkit.reference_attention` expects (spec §0.7, "batch of four").

SDXL conditions the UNet on more than the hidden states: the pooled embedding of its second text encoder and six
size ids (original size, crop top-left, target size), passed as ``added_cond_kwargs``. :class:`TextConditioning`
carries them beside the embeddings and lays them out in the same batch order, so every UNet call site
(:meth:`TextConditioning.unet_kwargs`) is the same for both families; :meth:`dragkit.models.DiffusionModel.conditioning`
is the one place that builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


def cfg_weight(scale: float) -> float:
    """c = s / (2s − 1): the weight of the conditional features (1 − c for the unconditional ones)."""
    return scale / (2.0 * scale - 1.0)


def cfg_features(f_uncond: torch.Tensor, f_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """cat([(1 − c)·F_u, c·F_c]) along channels (dim 1), c = s/(2s − 1): B×C×h×w twice → B×2C×h×w."""
    c = cfg_weight(scale)
    return torch.cat([(1.0 - c) * f_uncond, c * f_cond], dim=1)


def cfg_output(out_uncond: torch.Tensor, out_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """ε_u + s·(ε_c − ε_u)."""
    return out_uncond + scale * (out_cond - out_uncond)


@dataclass(frozen=True)
class TextConditioning:
    """The prompt embedding(s) a UNet evaluation is conditioned on; guided when ``uncond`` is given and s > 1."""

    cond: torch.Tensor  # 1×L×d, the prompt
    uncond: Optional[torch.Tensor] = None  # 1×L×d, the negative prompt ("" = null prompt); None = no CFG
    scale: float = 1.0  # s: guidance scale (reference default 7.5 for generation; real images 1.0)
    pooled: Optional[torch.Tensor] = None  # SDXL: 1×P pooled embedding of the prompt (None for SD-1.5)
    uncond_pooled: Optional[torch.Tensor] = None  # SDXL: 1×P pooled embedding of the negative prompt
    time_ids: Optional[torch.Tensor] = None  # SDXL: 1×6 (original h, w, crop top, left, target h, w)

    @property
    def guided(self) -> bool:
        return self.uncond is not None and self.scale > 1.0

    def latents(self, z: torch.Tensor) -> torch.Tensor:
        """The UNet's input batch for latents ``z``: ``cat([z, z])`` when guided, else ``z``."""
        return torch.cat([z, z]) if self.guided else z

    def embeddings(self, n: int) -> torch.Tensor:
        """Encoder hidden states for ``n`` latents: [uncond]·n + [cond]·n when guided, else [cond]·n."""
        cond = self.cond.expand(n, -1, -1)
        return torch.cat([self.uncond.expand(n, -1, -1), cond]) if self.guided else cond

    def unet_kwargs(self, n: int) -> dict:
        """Keyword arguments of a UNet call on :meth:`latents` of ``n`` latents: the hidden states and, for SDXL, the
        pooled embeddings and size ids as ``added_cond_kwargs`` in the same batch order."""
        kwargs = {"encoder_hidden_states": self.embeddings(n)}
        if self.time_ids is not None:
            pooled = self.pooled.expand(n, -1)
            if self.guided:
                pooled = torch.cat([self.uncond_pooled.expand(n, -1), pooled])
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled,
                                           "time_ids": self.time_ids.expand(pooled.shape[0], -1)}
        return kwargs

    def output(self, raw: torch.Tensor) -> torch.Tensor:
        """The UNet's raw output of :meth:`latents` → one prediction per latent (CFG-combined when guided)."""
        return cfg_output(*raw.chunk(2), self.scale) if self.guided else raw

    @property
    def feature_weights(self) -> Optional[tuple[float, float]]:
        """(1 − c, c) of the CFG feature concatenation when guided, else None (one branch)."""
        return (1.0 - cfg_weight(self.scale), cfg_weight(self.scale)) if self.guided else None
