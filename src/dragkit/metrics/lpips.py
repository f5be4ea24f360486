"""Image Fidelity = 1 − LPIPS (Zhang et al. 2018, v0.1, AlexNet), as DragBench's ``run_eval_similarity.py``: both
images in [−1, 1], bilinearly resized to 224×224 (no antialias), ``lpips.LPIPS(net='alex')``.

No torchvision: :class:`AlexNetFeatures` declares the convolutional trunk with the same module indices as
``torchvision.models.alexnet().features`` so its published weights load by name (``features.0.weight`` …), and the
five learned 1×1 "lin" layers load from lpips' ``weights/v0.1/alex.pth`` (``lin0.model.1.weight`` …). Both files are
fetched once into the torch hub cache (``$TORCH_HOME/hub/checkpoints``), read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..hub import offline  # HF_HUB_OFFLINE: no network at all
from ..io import atomic_path
from ..types import DragError

logger = logging.getLogger(__name__)

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
LPIPS_ALEX_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"
CHANNELS = (64, 192, 384, 256, 256)
SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))  # relu1 … relu5, as lpips.pretrained_networks
SHIFT = (-0.030, -0.088, -0.188)  # lpips ScalingLayer
SCALE = (0.458, 0.448, 0.450)


class AlexNetFeatures(nn.Module):
    """``torchvision.models.alexnet().features`` (module indices 0–12 kept), returning the five ReLU outputs."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=False),
            nn.MaxPool2d(3, 2),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for start, stop in SLICES:
            for i in range(start, stop):
                x = self.features[i](x)
            outs.append(x)
        return outs


class _Lin(nn.Module):
    """lpips ``NetLinLayer``: Dropout (inactive in eval) + 1×1 conv to one channel, no bias (``model.1.weight``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet features. ``forward(a, b)`` on N×3×H×W in [−1, 1] → N distances."""

    def __init__(self):
        super().__init__()
        self.net = AlexNetFeatures()
        for i, c in enumerate(CHANNELS):
            setattr(self, f"lin{i}", _Lin(c))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def load_weights(self, alexnet_state: dict, lin_state: dict) -> "LPIPS":
        trunk = {k: v for k, v in alexnet_state.items() if k.startswith("features.")}
        self.net.load_state_dict(trunk, strict=True)
        missing, unexpected = self.load_state_dict(lin_state, strict=False)
        lin_missing = [k for k in missing if k.startswith("lin")]
        if lin_missing or unexpected:
            raise DragError(f"LPIPS lin weights do not match (missing {lin_missing[:2]}, unexpected {unexpected[:2]})")
        return self

    @staticmethod
    def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa = self.net((a - self.shift) / self.scale)
        fb = self.net((b - self.shift) / self.scale)
        total = 0
        for i, (x, y) in enumerate(zip(fa, fb)):
            diff = (self._unit(x) - self._unit(y)) ** 2
            total = total + getattr(self, f"lin{i}").model(diff).mean(dim=(2, 3))
        return total.flatten()


def weights_dir() -> Path:
    """Where the weight files are looked for and downloaded to: the torch hub checkpoint cache."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _fetch(url: str, directory: Path, timeout: float = 60) -> Path:
    path = directory / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    hint = (f"LPIPS weights missing: put {path.name} (from {url}) into {directory}"
            " — needed: alexnet-owt-7be5be79.pth and lpips v0.1 alex.pth")
    if offline():
        raise DragError(hint + " (offline)")
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(path) as tmp:
            tmp.write_bytes(response.read())
    except OSError as exc:
        raise DragError(f"{hint} (download failed: {type(exc).__name__})") from None
    return path


def _load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DragError(f"cannot read weights {path} ({type(exc).__name__}); delete it to download again") from None


def load_lpips(directory: Optional[str | Path] = None, device: Optional[str | torch.device] = None) -> LPIPS:
    """LPIPS-Alex with the published weights (downloaded once into ``directory``, default :func:`weights_dir`)."""
    directory = Path(directory) if directory else weights_dir()
    alex, lin = _fetch(ALEXNET_URL, directory), _fetch(LPIPS_ALEX_URL, directory)
    return LPIPS().load_weights(_load(alex), _load(lin)).to(device or "cpu")


def to_lpips_input(image, size: int = 224, device=None) -> torch.Tensor:
    """PIL image → 1×3×size×size in [−1, 1]: x = u8/127.5 − 1, then bilinear resize (align_corners=False)."""
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    return F.interpolate(x.to(device), size=(size, size), mode="bilinear", align_corners=False)


def image_fidelity(lpips: LPIPS, original, edited) -> float:
    """1 − LPIPS(original, edited) at 224×224."""
    device = lpips.shift.device
    return 1.0 - float(lpips(to_lpips_input(original, device=device), to_lpips_input(edited, device=device))[0])


BACKGROUND_FILL = (128, 128, 128)  # what the editable region is painted with, in both images (≈ 0 in [−1, 1])


def background_fidelity(lpips: LPIPS, original, edited, editable) -> Optional[float]:
    """Background-only fidelity (after ReD Bench): 1 − LPIPS(original, edited) with the editable region (H×W,
    nonzero = editable, the sample's mask) painted :data:`BACKGROUND_FILL` in **both** images, so only what lies
    outside it is compared. 1 exactly when nothing outside the region changed; equal to :func:`image_fidelity` for an
    empty region; None when the whole image is editable (no background)."""
    keep = np.asarray(editable) == 0
    a, b = np.array(original.convert("RGB")), np.array(edited.convert("RGB"))
    if keep.shape != a.shape[:2] or a.shape != b.shape:
        raise DragError(f"if-bg: mask {keep.shape[::-1]}, original {a.shape[1::-1]}, edited {b.shape[1::-1]} differ")
    if not keep.any():
        return None
    a[~keep] = BACKGROUND_FILL
    b[~keep] = BACKGROUND_FILL
    from PIL import Image

    return image_fidelity(lpips, Image.fromarray(a), Image.fromarray(b))
