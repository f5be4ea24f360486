"""Benchmark datasets in their published formats, read into the core's :class:`DragRequest`.

- **DragBench** (DragDiffusion): ``<root>/<category>/<sample>/original_image.png`` + ``meta_data.pkl``
  {prompt, points [[x, y], …] alternating handle/target, mask H×W 0/1 (1 = editable)}; the pickle is read with a
  restricted unpickler (numpy arrays and builtins only: a pickle that would run code is refused).
- **Drag100** (GoodDrag): ``<root>/<sample>/original.jpg``, ``mask.png`` (0/255, 255 = editable),
  ``points.json`` {"points": [[x, y], …]} alternating handle/target; no prompt (GoodDrag uses "").

A sample's id is its path relative to the dataset root (``animals/JH_2023-09-14-1820-16``, ``peacock_0``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
from PIL import Image

from .io import DEFAULT_MAX_PIXELS, load_image, load_json, load_mask
from .types import DragError, DragRequest


@dataclass(frozen=True)
class BenchSample:
    """One benchmark sample: its id (relative path), category (None when the dataset has none), the request, and the
    file the request's image came from."""

    sample_id: str
    category: Optional[str]
    request: DragRequest
    image_path: Path


# --- restricted pickle (DragBench meta_data.pkl) ---------------------------------------------------------------------

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


# --- the two readers -------------------------------------------------------------------------------------------------

def pairs_from_alternating(points: Any, source: str) -> tuple[list, list]:
    """[h, t, h, t, …] → (handles, targets); an odd count or a point that is not [x, y] is an error naming
    ``source``."""
    try:
        pts = [tuple(map(float, p)) for p in points]
    except (TypeError, ValueError):
        raise DragError(f"{source}: points must be [x, y] pairs") from None
    if len(pts) % 2:
        raise DragError(f"{source}: odd number of points ({len(pts)}); points alternate handle, target")
    return pts[0::2], pts[1::2]


def read_dragbench_sample(sample_dir: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DragRequest:
    """A DragBench sample folder: original_image.png + meta_data.pkl {prompt, points [[x,y]…], mask (1 = editable;
    all zeros = nothing painted = the whole image)}."""
    sample_dir = Path(sample_dir)
    meta = safe_pickle_load(sample_dir / "meta_data.pkl")
    if not isinstance(meta, dict) or "points" not in meta:
        raise DragError(f"{sample_dir}/meta_data.pkl: expected a dict with 'points'")
    handles, targets = pairs_from_alternating(meta["points"], str(sample_dir))
    mask = meta.get("mask")
    try:
        mask = None if mask is None or not np.any(np.asarray(mask)) else (np.asarray(mask) > 0).astype(np.uint8)
    except (TypeError, ValueError):
        raise DragError(f"{sample_dir}/meta_data.pkl: 'mask' must be an H×W array") from None
    prompt = meta.get("prompt", "")
    return DragRequest(load_image(sample_dir / "original_image.png", max_pixels), handles, targets, mask,
                       prompt if isinstance(prompt, str) else str(prompt))


def read_drag100_sample(sample_dir: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DragRequest:
    """A Drag100 sample folder: original.jpg + mask.png (0/255) + points.json {"points": [...]}; empty prompt."""
    sample_dir = Path(sample_dir)
    points_file = sample_dir / "points.json"
    data = load_json(points_file)
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise DragError(f"{points_file}: expected {{\"points\": [[x, y], ...]}}")
    handles, targets = pairs_from_alternating(data["points"], str(points_file))
    mask_file = sample_dir / "mask.png"
    mask = load_mask(mask_file, max_pixels) if mask_file.exists() else None
    return DragRequest(load_image(sample_dir / "original.jpg", max_pixels), handles, targets, mask, "")


# --- datasets --------------------------------------------------------------------------------------------------------

def _dragbench_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/*/meta_data.pkl"))


def _drag100_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/points.json"))


DATASETS: dict[str, tuple[Callable[[Path], list[Path]], Callable[[Path], DragRequest], str, bool]] = {
    # name: (list sample folders, read one, image file name, has categories)
    "dragbench": (_dragbench_dirs, read_dragbench_sample, "original_image.png", True),
    "drag100": (_drag100_dirs, read_drag100_sample, "original.jpg", False),
}


def sample_ids(name: str, root: str | Path) -> list[str]:
    """Sorted ids of the samples of dataset ``name`` under ``root`` (cheap: reads no image)."""
    lister = _dataset(name)[0]
    root = Path(root)
    if not root.is_dir():
        raise DragError(f"{name} data folder not found: {root}")
    ids = [d.relative_to(root).as_posix() for d in lister(root)]
    if not ids:
        raise DragError(f"no {name} samples under {root}")
    return ids


def read_sample(name: str, root: str | Path, sample_id: str) -> BenchSample:
    """One sample of dataset ``name`` by id."""
    _, reader, image_name, has_categories = _dataset(name)
    sample_dir = Path(root) / sample_id
    category = sample_id.split("/")[0] if has_categories else None
    return BenchSample(sample_id, category, reader(sample_dir), sample_dir / image_name)


def iter_samples(name: str, root: str | Path) -> Iterator[BenchSample]:
    """Every sample of dataset ``name`` under ``root``, in id order."""
    for sid in sample_ids(name, root):
        yield read_sample(name, root, sid)


def _dataset(name: str):
    if name not in DATASETS:
        raise DragError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


def resize_request(request: DragRequest, width: int) -> DragRequest:
    """The request at ``width`` pixels wide (aspect kept): image bilinear, mask nearest, points scaled and clamped."""
    w, h = request.size
    if width == w:
        return request
    if width < 8:
        raise DragError(f"--resize {width}: too small")
    height = max(1, round(h * width / w))
    sx, sy = width / w, height / h

    def scale(points):
        return [(min(max(x * sx, 0), width - 1), min(max(y * sy, 0), height - 1)) for x, y in points]

    mask = None
    if request.mask is not None:
        mask = np.asarray(Image.fromarray(request.mask.astype(np.uint8)).resize((width, height), Image.NEAREST))
    return DragRequest(request.image.resize((width, height), Image.BILINEAR), scale(request.handles),
                       scale(request.targets), mask, request.prompt)
