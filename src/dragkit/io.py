"""Reading user input (images in any mode, masks, JSON, request JSON) with one-line errors, and writing output: paths
checked before any work, all the files of one command as one transaction, with the user's umask.

Benchmark samples (DragBench, Drag100) are read by :mod:`dragkit.datasets`."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import struct
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DragError
from .images import _scaled_to_8bit, mask_from_array, to_rgb  # the normalisers live in images.py; io re-exports them
from .types import DragRequest

T = TypeVar("T")
logger = logging.getLogger(__name__)

# The largest image dragkit reads (pixels): 4096×4096. Larger files are refused from their header, before they are
# decoded, with one line; ``dragkit edit --max-pixels N`` (``max_pixels=``) moves the limit up to PIL's own
# (``PIL.Image.MAX_IMAGE_PIXELS``, a process-wide setting dragkit leaves to the application: see _open_image).
DEFAULT_MAX_PIXELS = 4096 * 4096
_UMASK = threading.Lock()  # os.umask can only be read by setting it: one reader at a time
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, KeyError, IndexError, TypeError, struct.error,
                MemoryError, Image.DecompressionBombError)


def check_pixels(size: tuple[int, int], max_pixels: int, what: str) -> None:
    """A :class:`DragError` when ``size`` = (w, h) has more than ``max_pixels`` pixels."""
    w, h = size
    if w * h > max_pixels:
        raise DragError(f"{what} is {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,} (--max-pixels "
                        "N moves it)")


@contextmanager
def _open_image(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """The opened (not yet decoded) image at ``path``, refused with one line when it is larger than ``max_pixels``.

    ``Image.open`` reads only the header, so ``im.size`` is checked here before a pixel is decoded. PIL's own
    process-wide limit (``Image.MAX_IMAGE_PIXELS``) is left as the application set it — never switched off per file,
    so another thread opening an image meanwhile keeps its guard. With dragkit's default limit (16.8 M pixels, under
    PIL's 89 M) dragkit refuses first; a file beyond PIL's hard limit (twice its own) is refused with one line too."""
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:
        raise DragError(f"{path} has more pixels than the image library's own limit (PIL.Image.MAX_IMAGE_PIXELS = "
                        f"{Image.MAX_IMAGE_PIXELS:,}, refused above twice that); a program that means to read it "
                        "raises that limit") from None
    with im:
        check_pixels(im.size, max_pixels, f"{path}")
        yield im


def _read_image_file(path: str | Path, noun: str, what: str, read: Callable[[Image.Image], T],
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> T:
    """``read(image)`` of an image file (its first frame, EXIF orientation applied), or a :class:`DragError` naming
    the file (``noun`` not found / cannot be read as ``what`` / too large)."""
    path = Path(path)
    if not path.is_file():
        raise DragError(f"{noun} not found: {path}" if not path.exists() else f"{noun} {path} is not a file")
    try:
        with _open_image(path, max_pixels) as im:
            frames = getattr(im, "n_frames", 1)
            im.seek(0)
            im.load()
            if frames > 1:
                logger.warning("%s has %d frames: only the first is used", path, frames)
            return read(ImageOps.exif_transpose(im))
    except DragError:
        raise
    except UnidentifiedImageError:
        raise DragError(f"cannot read {path} as {what} (not an image format dragkit knows)") from None
    except _READ_ERRORS as exc:
        raise DragError(f"cannot read {path} as {what} ({type(exc).__name__})") from None


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """RGB image from a file, or a :class:`DragError` naming the file. EXIF orientation is applied (points are in the
    displayed orientation); an animation gives its first frame; other modes are converted by :func:`to_rgb`; files
    of more than ``max_pixels`` pixels are refused before decoding."""
    return _read_image_file(path, "image", "an image", lambda im: to_rgb(im, str(path)), max_pixels)


def load_mask(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Editable-region mask from an image file: H×W uint8, 1 where the pixel is nonzero — alpha decides when the file
    has transparent pixels (:func:`mask_from_array`); EXIF orientation applied as for the image."""
    def band(im: Image.Image) -> np.ndarray:
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
            return mask_from_array(np.asarray(im.convert("RGBA")))
        scaled = _scaled_to_8bit(im)
        return mask_from_array(np.asarray(scaled if scaled is not None else im.convert("L")))

    return _read_image_file(path, "mask", "a mask image", band, max_pixels)


def load_json(path: str | Path, noun: str = "") -> Any:
    """The JSON value of a file, or a :class:`DragError` naming it (``noun``: what the file is, for the message)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DragError(f"{noun + ' ' if noun else ''}not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DragError(f"{path}: not valid JSON ({exc.__class__.__name__})") from None
    except OSError as exc:
        raise DragError(f"cannot read {path} ({exc.strerror or type(exc).__name__})") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def parse_drag(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """"HX,HY:TX,TY" → ((hx, hy), (tx, ty)); every coordinate a finite number."""
    try:
        handle, target = text.split(":")
        hx, hy = (float(v) for v in handle.split(","))
        tx, ty = (float(v) for v in target.split(","))
    except ValueError:
        raise DragError(f"--drag expects HX,HY:TX,TY (pixels), got {text!r}") from None
    if not all(np.isfinite((hx, hy, tx, ty))):
        raise DragError(f"--drag {text}: coordinates must be finite numbers")
    return (hx, hy), (tx, ty)


# --- request JSON ---------------------------------------------------------------------------------------------------

def mask_to_json(mask: np.ndarray) -> dict[str, Any]:
    """A mask inline in a request JSON: ``{"size": [w, h], "rle": [n0, n1, ...]}`` — run lengths of the row-major
    flattened 0/1 mask, alternating, starting with a run of 0s (possibly empty)."""
    flat = (np.asarray(mask) > 0).astype(np.int8).ravel()
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return {"size": [int(mask.shape[1]), int(mask.shape[0])], "rle": runs}


def mask_from_json(data: Any) -> np.ndarray:
    """The mask of :func:`mask_to_json`, or a :class:`DragError`."""
    try:
        (w, h), runs = data["size"], data["rle"]
        w, h, runs = _whole(w), _whole(h), [_whole(n) for n in runs]
    except (KeyError, TypeError, ValueError):
        raise DragError("request JSON: an inline mask is {\"size\": [w, h], \"rle\": [n0, n1, ...]}") from None
    if sum(runs) != w * h:
        raise DragError(f"request JSON: the inline mask's runs cover {sum(runs)} pixels, not {w}x{h}")
    values = np.arange(len(runs)) % 2
    return np.repeat(values, runs).astype(np.uint8).reshape(h, w)


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


def request_to_json(request: DragRequest, image_path: str, mask_path: Optional[str]) -> dict[str, Any]:
    """The ``request`` part of an edit record; a mask that has no file is written inline (:func:`mask_to_json`)."""
    mask: Any = mask_path
    if mask is None and request.mask is not None:
        mask = mask_to_json(request.mask)
    return {"image": image_path, "mask": mask, "prompt": request.prompt,
            "handles": [list(p) for p in request.handles], "targets": [list(p) for p in request.targets]}


def edit_record(request: DragRequest, image_path: str, mask_path: Optional[str], config: Any = None,
                result: Any = None) -> dict[str, Any]:
    """The JSON of an edit — ``{request, method, config, final_handles, trajectory, timings, steps[,
    skipped_steps]}`` — as written by
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
        data["steps"] = result.steps
        if result.skipped_steps:
            data["skipped_steps"] = result.skipped_steps
    return data


def _json_points(data: dict[str, Any], key: str) -> list:
    points = data.get(key, [])
    if not isinstance(points, list):
        raise DragError(f"request JSON: {key} must be a list of [x, y]")
    for p in points:
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise DragError(f"request JSON: {key} must be a list of [x, y], got {json.dumps(p)[:40]}")
    return points


def request_from_json(data: dict[str, Any], base_dir: str | Path = ".",
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[DragRequest, str, Optional[str]]:
    """A request from the JSON schema above; relative paths are resolved against ``base_dir``. The mask is a file
    path, an inline mask (:func:`mask_to_json`) or null."""
    if not isinstance(data, dict) or "image" not in data:
        raise DragError("request JSON needs at least 'image', 'handles' and 'targets'")
    if not isinstance(data["image"], str) or not data["image"]:
        raise DragError("request JSON: 'image' must be the image's file path (a string)")
    mask_value, prompt = data.get("mask"), data.get("prompt", "")
    if mask_value is not None and not isinstance(mask_value, (str, dict)):
        raise DragError("request JSON: 'mask' must be a file path, an inline mask or null")
    if prompt is not None and not isinstance(prompt, str):
        raise DragError("request JSON: 'prompt' must be a string")
    base = Path(base_dir)
    image_path = str(base / data["image"])
    mask_path = str(base / mask_value) if isinstance(mask_value, str) and mask_value else None
    handles, targets = _json_points(data, "handles"), _json_points(data, "targets")
    mask = mask_from_json(mask_value) if isinstance(mask_value, dict) else \
        load_mask(mask_path, max_pixels) if mask_path else None
    request = DragRequest(load_image(image_path, max_pixels), handles, targets, mask, prompt or "")
    return request, image_path, mask_path


def read_request_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[DragRequest, str,
                                                                                       Optional[str]]:
    """The request of a request JSON (or of an edit record: its ``request`` part), paths relative to the file."""
    path = Path(path)
    data = load_json(path, "request file")
    data = data.get("request", data) if isinstance(data, dict) else data
    return request_from_json(data, path.parent, max_pixels)


# --- output: checked before any work, written as one transaction ----------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(".")


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name the same file (the same normalised path, or the same existing file)."""
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(label: str, path: str | Path) -> None:
    """A :class:`DragError` unless a file can be written at ``path``: not a folder or another non-regular file, its
    folder exists or can be created (no file in the way), and is writable (probed by creating a file)."""
    p = Path(path)
    if p.is_dir():
        raise DragError(f"{label} {path} is a folder; give a file name")
    if p.exists() and not p.is_file():
        raise DragError(f"{label} {path} exists and is not a regular file")
    where = p.parent if p.parent.exists() else _nearest_existing(p)
    if not where.is_dir():
        raise DragError(f"{label} {path}: {where} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dragkit-probe-", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DragError(f"{label} {path}: cannot write in {where} ({exc.strerror or type(exc).__name__})") from None


def check_outputs(outputs: dict[str, Optional[str | Path]], inputs: Optional[dict[str, Any]] = None,
                  overwrite: bool = False) -> None:
    """Every output (option → path; None = not asked for) writable (:func:`check_output`), none the same file as
    another, and none an input (kind → path) unless ``overwrite``: before any work, so that a bad path costs
    nothing."""
    given = [(label, p) for label, p in outputs.items() if p]
    for i, (label, path) in enumerate(given):
        check_output(label, path)
        for other, other_path in given[:i]:
            if same_path(path, other_path):
                raise DragError(f"{other} and {label} are the same file ({path}); give each its own path")
        for kind, source in (inputs or {}).items():
            if source and not overwrite and same_path(path, source):
                raise DragError(f"{label} {path} is the input {kind}; pass --overwrite to replace it")


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    """The mode a new file at ``path`` gets: the replaced file's, else 0666 less the umask (as ``open`` does)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing folders; returns those created (deepest last)."""
    missing = [d for d in reversed(path.parents) if not d.exists()]
    for d in missing:
        d.mkdir()
    return missing


@contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield one temporary path next to each of ``paths``; if the block succeeds they are all moved into place
    (modes as :func:`_file_mode`), otherwise none is, and temporaries, new files and new folders are removed — one
    transaction for all the files of one command."""
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    created: list[Path] = []
    placed: list[Path] = []
    try:
        for target in targets:
            created += _make_parents(target)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
            os.close(fd)
            temps.append(Path(tmp))
        yield temps
        for tmp, target in zip(temps, targets):
            os.chmod(tmp, _file_mode(target))
        for tmp, target in zip(temps, targets):
            new = not target.exists()
            os.replace(tmp, target)
            placed += [target] if new else []
    except BaseException:
        for path in [*temps, *placed]:
            path.unlink(missing_ok=True)
        for d in reversed(created):
            _remove_empty(d)
        raise
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds."""
    with atomic_paths(path) as (tmp,):
        yield tmp


def write_image(image: Image.Image, path: str | Path, target: Optional[str | Path] = None) -> None:
    """Save ``image`` at ``path`` in the format of ``target``'s extension (default: ``path``'s)."""
    fmt = Image.registered_extensions().get(Path(target or path).suffix.lower())
    if fmt is None:
        raise DragError(f"cannot tell the image format of {target or path} from its extension")
    image.save(path, format=fmt)


def write_json(data: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(data, indent=1))


def save_image_atomic(image: Image.Image, path: str | Path) -> None:
    if Image.registered_extensions().get(Path(path).suffix.lower()) is None:
        raise DragError(f"cannot tell the image format of {path} from its extension")
    with atomic_path(path) as tmp:
        write_image(image, tmp, path)


def save_json_atomic(data: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        write_json(data, tmp)


def image_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# The DragBench reader moved to :mod:`dragkit.datasets`; these names still resolve here for older importers.
