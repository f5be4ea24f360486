"""Per-browser-session editing state and its transitions (pure functions, no Gradio).

A :class:`Session` is what one browser tab is editing: the image (already downscaled to the app's size limit), the
editable mask, and the clicked points, which alternate handle, target, handle, target… in (x, y) pixels of the
image. Every transition returns a new ``Session`` (the old one is never mutated), so a Gradio ``gr.State`` holding it
can be shared by concurrent events without surprises.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from PIL import Image

from ..images import pixels_sha256
from ..types import DragError, DragRequest

PixelPoint = tuple[int, int]  # an (x, y) pixel of the session's image, whole numbers (a click snapped to the image); a
# request's points are :data:`dragkit.types.Point` (floats)

DEFAULT_UPLOAD_MAX_SIDE = 1024  # larger uploads are downscaled (aspect kept) so that one edit fits a consumer GPU


@dataclass(frozen=True)
class Session:
    image: Optional[Image.Image] = None  # RGB, what is edited (downscaled upload)
    fingerprint: str = ""  # of the *uploaded* pixels, to tell a new upload from a mask stroke on the same image
    mask: Optional[np.ndarray] = None  # H×W uint8 {0,1}, 1 = editable; None = nothing painted (all editable)
    points: tuple[PixelPoint, ...] = ()  # handle, target, handle, target, …
    notice: str = ""  # e.g. "downscaled from 4000×3000"
    original_size: Optional[tuple[int, int]] = None  # size of the upload before downscaling
    extra: dict = field(default_factory=dict)  # e.g. method/config restored by an import

    @property
    def handles(self) -> list[PixelPoint]:
        return list(self.points[0::2])

    @property
    def targets(self) -> list[PixelPoint]:
        return list(self.points[1::2])

    @property
    def expecting(self) -> str:
        """What the next click sets: "handle" or "target"."""
        return "target" if len(self.points) % 2 else "handle"


# An upload's (or a mask's) content hash, to tell a new upload from a mask stroke on the same image: dragkit's one
# image digest (alpha ignored)
fingerprint = pixels_sha256


def fit_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(w, h) scaled down (aspect kept) so that the longer side is at most ``longest``; unchanged if it fits."""
    w, h = size
    if max(w, h) <= longest:
        return w, h
    s = longest / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def upload_image(background: Image.Image | np.ndarray) -> Image.Image:
    """The RGB image of an editor's background (grey, RGB or RGBA array); a transparent upload is shown, and
    edited, on white."""
    arr = np.asarray(background)
    if arr.ndim == 2:
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if arr.shape[2] == 4:
        rgba = Image.fromarray(arr.astype(np.uint8), "RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return Image.fromarray(arr[..., :3].astype(np.uint8))


def brush_radius(size: tuple[int, int]) -> int:
    """The input editor's brush radius, in image pixels, for an image of ``size``: 1/32 of the shorter side (a 64-px
    image gets 2 px, a 512-px one 16 px), so one stroke marks a part of the image, not most of it."""
    return max(1, round(min(size) / 32))


def set_image(session: Session, image: Image.Image, upload_max_side: int = DEFAULT_UPLOAD_MAX_SIDE) -> Session:
    """A new upload: keep it whole (never cropped), downscale if too large, forget mask and points."""
    fp = fingerprint(image)
    image = image.convert("RGB")
    original = image.size
    size = fit_size(image.size, upload_max_side)
    notice = ""
    if size != image.size:
        notice = (f"The image is {image.size[0]}×{image.size[1]}; it was downscaled to {size[0]}×{size[1]} "
                  f"(longest side at most {upload_max_side} px) and the result has that size.")
        image = image.resize(size, Image.LANCZOS)
    return Session(image=image, fingerprint=fp, notice=notice, original_size=original if notice else None)


def mask_from_layers(layers: list[np.ndarray], size: tuple[int, int]) -> Optional[np.ndarray]:
    """Editable mask (H×W uint8 {0,1}) from brush layers (RGBA arrays; painted = alpha > 0), resized (nearest) to
    ``size`` = (w, h). None when nothing is painted."""
    painted = None
    for layer in layers:
        if layer is None:
            continue
        arr = np.asarray(layer)
        alpha = arr[..., 3] if arr.ndim == 3 and arr.shape[2] == 4 else (arr.max(axis=-1) if arr.ndim == 3 else arr)
        hit = alpha > 0
        painted = hit if painted is None or painted.shape != hit.shape else (painted | hit)
    if painted is None or not painted.any():
        return None
    m = Image.fromarray(painted.astype(np.uint8) * 255)
    if m.size != tuple(size):
        m = m.resize(tuple(size), Image.NEAREST)
    return (np.asarray(m) > 0).astype(np.uint8)


def set_mask(session: Session, mask: Optional[np.ndarray]) -> Session:
    if session.image is None:
        return session
    if mask is not None:
        mask = (np.asarray(mask) > 0).astype(np.uint8)
        if mask.shape != (session.image.size[1], session.image.size[0]):
            raise DragError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                            f"{session.image.size[0]}x{session.image.size[1]}")
        if not mask.any():
            mask = None
    return dataclasses.replace(session, mask=mask)


def same_mask(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> bool:
    """Whether two session masks (None = nothing painted) are equal."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


def click_to_pixel(index: tuple[float, float], scale: int, size: tuple[int, int]) -> PixelPoint:
    """Pixel of the image under a click at ``index`` = (x, y) on a view upscaled by the integer ``scale``."""
    w, h = size
    x, y = (int(v) // scale for v in index)
    return min(max(x, 0), w - 1), min(max(y, 0), h - 1)


def add_point(session: Session, point: PixelPoint) -> Session:
    if session.image is None:
        raise DragError("upload an image first")
    w, h = session.image.size
    x, y = int(point[0]), int(point[1])
    if not (0 <= x < w and 0 <= y < h):
        raise DragError(f"point ({x}, {y}) is outside the {w}x{h} image")
    return dataclasses.replace(session, points=session.points + ((x, y),))


def undo_point(session: Session) -> Session:
    return dataclasses.replace(session, points=session.points[:-1])


def clear_points(session: Session) -> Session:
    return dataclasses.replace(session, points=())


def mask_warnings(session: Session) -> list[str]:
    """Points lying outside the painted region (they cannot move / be reached while the rest is held fixed): the
    library's :func:`dragkit.checks.mask_notices`, as the command line and the API get them."""
    if session.mask is None:
        return []
    from ..checks import mask_notices

    return mask_notices(session.mask, session.handles, session.targets, generated=True)


def build_request(session: Session, prompt: str = "") -> DragRequest:
    """The :class:`DragRequest` for this session, or a :class:`DragError` that says what is missing."""
    if session.image is None:
        raise DragError("upload an image first")
    if not session.points:
        raise DragError("no points: click a handle point on the image, then its target")
    if len(session.points) % 2:
        n = len(session.points) // 2 + 1
        raise DragError(f"handle {n} has no target: click where it should move, or undo it")
    return DragRequest(session.image, session.handles, session.targets, session.mask, prompt or "")


def from_request(request: DragRequest, upload_max_side: int = DEFAULT_UPLOAD_MAX_SIDE,
                 extra: Optional[dict] = None) -> Session:
    """A session replaying ``request`` (downscaled like an upload; points and mask follow the image)."""
    session = set_image(Session(), request.image, upload_max_side)
    sx = session.image.size[0] / request.image.size[0]
    sy = session.image.size[1] / request.image.size[1]
    w, h = session.image.size
    points: list[PixelPoint] = []
    for hp, tp in zip(request.handles, request.targets):
        for x, y in (hp, tp):
            points.append((min(max(int(round(x * sx)), 0), w - 1), min(max(int(round(y * sy)), 0), h - 1)))
    mask = None
    if request.mask is not None:
        m = Image.fromarray((np.asarray(request.mask) > 0).astype(np.uint8) * 255)
        mask = (np.asarray(m.resize((w, h), Image.NEAREST)) > 0).astype(np.uint8) if m.size != (w, h) else \
            (np.asarray(m) > 0).astype(np.uint8)
    session = dataclasses.replace(session, points=tuple(points), extra=dict(extra or {}))
    # The editor shows what we set, so later change events must recognise this image as "the same upload".
    session = dataclasses.replace(session, fingerprint=fingerprint(session.image))
    return set_mask(session, mask)
