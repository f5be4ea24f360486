"""Animation of an edit: frames with the handles drawn, written as a GIF."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

from .types import DragError, Point

HANDLE, TARGET, ARROW = (230, 40, 40), (40, 90, 230), (255, 255, 255)


def draw_points(image: Image.Image, handles: Sequence[Point], targets: Sequence[Point]) -> Image.Image:
    """A copy of ``image`` with each handle (red), its target (blue) and an arrow between them; points are (x, y)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    radius = max(2, round(min(out.size) / 64))
    for (hx, hy), (tx, ty) in zip(handles, targets):
        draw.line([(hx, hy), (tx, ty)], fill=ARROW, width=max(1, radius // 2))
        for (x, y), colour in (((tx, ty), TARGET), ((hx, hy), HANDLE)):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    return out


def write_animation(frames: Sequence[Image.Image], path: str | Path, frame_ms: int = 250,
                    hold_ms: int = 1000) -> None:
    """Write ``frames`` at ``path`` as a looping GIF (first and last frames held for ``hold_ms``)."""
    if not frames:
        raise DragError("no animation frames were recorded")
    durations = [frame_ms] * len(frames)
    durations[0] = durations[-1] = hold_ms
    frames[0].save(path, format="GIF", save_all=True, append_images=list(frames[1:]), duration=durations, loop=0)
