"""Reading user input (images, masks, JSON, request JSON) with one-line errors, and atomic writes.

Benchmark samples (DragBench, Drag100) are read by :mod:`dragkit.datasets`."""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .types import DragError, DragRequest

T = TypeVar("T")


def _read_image_file(path: str | Path, noun: str, what: str, read: Callable[[Image.Image], T]) -> T:
    """``read(image)`` of an image file, or a :class:`DragError` naming the file (``noun`` not found / cannot be read
    as ``what``)."""
    path = Path(path)
    if not path.is_file():
        raise DragError(f"{noun} not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return read(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DragError(f"cannot read {path} as {what} ({type(exc).__name__})") from None


def load_image(path: str | Path) -> Image.Image:
    """RGB image from a file (EXIF orientation applied), or a :class:`DragError` naming the file."""
    return _read_image_file(path, "image", "an image", lambda im: ImageOps.exif_transpose(im).convert("RGB"))


def _mask_band(im: Image.Image) -> np.ndarray:
    band = im.getchannel("A") if im.mode in ("RGBA", "LA") else im.convert("L")
    return (np.asarray(band) > 0).astype(np.uint8)


def load_mask(path: str | Path) -> np.ndarray:
    """Editable-region mask from an image file: H×W uint8, 1 where the pixel is nonzero (alpha used if present)."""
    return _read_image_file(path, "mask", "a mask image", _mask_band)


def load_json(path: str | Path, noun: str = "") -> Any:
    """The JSON value of a file, or a :class:`DragError` naming it (``noun``: what the file is, for the message)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DragError(f"{noun + ' ' if noun else ''}not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DragError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def parse_drag(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """"HX,HY:TX,TY" → ((hx, hy), (tx, ty))."""
    try:
        handle, target = text.split(":")
        hx, hy = (float(v) for v in handle.split(","))
        tx, ty = (float(v) for v in target.split(","))
    except ValueError:
        raise DragError(f"--drag expects HX,HY:TX,TY (pixels), got {text!r}") from None
    return (hx, hy), (tx, ty)


# --- request JSON ---------------------------------------------------------------------------------------------------

def request_to_json(request: DragRequest, image_path: str, mask_path: Optional[str]) -> dict[str, Any]:
    return {"image": image_path, "mask": mask_path, "prompt": request.prompt,
            "handles": [list(p) for p in request.handles], "targets": [list(p) for p in request.targets]}


def edit_record(request: DragRequest, image_path: str, mask_path: Optional[str], config: Any = None,
                result: Any = None) -> dict[str, Any]:
    """The JSON of an edit — ``{request, method, config, final_handles, trajectory, timings}`` — as written by
    ``dragkit edit --json``, the web app's export and the benchmark runner, and read back by ``--request``."""
    from .config import config_to_dict

    data: dict[str, Any] = {"request": request_to_json(request, image_path, mask_path)}
    if config is not None:
        data["method"] = config.method
        data["config"] = config_to_dict(config)
    if result is not None:
        data["final_handles"] = [list(p) for p in result.final_handles]
        data["trajectory"] = [[list(p) for p in step] for step in result.trajectory]
        data["timings"] = result.timings
    return data


def request_from_json(data: dict[str, Any], base_dir: str | Path = ".") -> tuple[DragRequest, str, Optional[str]]:
    """A request from the JSON schema above; relative paths are resolved against ``base_dir``."""
    if not isinstance(data, dict) or "image" not in data:
        raise DragError("request JSON needs at least 'image', 'handles' and 'targets'")
    base = Path(base_dir)
    image_path = str(base / data["image"])
    mask_path = str(base / data["mask"]) if data.get("mask") else None
    try:
        handles = [tuple(map(float, p)) for p in data.get("handles", [])]
        targets = [tuple(map(float, p)) for p in data.get("targets", [])]
    except (TypeError, ValueError):
        raise DragError("request JSON: handles and targets must be lists of [x, y]") from None
    request = DragRequest(load_image(image_path), handles, targets,
                          load_mask(mask_path) if mask_path else None, str(data.get("prompt", "")))
    return request, image_path, mask_path


def read_request_file(path: str | Path) -> tuple[DragRequest, str, Optional[str]]:
    path = Path(path)
    data = load_json(path, "request file")
    data = data.get("request", data) if isinstance(data, dict) else data
    return request_from_json(data, path.parent)


# --- atomic output ---------------------------------------------------------------------------------------------------

@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_image_atomic(image: Image.Image, path: str | Path) -> None:
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise DragError(f"cannot tell the image format of {path} from its extension")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)


def save_json_atomic(data: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def image_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# The DragBench reader moved to :mod:`dragkit.datasets`; these names still resolve here for older importers.
