"""Reading user input (images, masks, request JSON, benchmark samples) with one-line errors, and atomic writes."""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .types import DragError, DragRequest


def load_image(path: str | Path) -> Image.Image:
    """RGB image from a file (EXIF orientation applied), or a :class:`DragError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DragError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DragError(f"cannot read {path} as an image ({type(exc).__name__})") from None


def load_mask(path: str | Path) -> np.ndarray:
    """Editable-region mask from an image file: H×W uint8, 1 where the pixel is nonzero (alpha used if present)."""
    path = Path(path)
    if not path.is_file():
        raise DragError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            band = im.getchannel("A") if im.mode in ("RGBA", "LA") else im.convert("L")
            return (np.asarray(band) > 0).astype(np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DragError(f"cannot read {path} as a mask image ({type(exc).__name__})") from None


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
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DragError(f"request file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DragError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    data = data.get("request", data) if isinstance(data, dict) else data
    return request_from_json(data, path.parent)


# --- restricted pickle (DragBench meta_data.pkl) ----------------------------------------------------------------------

_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
                  "bytearray", "bool", "slice", "range"}
_SAFE_NUMPY = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Admits numpy arrays/dtypes/scalars and plain builtin containers; any other global is refused."""

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) in _SAFE_NUMPY:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and builtins are allowed")


def safe_pickle_load(path: str | Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh).load()
    except FileNotFoundError:
        raise DragError(f"not found: {path}") from None
    except pickle.UnpicklingError as exc:
        raise DragError(f"{path}: {exc}") from None
    except Exception as exc:
        raise DragError(f"{path}: not a readable pickle ({type(exc).__name__})") from None


def pairs_from_alternating(points: Any, source: str) -> tuple[list, list]:
    """[h, t, h, t, …] → (handles, targets); an odd count is an error naming ``source``."""
    pts = [tuple(map(float, p)) for p in points]
    if len(pts) % 2:
        raise DragError(f"{source}: odd number of points ({len(pts)}); points alternate handle, target")
    return pts[0::2], pts[1::2]


def read_dragbench_sample(sample_dir: str | Path) -> DragRequest:
    """A DragBench sample folder: original_image.png + meta_data.pkl {prompt, points [[x,y]…], mask (1 = editable)}."""
    sample_dir = Path(sample_dir)
    meta = safe_pickle_load(sample_dir / "meta_data.pkl")
    if not isinstance(meta, dict) or "points" not in meta:
        raise DragError(f"{sample_dir}/meta_data.pkl: expected a dict with 'points'")
    handles, targets = pairs_from_alternating(meta["points"], str(sample_dir))
    mask = meta.get("mask")
    mask = None if mask is None or not np.any(np.asarray(mask)) else (np.asarray(mask) > 0).astype(np.uint8)
    return DragRequest(load_image(sample_dir / "original_image.png"), handles, targets, mask,
                       str(meta.get("prompt", "")))


# --- atomic output ----------------------------------------------------------------------------------------------------

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
