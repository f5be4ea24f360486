"""Public request / result / progress types.

Everything public speaks **(x, y) pixels of the input image** (origin at the top-left pixel). The conversion to the
feature grid's (row, col) happens in exactly one place: :mod:`dragkit.points`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

Point = tuple[float, float]


class DragError(ValueError):
    """A user-facing problem with the input (bad points, mask, file...). Its message is one readable line."""


class EditCancelled(RuntimeError):
    """Raised from a progress callback to stop an edit; the editor lets it propagate unchanged."""


@dataclass(frozen=True)
class DragRequest:
    """What the user asked for.

    Attributes:
        image: the input photo (any size; converted to RGB).
        handles: handle points as (x, y) pixels of ``image``.
        targets: target points, one per handle, as (x, y) pixels of ``image``.
        mask: optional editable region, H×W (nonzero = may change). ``None`` = the whole image is editable.
        prompt: text prompt used for LoRA, inversion, optimisation and denoising (no CFG on real images).
    """

    image: Image.Image
    handles: Sequence[Point]
    targets: Sequence[Point]
    mask: Optional[np.ndarray] = None
    prompt: str = ""

    def __post_init__(self):
        object.__setattr__(self, "image", self.image.convert("RGB"))
        object.__setattr__(self, "handles", tuple((float(x), float(y)) for x, y in self.handles))
        object.__setattr__(self, "targets", tuple((float(x), float(y)) for x, y in self.targets))
        if self.mask is not None:
            object.__setattr__(self, "mask", np.asarray(self.mask))
        self.validate()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the input image."""
        return self.image.size

    def validate(self) -> None:
        w, h = self.size
        if len(self.handles) == 0:
            raise DragError("no drag given: pass at least one handle/target pair")
        if len(self.handles) != len(self.targets):
            raise DragError(f"{len(self.handles)} handles but {len(self.targets)} targets: every handle needs a target")
        for kind, pts in (("handle", self.handles), ("target", self.targets)):
            for x, y in pts:
                if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                    raise DragError(f"{kind} point ({x:g}, {y:g}) is outside the {w}x{h} image")
        if self.mask is not None:
            m = self.mask
            if m.ndim == 3:
                m = m[..., 0]
                object.__setattr__(self, "mask", m)
            if m.shape != (h, w):
                raise DragError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}")


@dataclass
class ProgressEvent:
    """One progress report, shared by the CLI's progress bars, the web UI and the benchmark runner.

    Attributes:
        stage: "lora", "inversion", "optimization", "denoising" (GoodDrag adds "drag" steps inside "optimization");
            "generation" for :meth:`DragEditor.generate`.
        step: 1-based step within the stage.
        total: upper bound of steps in the stage (optimisation may stop earlier).
        handles: current handle positions, (x, y) pixels of the input image (optimisation stage only).
        loss: current loss (LoRA and optimisation stages).
        timestep: current diffusion timestep, where meaningful.
        cached: the stage's result came from a cache instead of being computed (one "lora" event with
            step = total when the identity LoRA was reused).
    """

    stage: str
    step: int
    total: int
    handles: Optional[list[Point]] = None
    loss: Optional[float] = None
    timestep: Optional[int] = None
    cached: bool = False


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class DragResult:
    """What an edit returns.

    Attributes:
        image: the edited image, same size as the input.
        final_handles: where each handle ended, (x, y) pixels of the input image.
        trajectory: handle positions over the optimisation, one list of (x, y) per recorded step
            (entry 0 = the starting positions).
        timings: wall-clock seconds per stage ("lora", "inversion", "optimization", "denoising", "total").
        steps: number of latent-optimisation (Adam) steps taken.
        latent: the final latent before decoding (useful for tests and chaining).
        frames: an animation of the edit (decoded intermediate results with the handles drawn), when the method
            config asked for one (GoodDrag ``animation=True``); otherwise None.
        config: the method config the edit actually ran with (for a generated image: the generation's step count,
            no LoRA), as ``--json`` records it.
        lora_cached: whether the identity LoRA came from the editor's cache (False when trained or not used).
    """

    image: Image.Image
    final_handles: list[Point]
    trajectory: list[list[Point]]
    timings: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    latent: Optional[object] = None
    frames: Optional[list[Image.Image]] = None
    config: Optional[object] = None
    lora_cached: bool = False
