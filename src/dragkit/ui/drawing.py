"""Pictures for the web app: the image with its editable region, numbered handle → target arrows, and the handle
trajectory as an animation. Pure PIL/numpy; points are (x, y) pixels of the image."""

from __future__ import annotations

import io
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HANDLE = (230, 40, 40)
TARGET = (40, 90, 230)
ARROW = (255, 255, 255)
MASK_TINT = (255, 215, 0)

MIN_VIEW_SIDE = 512  # small images are shown upscaled (integer factor) so points can be placed precisely


def view_scale(size: tuple[int, int], min_side: int = MIN_VIEW_SIDE) -> int:
    """Integer upscaling of the point-picking view: 1 for images at least ``min_side`` long."""
    return max(1, min_side // max(size))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _arrow(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], width: int, head: float):
    draw.line([a, b], fill=ARROW, width=width)
    ang = math.atan2(b[1] - a[1], b[0] - a[0])
    if math.hypot(b[0] - a[0], b[1] - a[1]) < head:
        return
    left = (b[0] - head * math.cos(ang - 0.45), b[1] - head * math.sin(ang - 0.45))
    right = (b[0] - head * math.cos(ang + 0.45), b[1] - head * math.sin(ang + 0.45))
    draw.polygon([b, left, right], fill=ARROW)


def render_view(image: Image.Image, points: Sequence[Sequence[float]] = (), mask: Optional[np.ndarray] = None,
                scale: Optional[int] = None, handles: Optional[Sequence[Sequence[float]]] = None) -> Image.Image:
    """The image upscaled by ``scale`` with the editable region tinted, red handles, blue targets, numbered arrows.

    ``points`` alternate handle, target (an unpaired last handle is drawn alone). ``handles``, when given, replaces
    the handle positions (the live positions during an edit) while the targets stay where they were clicked.
    """
    scale = scale or view_scale(image.size)
    base = image.convert("RGB")
    if mask is not None and np.any(mask):
        arr = np.asarray(base).astype(np.float32)
        m = (np.asarray(mask) > 0)[..., None]
        arr = np.where(m, 0.65 * arr + 0.35 * np.asarray(MASK_TINT, np.float32), 0.8 * arr)
        base = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if scale != 1:
        base = base.resize((base.size[0] * scale, base.size[1] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(base)
    radius = max(4, round(max(base.size) / 90))
    font = _font(max(10, 2 * radius + 2))

    def at(p):
        return ((p[0] + 0.5) * scale, (p[1] + 0.5) * scale)

    pts = [tuple(p) for p in points]
    starts = pts[0::2]
    if handles is not None:
        starts = [tuple(h) for h in handles][: len(starts)] + starts[len(handles):]
    ends = pts[1::2]
    for i, start in enumerate(starts):
        a = at(start)
        if i < len(ends):
            b = at(ends[i])
            _arrow(draw, a, b, max(2, radius // 2), 2.5 * radius)
            draw.ellipse([b[0] - radius, b[1] - radius, b[0] + radius, b[1] + radius], fill=TARGET, outline=ARROW)
        draw.ellipse([a[0] - radius, a[1] - radius, a[0] + radius, a[1] + radius], fill=HANDLE, outline=ARROW)
        draw.text((a[0] + radius + 1, a[1] - 3 * radius), str(i + 1), fill=ARROW, font=font,
                  stroke_width=2, stroke_fill=(0, 0, 0))
    return base


def trajectory_animation(image: Image.Image, points: Sequence[Sequence[float]],
                         trajectory: Sequence[Sequence[Sequence[float]]], frames: Optional[list] = None,
                         max_frames: int = 60, duration_ms: int = 120) -> Optional[bytes]:
    """An animated GIF of the handles moving along ``trajectory`` (one list of (x, y) per recorded step) over
    ``image`` (or over the per-step ``frames`` images when the method provides them). None if nothing moved."""
    if not trajectory or len(trajectory) < 2:
        return None
    idx = np.unique(np.linspace(0, len(trajectory) - 1, min(max_frames, len(trajectory))).round().astype(int))
    pictures = []
    for i in idx:
        bg = frames[i] if frames is not None and i < len(frames) else image
        pictures.append(render_view(bg, points, handles=trajectory[i]).convert("P", palette=Image.ADAPTIVE))
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)
    return buf.getvalue()
