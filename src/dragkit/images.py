"""Images and masks as dragkit works with them, from PIL images and arrays in any mode (no files: reading them is
:mod:`dragkit.io`): :func:`to_rgb` (every image mode to 8-bit RGB, on purpose), :func:`mask_from_array` (any mask
array to H×W {0, 1}) and :func:`pixels_sha256`, the one content hash of an image's pixels.

The lowest layer of the request types: :mod:`dragkit.types` and :mod:`dragkit.io` both import it, it imports
neither."""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Optional

import numpy as np
from PIL import Image

from .errors import DragError

logger = logging.getLogger("dragkit.io")  # the notices' logger name since they were written: filters keep working


def pixels_sha256(image: Image.Image | np.ndarray) -> str:
    """The content hash of an image's pixels, used wherever dragkit asks "the same picture?" (prepared images and
    their cached pieces, the web app's upload check, the benchmark's source-feature cache, generation records).

    sha256, in hex, of the RGB pixels' bytes (uint8, row-major) followed by ``str(shape)``; a PIL image is converted
    to RGB first (alpha dropped: the pixels dragkit edits), an array is hashed as it is (an H×W×4 array without its
    alpha). The formula is that of generation records' ``image_sha256`` since their first version, so records written
    before stay verifiable — change it only with a new record version."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[..., :3]
    arr = np.ascontiguousarray(arr)
    return hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()


def _scaled_to_8bit(im: Image.Image) -> Optional[Image.Image]:
    """A high-bit-depth single-channel image (16-bit, 32-bit integer, float) scaled — not clipped — to 8-bit "L";
    None for other modes."""
    if not (im.mode.startswith("I") or im.mode == "F"):
        return None
    arr = np.asarray(im).astype(np.float64)
    top = float(np.nanmax(arr)) if arr.size else 0.0
    if not np.isfinite(arr).all() or arr.min(initial=0) < 0:
        raise DragError(f"a {im.mode} image with negative or non-finite values: its brightness range is unknown")
    if im.mode.startswith("I;16") or (im.mode == "I" and top > 255):
        if top > 65535:
            raise DragError("a 32-bit integer image beyond the 16-bit range: its brightness range is unknown")
        arr = arr / 257.0
    elif im.mode == "F" and top <= 1.0:
        arr = arr * 255.0
    elif top > 255:
        raise DragError("a floating-point image beyond [0, 255]: its brightness range is unknown")
    return Image.fromarray(np.round(arr).astype(np.uint8), "L")


def to_rgb(im: Image.Image, name: str = "the image") -> Image.Image:
    """``im`` as 8-bit RGB, every mode handled on purpose: transparency composited over white, 16-bit / 32-bit /
    float scaled to 8 bits, palette expanded, CMYK converted (no colour management); a notice is logged for each
    conversion that changes what the user sees (``name`` says which image)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:
            logger.warning("%s has transparent pixels: they are composited over white", name)
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        scaled = _scaled_to_8bit(im)
    except DragError as exc:
        raise DragError(f"{name}: {exc}") from None
    if scaled is not None:
        logger.warning("%s is a %s image: scaled to 8 bits per channel", name, _MODE_NAMES.get(im.mode, im.mode))
        return scaled.convert("RGB")
    if im.mode == "CMYK":
        logger.warning("%s is CMYK: converted to RGB without colour management", name)
    return im.convert("RGB")


_MODE_NAMES = {"I;16": "16-bit", "I;16L": "16-bit", "I;16B": "16-bit", "I;16N": "16-bit", "I": "32-bit integer",
               "F": "floating-point"}


def mask_from_array(mask: Any) -> np.ndarray:
    """An editable-region mask as H×W uint8 {0, 1} (1 = may change) from an array: H×W (nonzero = editable); H×W×1;
    H×W×2 (grey + alpha) or H×W×4 (RGBA): the alpha channel when it varies (a brush layer: painted = opaque), else
    the colour; H×W×3: any channel nonzero."""
    m = np.asarray(mask)
    if m.dtype.kind not in "biuf":
        raise DragError(f"the mask must be a numeric array, not {m.dtype}")
    if m.ndim == 3 and m.shape[2] in (2, 4) and m.size:
        alpha = m[..., -1]
        m = alpha if alpha.min() != alpha.max() else m[..., :-1]
    if m.ndim == 3 and m.shape[2] in (1, 3):
        m = (m > 0).any(axis=2)
    if m.ndim != 2:
        raise DragError(f"the mask must be H×W (or H×W×1/2/3/4 channels), got shape {tuple(np.shape(mask))}")
    return (m > 0).astype(np.uint8)
