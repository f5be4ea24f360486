"""UNet decoder features F(z_t), captured with a forward hook (never a copied UNet forward), and read on the
supervision grid without materialising it.

F is the block's output bilinearly resized to the supervision grid (half the image: 256² at 512² for SD-1.5, 512² at
1024² for SDXL — 640 channels, 0.7 GB in fp32 for SDXL, and as much again for its gradient). Motion supervision and
tracking read F at a few hundred points only, and a bilinear resize is, point by point, a bilinear sample of the
block's output. :class:`FeatureMap` therefore keeps the block's output and computes F where it is read —
:meth:`FeatureMap.at` gives exactly the values ``F.interpolate(..., mode="bilinear", align_corners=False)`` would hold
there — so no full-resolution map (or its gradient) exists; :meth:`FeatureMap.dense` builds it when a caller wants
it (tests, visualisation).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import torch
import torch.nn.functional as F


class FeaturesReady(Exception):
    """Raised by a :class:`FeatureCapture` asked to end the forward at its block (``stop = True``)."""


class FeatureCapture:
    """Holds the last output of the hooked block; read ``.value`` after a UNet forward. With ``stop`` set, the
    forward ends right there (:class:`FeaturesReady`): the layers after the block are not run, and a backward from
    the features starts at the block."""

    def __init__(self):
        self.value: torch.Tensor | None = None
        self.stop = False

    def __call__(self, module, inputs, output):
        self.value = output[0] if isinstance(output, tuple) else output
        if self.stop:
            raise FeaturesReady

    def pop(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("no features captured: was the UNet run inside capture_features()?")
        return value


@contextmanager
def capture_features(unet, block: int) -> Iterator[FeatureCapture]:
    """Capture the output of ``unet.up_blocks[block]`` (after its upsampler) while the context is open."""
    capture = FeatureCapture()
    handle = unet.up_blocks[block].register_forward_hook(capture)
    try:
        yield capture
    finally:
        handle.remove()


def supervision_size(image_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """(h, w) of the feature grid: (int(scale·H), int(scale·W)) of the working image, as the reference."""
    return int(scale * image_hw[0]), int(scale * image_hw[1])


def resize_features(features: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False, no antialias) to the supervision grid, computed in float32."""
    return F.interpolate(features.float(), size=size_hw, mode="bilinear", align_corners=False)


def _source_index(dst: torch.Tensor, in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For integer output positions ``dst`` of a bilinear resize in_size → out_size (align_corners=False): the two
    input indices and the weight of the second, as PyTorch computes them."""
    src = ((dst.to(torch.float32) + 0.5) * (in_size / out_size) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    return i0, (i0 + 1).clamp(max=in_size - 1), src - i0


@dataclass
class FeatureMap:
    """F on the supervision grid, read lazily: ``raw`` is the block's output (1×C×H×W; 2×C×H×W = [uncond, cond]
    when classifier-free guidance is on, combined as ``cat([w_u·F_u, w_c·F_c], channels)``, :mod:`dragkit.guidance`),
    ``grid_hw`` the grid it is resized to. Differentiable in ``raw``."""

    raw: torch.Tensor  # float32 (cast once here, not at every read)
    grid_hw: tuple[int, int]
    weights: Optional[tuple[float, float]] = None  # CFG (w_u, w_c); None: a single branch

    def __post_init__(self):
        self.raw = self.raw.float()

    @classmethod
    def of(cls, features: Union["FeatureMap", torch.Tensor]) -> "FeatureMap":
        """``features`` as a map: a dense 1×C×h×w tensor is its own grid."""
        return features if isinstance(features, FeatureMap) else cls(features, tuple(features.shape[-2:]))

    @property
    def device(self) -> torch.device:
        return self.raw.device

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, self.raw.shape[1] * self.raw.shape[0], *self.grid_hw)

    def detach(self) -> "FeatureMap":
        return FeatureMap(self.raw.detach(), self.grid_hw, self.weights)

    def at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """C×N: F at integer grid points (rows[k], cols[k]) (indices clamped to the grid)."""
        (h, w), (rh, rw) = self.grid_hw, self.raw.shape[-2:]
        rows, cols = rows.long().clamp(0, h - 1), cols.long().clamp(0, w - 1)
        x = self.raw
        if (rh, rw) == (h, w):
            values = x[:, :, rows, cols]
        else:
            r0, r1, fr = _source_index(rows, rh, h)
            c0, c1, fc = _source_index(cols, rw, w)
            values = (x[:, :, r0, c0] * ((1 - fr) * (1 - fc)) + x[:, :, r0, c1] * ((1 - fr) * fc)
                      + x[:, :, r1, c0] * (fr * (1 - fc)) + x[:, :, r1, c1] * (fr * fc))
        if self.weights is None:
            return values[0]
        return torch.cat([self.weights[0] * values[0], self.weights[1] * values[1]])

    def dense(self) -> torch.Tensor:
        """The whole map, 1×C×h×w (what :func:`resize_features` and the CFG combination give)."""
        x = resize_features(self.raw, self.grid_hw)
        return x if self.weights is None else torch.cat([self.weights[0] * x[:1], self.weights[1] * x[1:]], dim=1)
