"""Checks of an edit's inputs against the loaded model, before any work (diffusers' ``check_inputs`` habit), and of
its intermediate results (a NaN/Inf stops the edit with one line naming the stage).

Model-independent checks live with the data: config fields (finite, in range) in :func:`dragkit.config.validate`,
points / mask / degenerate pairs in :class:`dragkit.types.DragRequest`, files and output paths in :mod:`dragkit.io`.
What depends on *this* model is here: decoder blocks that exist, a step count its scheduler has, an image large
enough for its UNet, a mask that covers at least one latent cell, a device that exists.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence

import torch

from .features import supervision_size
from .stages import working_size
from .types import DragError, ProgressCallback, ProgressEvent, Stage, stage_label

logger = logging.getLogger(__name__)

# What a non-finite loss at each stage most likely means.
HINTS = {Stage.LORA: "lower lora_lr?", Stage.OPTIMIZATION: "lower latent_lr?"}


def check_edit(model, request, config, generation=None) -> None:
    """Everything about (request, config) that depends on the loaded model: a :class:`DragError` if it cannot run;
    then the :func:`edit_notices` of what may go wrong unnoticed, each logged once as a warning (every front end
    shows them: the command line prints warnings, the web app shows the same list in its status)."""
    check_steps(model, config.num_inference_steps)
    check_blocks(model.unet, config)
    work = working_size(request.size, model.vae_scale_factor, config.max_side)
    check_image_size(model, request.size, work)
    grid = supervision_size((work[1], work[0]), config.supervision_scale)
    if min(grid) < 1:
        raise DragError(f"supervision_scale={config.supervision_scale:g} leaves no feature grid for the "
                        f"{request.size[0]}x{request.size[1]} image")
    if request.mask is not None:
        check_mask_cells(request.mask, grid, (work[1] // model.vae_scale_factor, work[0] // model.vae_scale_factor))
    for notice in edit_notices(model, request, config, generation):
        logger.warning("%s", notice)


NO_MASK_NOTICE = ("no mask: the whole image may change (backgrounds and textures drift too); paint the region that "
                  "may move — a mask image, white (or opaque) = may change: `dragkit edit --mask FILE`, "
                  "DragRequest(mask=...), or the web app's brush")


def edit_notices(model, request, config, generation=None) -> list[str]:
    """What may spoil an edit without stopping it, as one-line notices (empty when all is well): no mask on a real
    photo, handles or targets outside the editable region (:func:`mask_notices`), and a working image smaller than
    the input (:func:`size_notice`; a ``max_side`` left at None is the model family's)."""
    if getattr(config, "max_side", None) is None and hasattr(model, "family"):  # not resolved yet (the web app's form)
        from .family import resolve

        config = resolve(config, model.family, model.default_size)
    notices = mask_notices(request.mask, request.handles, request.targets, generated=generation is not None)
    size = size_notice(request.size, model.vae_scale_factor, getattr(config, "max_side", None))
    return notices + ([size] if size else [])


def mask_notices(mask, handles, targets, generated: bool = False) -> list[str]:
    """No ``mask`` (H×W, nonzero = editable) on a real (not ``generated``) image; each handle or target, (x, y)
    pixels, outside the editable region (a handle there cannot move, a target there cannot be reached); when every
    point is outside, the likely cause (an inverted mask: black-on-white)."""
    if mask is None:
        return [] if generated else [NO_MASK_NOTICE]
    h, w = mask.shape[:2]
    out, points = [], 0
    for kind, pts in (("handle", handles), ("target", targets)):
        for i, (x, y) in enumerate(pts):
            points += 1
            if not mask[min(max(int(round(y)), 0), h - 1), min(max(int(round(x)), 0), w - 1)]:
                what = "it cannot move" if kind == "handle" else "it cannot be reached"
                out.append(f"{kind} {i + 1} ({x:g}, {y:g}) lies outside the editable region of the mask: {what}")
    if out and len(out) == points > 1:
        out.append("every point lies outside the editable region: is the mask inverted? (white or opaque = may "
                   "change)")
    return out


def size_notice(size: tuple[int, int], factor: int, max_side) -> str:
    """A notice when the working image is smaller than the input (its longer side above ``max_side``): the sizes and
    how to change it; "" otherwise."""
    work = working_size(size, factor, max_side)
    if work == working_size(size, factor):
        return ""
    return (f"the {size[0]}x{size[1]} image is edited at {work[0]}x{work[1]} (max_side={max_side}) and scaled back; "
            f"for more detail, raise it: --set max_side=N (API: config max_side; web app: Advanced parameters)")


def check_generation(model, config) -> None:
    """A generation's settings against the loaded model: its scheduler's steps, and a canvas its UNet can run (a
    width / height left at None is the model family's default canvas)."""
    from .family import resolve

    config = resolve(config, model.family, model.default_size)
    check_steps(model, config.num_inference_steps)
    f = model.vae_scale_factor
    if config.width % f == 0 and config.height % f == 0:  # other sizes: the generation's own one-line error
        check_image_size(model, (config.width, config.height), (config.width, config.height))


def check_steps(model, steps: int) -> None:
    train = int(dict(model.scheduler_config).get("num_train_timesteps", 1000))
    if steps > train:
        raise DragError(f"num_inference_steps={steps}: this model's scheduler has {train} timesteps; use at most "
                        f"{train}")


def check_blocks(unet, config) -> None:
    """``feature_block`` and (when reference attention is on) ``reference_attention_blocks`` name decoder blocks of
    this UNet, the latter blocks with self-attention (None = the model family's, filled in later)."""
    n = len(unet.up_blocks)
    block = getattr(config, "feature_block", None)
    if block is not None and not 0 <= block < n:
        raise DragError(f"feature_block={block}: this model's UNet has decoder blocks 0-{n - 1}")
    blocks = getattr(config, "reference_attention_blocks", None)
    if not getattr(config, "reference_attention", False) or blocks is None:
        return
    with_attention = attention_blocks(unet)
    listed = ", ".join(map(str, with_attention)) or "none"
    if not blocks:
        raise DragError(f"reference_attention_blocks is empty: name decoder blocks with self-attention ({listed}) "
                        "or set reference_attention=false")
    for b in blocks:
        if b not in with_attention:
            where = "has no self-attention" if 0 <= b < n else f"does not exist (decoder blocks 0-{n - 1})"
            raise DragError(f"reference_attention_blocks: decoder block {b} {where}; blocks with self-attention: "
                            f"{listed}")


def attention_blocks(unet) -> list[int]:
    """The decoder blocks of ``unet`` that hold self-attention layers (those reference attention can control)."""
    from .reference_attention import controlled_layer_names

    return [b for b in range(len(unet.up_blocks)) if controlled_layer_names(unet, [b])]


def check_image_size(model, size: tuple[int, int], work: tuple[int, int]) -> None:
    """At least one latent cell (the VAE factor) per side, and a working size whose coarsest UNet level still has
    more than one value per normalisation group (GroupNorm fails on a single value)."""
    f = model.vae_scale_factor
    w, h = size
    if min(w, h) < f:
        raise DragError(f"the image is {w}x{h}: too small for this model (each side needs at least {f} px, one "
                        "latent cell)")
    latent = (work[1] // f, work[0] // f)
    if not _norms_fit(model.unet, latent):
        side = next((s for s in range(2, 65) if _norms_fit(model.unet, (s, s))), 64) * f
        raise DragError(f"the image is {w}x{h}: too small for this model's UNet (its coarsest level would hold one "
                        f"value per normalisation group); use at least {side}x{side} px")


def _levels(blocks, hw: tuple[int, int]) -> list[tuple[Any, tuple[int, int]]]:
    """(block, the (h, w) it runs at) for a sequence of down blocks starting at ``hw`` (stride-2, padded)."""
    out = []
    for block in blocks:
        out.append((block, hw))
        if getattr(block, "downsamplers", None):
            hw = (-(-hw[0] // 2), -(-hw[1] // 2))
    return out


def _norms_fit(unet, latent_hw: tuple[int, int]) -> bool:
    """Every GroupNorm of the UNet's blocks sees more than one value per group at ``latent_hw``."""
    down = _levels(unet.down_blocks, latent_hw)
    sizes = [hw for _, hw in down]
    levels = down + [(unet.mid_block, sizes[-1])] + list(zip(unet.up_blocks, reversed(sizes)))
    levels.append((getattr(unet, "conv_norm_out", None), latent_hw))
    for block, (h, w) in levels:
        if block is None:
            continue
        for m in block.modules():
            if isinstance(m, torch.nn.GroupNorm) and (m.num_channels // m.num_groups) * h * w < 2:
                return False
    return True


def check_mask_cells(mask, grid_hw: tuple[int, int], latent_hw: tuple[int, int]) -> None:
    """A painted mask must cover at least one latent cell once mapped as the edit maps it (nearest, via the feature
    grid); otherwise the edit would silently treat the whole image as editable."""
    from .points import mask_to_grid

    cells = torch.nn.functional.interpolate(mask_to_grid(mask, grid_hw), size=latent_hw, mode="nearest")
    if not bool(cells.any()):
        raise DragError(f"the mask is too small: it covers no cell of the {latent_hw[1]}x{latent_hw[0]} latent grid "
                        "at this image size; paint a larger region")


def check_finite(x: torch.Tensor, stage: str, hint: str = "") -> torch.Tensor:
    """``x`` if every value is finite; otherwise a one-line :class:`DragError` naming ``stage`` (and ``hint``)."""
    if not bool(torch.isfinite(x).all()):
        raise DragError(f"the {stage} produced NaN/Inf values{'; ' + hint if hint else ''}")
    return x


def guard_progress(callback: Optional[ProgressCallback]) -> ProgressCallback:
    """``callback`` preceded by a check of each event's loss: a NaN/Inf loss (identity LoRA, latent optimisation)
    stops the edit at once with one line naming the stage and the likely cause."""
    def guarded(event: ProgressEvent) -> None:
        if event.loss is not None and not math.isfinite(event.loss):
            name = stage_label(event.stage)
            hint = HINTS.get(event.stage, "")
            raise DragError(f"the {name} produced NaN/Inf values (loss at step {event.step})"
                            + (f"; {hint}" if hint else ""))
        if callback is not None:
            callback(event)

    return guarded


def available_devices() -> list[str]:
    """The devices torch can use here, e.g. ["cpu", "cuda:0", "cuda:1"]."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(name: Optional[str], available: Optional[Sequence[str]] = None) -> None:
    """A one-line :class:`DragError` naming what is available when ``--device name`` does not exist here (None =
    the best available: always fine). ``available`` defaults to :func:`available_devices`."""
    if not name:
        return
    available = list(available) if available is not None else available_devices()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DragError(f"--device {name}: not a device name; available here: {', '.join(available)}") from None
    index = 0 if device.index is None else device.index
    wanted = device.type if device.type in ("cpu", "mps") else f"{device.type}:{index}"
    if wanted not in available:
        raise DragError(f"--device {name}: not available on this machine; available here: {', '.join(available)}")
