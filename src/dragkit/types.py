"""Public request / result / progress types.

Everything public speaks **(x, y) pixels of the input image** (origin at the top-left pixel). The conversion to the
feature grid's (row, col) happens in exactly one place: :mod:`dragkit.points`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
from PIL import Image

from .errors import DragError  # defined in errors.py; ``dragkit.types.DragError`` stays importable
from .images import mask_from_array, to_rgb

Point = tuple[float, float]
logger = logging.getLogger(__name__)


class Stage(str, Enum):
    """The stages of an edit (and of a generation): one vocabulary for the editor's ``timings`` and progress events,
    the CLI's progress bars, the web app's status, the benchmarks and the checks. A ``Stage`` is its string
    (``Stage.LORA == "lora"``, also as a dict key and in JSON), so ``ProgressEvent.stage`` compares equal to the plain
    names it always had; :attr:`label` is the one human name."""

    LORA = "lora"
    INVERSION = "inversion"
    OPTIMIZATION = "optimization"
    DENOISING = "denoising"
    GENERATION = "generation"
    TOTAL = "total"

    @property
    def label(self) -> str:
        return STAGE_LABELS[self]

    @property
    def short(self) -> str:
        """The label as a table column or progress bar says it."""
        return STAGE_SHORT[self]

    def __str__(self) -> str:  # the plain name in f-strings and format() on every Python version
        return self.value

    __format__ = str.__format__
    __hash__ = str.__hash__  # a key equal to its string in any dict (Enum hashes its member name otherwise)


STAGE_LABELS = {Stage.LORA: "identity LoRA", Stage.INVERSION: "DDIM inversion",
                Stage.OPTIMIZATION: "drag (latent optimisation)", Stage.DENOISING: "denoising",
                Stage.GENERATION: "generation", Stage.TOTAL: "total"}
STAGE_SHORT = {Stage.LORA: "LoRA", Stage.INVERSION: "inversion", Stage.OPTIMIZATION: "optimisation",
               Stage.DENOISING: "denoising", Stage.GENERATION: "generation", Stage.TOTAL: "total"}
EDIT_STAGES = (Stage.LORA, Stage.INVERSION, Stage.OPTIMIZATION, Stage.DENOISING)  # an edit's, in order


def stage_label(stage: str) -> str:
    """The human name of a stage (a :class:`Stage` or its string); an unknown name as it is."""
    try:
        return Stage(stage).label
    except ValueError:
        return str(stage)


class StageObserver(Protocol):
    """Told when the editor enters and leaves a stage (:meth:`DragEditor.observe`): the per-stage clock, memory and
    call counts of a benchmark hang on these. ``stage_exited`` gets the stage's wall seconds (the same figure as
    ``DragResult.timings``). ``Stage.TOTAL`` encloses an edit's stages."""

    def stage_entered(self, stage: Stage) -> None: ...

    def stage_exited(self, stage: Stage, seconds: float) -> None: ...


class EditCancelled(RuntimeError):
    """Raised from a progress callback to stop an edit; the editor lets it propagate unchanged."""


@dataclass(frozen=True)
class DragRequest:
    """What the user asked for.

    Attributes:
        image: the input photo (any size; converted to RGB by :func:`dragkit.images.to_rgb`: transparency over white,
            16-bit scaled to 8).
        handles: handle points as (x, y) pixels of ``image``.
        targets: target points, one per handle, as (x, y) pixels of ``image``.
        mask: optional editable region, H×W (nonzero = may change), or H×W×C (RGBA / grey+alpha: the alpha channel
            when it varies; see :func:`dragkit.images.mask_from_array`); stored as H×W uint8 {0, 1}. ``None`` — or an
            all-zero mask, with a notice — = the whole image is editable.
        prompt: text prompt used for LoRA, inversion, optimisation and denoising (no CFG on real images).
    """

    image: Image.Image
    handles: Sequence[Point]
    targets: Sequence[Point]
    mask: Optional[np.ndarray] = None
    prompt: str = ""

    def __post_init__(self):
        if not isinstance(self.image, Image.Image):
            raise DragError(f"the request's image must be a PIL image, not {type(self.image).__name__}")
        if not isinstance(self.prompt, str):
            raise DragError(f"the prompt must be a string, not {type(self.prompt).__name__}")
        object.__setattr__(self, "image", to_rgb(self.image))
        object.__setattr__(self, "handles", _points(self.handles, "handle"))
        object.__setattr__(self, "targets", _points(self.targets, "target"))
        if self.mask is not None:
            mask = mask_from_array(self.mask)
            w, h = self.image.size
            if mask.shape != (h, w):  # before the empty-mask notice: a wrong-size mask is refused, empty or not
                raise DragError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}")
            if mask.size and not mask.any():
                logger.warning("the mask is empty (all zero): the whole image is editable, as DragBench reads it")
                mask = None
            object.__setattr__(self, "mask", mask)
        self.validate()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the input image."""
        return self.image.size

    def validate(self) -> None:
        """Points inside the image, one target per handle, a mask of the image's size; degenerate pairs decided:
        a repeated pair or one handle sent to two targets is refused, as is a request where every handle is already
        at its target; a pair whose handle is its target (among others that move) is kept as an anchor, with a
        notice."""
        w, h = self.size
        if len(self.handles) == 0:
            raise DragError("no drag given: pass at least one handle/target pair")
        if len(self.handles) != len(self.targets):
            raise DragError(f"{len(self.handles)} handles but {len(self.targets)} targets: every handle needs a target")
        for kind, pts in (("handle", self.handles), ("target", self.targets)):
            for x, y in pts:
                if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                    raise DragError(f"{kind} point ({x:g}, {y:g}) is outside the {w}x{h} image")
        if self.mask is not None and self.mask.shape != (h, w):
            raise DragError(f"mask is {self.mask.shape[1]}x{self.mask.shape[0]} but the image is {w}x{h}")
        _check_pairs(list(zip(self.handles, self.targets)))


def _points(points: Sequence[Point], kind: str) -> tuple[Point, ...]:
    """Points as a tuple of (x, y) floats, or a :class:`DragError` naming the first that is not an (x, y) pair."""
    if isinstance(points, (str, bytes)):
        raise DragError(f"{kind}s must be a list of (x, y) points")
    try:
        items = list(points)
    except TypeError:
        raise DragError(f"{kind}s must be a list of (x, y) points") from None
    out = []
    for i, p in enumerate(items, 1):
        try:
            if isinstance(p, (str, bytes)):
                raise TypeError
            x, y = p
            out.append((float(x), float(y)))
        except (TypeError, ValueError):
            raise DragError(f"{kind} {i} must be an (x, y) point, got {str(p)[:40]}") from None
    return tuple(out)


def _check_pairs(pairs: list[tuple[Point, Point]]) -> None:
    if all(h == t for h, t in pairs):
        raise DragError("nothing to drag: every handle is already at its target")
    seen: dict[Point, tuple[int, Point]] = {}
    for i, (h, t) in enumerate(pairs, 1):
        if h in seen:
            j, other = seen[h]
            if other == t:
                raise DragError(f"drag {i} repeats drag {j}: remove one")
            raise DragError(f"drags {j} and {i} start at the same handle ({h[0]:g}, {h[1]:g}) but go to different "
                            "targets")
        seen[h] = (i, t)
    anchors = [str(i) for i, (h, t) in enumerate(pairs, 1) if h == t]
    if anchors:
        logger.warning("drag %s: the handle is its target, so that point is held in place (an anchor)",
                       ", ".join(anchors))


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
        skipped: optimiser steps of this stage skipped so far because fp16 gradients overflowed (they are not
            counted in ``step``; always 0 in bf16 and fp32).
    """

    stage: str
    step: int
    total: int
    handles: Optional[list[Point]] = None
    loss: Optional[float] = None
    timestep: Optional[int] = None
    cached: bool = False
    skipped: int = 0


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
        inversion_cached: whether z_{t*} came from the ``prepared`` image of an earlier edit.
        skipped_steps: per stage ("lora", "optimization"), optimiser steps the fp16 gradient scaler skipped on
            overflow and that were therefore taken again (not counted in ``steps``); empty in bf16/fp32.
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
    inversion_cached: bool = False
    skipped_steps: dict[str, int] = field(default_factory=dict)
