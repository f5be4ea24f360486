"""UNet decoder features F(z_t), captured with a forward hook (never a copied UNet forward)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F


class FeatureCapture:
    """Holds the last output of the hooked block; read ``.value`` after a UNet forward."""

    def __init__(self):
        self.value: torch.Tensor | None = None

    def __call__(self, module, inputs, output):
        self.value = output[0] if isinstance(output, tuple) else output

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
