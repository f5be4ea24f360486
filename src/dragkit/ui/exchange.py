"""Export an edit (request JSON, DragBench-style sample) and import one back to replay it.

Export writes, into a fresh folder:

- ``request.json`` — the schema of ``dragkit edit --json`` (``request`` with image/mask paths relative to the JSON,
  ``method``, ``config`` and, after a run, ``final_handles``, ``trajectory``, ``timings``);
- ``edit.zip`` — that JSON with ``original_image.png``, ``mask.png`` (when painted) and ``edited.png`` (after a
  run): ``unzip edit.zip && dragkit edit --request request.json --out again.png`` replays it;
- ``dragbench_sample.zip`` — a DragBench-style sample: ``original_image.png`` and ``meta_data.pkl`` =
  ``{"prompt": str, "points": [[x, y], …] (handle, target, …), "mask": H×W numpy uint8 (1 = editable; all
  zeros = nothing painted)}`` (+ ``dragged_image.png`` after a run).

Import takes such a zip, or the files of such a folder uploaded together, or a lone JSON/pkl with its image.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from ..datasets import read_dragbench_sample
from ..io import edit_record, image_bytes, read_request_file, save_json_atomic
from ..types import DragError, DragRequest, DragResult

MAX_IMPORT_BYTES = 200 * 1024 * 1024  # refuse zips that would unpack to more than this


def edit_json(request: DragRequest, config: Any, result: Optional[DragResult] = None) -> dict:
    """The edit record (:func:`dragkit.io.edit_record`) with the file names used inside the exported zips."""
    return edit_record(request, "original_image.png", "mask.png" if request.mask is not None else None, config, result)


def dragbench_meta(request: DragRequest) -> dict:
    w, h = request.size
    points = []
    for hp, tp in zip(request.handles, request.targets):
        points += [[int(round(hp[0])), int(round(hp[1]))], [int(round(tp[0])), int(round(tp[1]))]]
    mask = np.zeros((h, w), np.uint8) if request.mask is None else (np.asarray(request.mask) > 0).astype(np.uint8)
    return {"prompt": request.prompt, "points": points, "mask": mask}


def export_edit(out_dir: str | Path, request: DragRequest, config: Any,
                result: Optional[DragResult] = None) -> list[Path]:
    """Write request.json, edit.zip and dragbench_sample.zip (and edited.png after a run) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"original_image.png": request.image}
    if request.mask is not None:
        files["mask.png"] = Image.fromarray((np.asarray(request.mask) > 0).astype(np.uint8) * 255)
    if result is not None:
        files["edited.png"] = result.image
    data = edit_json(request, config, result)
    save_json_atomic(data, out / "request.json")
    with zipfile.ZipFile(out / "edit.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("request.json", json.dumps(data, indent=1))
        for name, im in files.items():
            zf.writestr(name, image_bytes(im))
    with zipfile.ZipFile(out / "dragbench_sample.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("original_image.png", image_bytes(request.image))
        zf.writestr("meta_data.pkl", pickle.dumps(dragbench_meta(request), protocol=4))
        if result is not None:
            zf.writestr("dragged_image.png", image_bytes(result.image))
    written = [out / "request.json", out / "edit.zip", out / "dragbench_sample.zip"]
    if result is not None:
        result.image.save(out / "edited.png")
        written.insert(0, out / "edited.png")
    return written


def _unzip(path: Path, dest: Path) -> None:
    """Extract the files an import can use (images, JSON, pickles) flat into ``dest``; a zip that would unpack to
    more than :data:`MAX_IMPORT_BYTES`, holds more than :data:`MAX_IMPORT_FILES` files, compresses implausibly well
    or cannot be read is refused with one line. Paths inside the zip are never used (``../x`` becomes ``x``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and _importable(m.filename)]
            if len(members) > MAX_IMPORT_FILES:
                raise DragError(f"{path.name}: {len(members)} files; an edit has a handful (at most "
                                f"{MAX_IMPORT_FILES})")
            if sum(m.file_size for m in members) > MAX_IMPORT_BYTES:
                raise DragError(f"{path.name}: too large to import (more than {MAX_IMPORT_BYTES >> 20} MB unpacked)")
            for m in members:
                ratio = m.file_size // max(m.compress_size, 1)
                if ratio > MAX_RATIO and m.file_size > 1 << 20:
                    raise DragError(f"{path.name}: {_flat_name(m.filename)} compresses {ratio}-fold, not an exported "
                                    "edit (a zip bomb?)")
            for m in members:
                with zf.open(m) as src, open(dest / _flat_name(m.filename), "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError):
        raise DragError(f"{path.name}: not a valid zip file (or encrypted)") from None


IMPORT_SUFFIXES = (".json", ".pkl", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_IMPORT_FILES = 64  # files of an importable kind in one zip
MAX_RATIO = 200  # a larger compression ratio (of a file over 1 MB) is refused: PNG/JPEG/pickle do not compress so


def _flat_name(name: str) -> str:
    """The file name of a zip member, any folder dropped ("sample/x.png" and "../../x.png" → "x.png")."""
    return Path(name.replace("\\", "/")).name


def _importable(name: str) -> bool:
    flat = _flat_name(name)
    return bool(flat) and not flat.startswith(".") and Path(flat).suffix.lower() in IMPORT_SUFFIXES


def import_edit(paths: Sequence[str | Path], work_dir: str | Path) -> tuple[DragRequest, dict]:
    """Read an exported edit back: ``paths`` are uploaded files (a zip, or a sample folder's files).

    Returns the request and ``{"method": ..., "config": {...}}`` when the JSON carries them (else ``{}``).
    """
    paths = [Path(p) for p in paths if p]
    if not paths:
        raise DragError("choose a request JSON, a DragBench sample (zip or its files) or an exported edit.zip")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if p.suffix.lower() == ".zip":
            _unzip(p, work)
        else:
            shutil.copyfile(p, work / _upload_name(p))
    if (work / "meta_data.pkl").is_file():
        if not (work / "original_image.png").is_file():
            raise DragError("a DragBench sample needs original_image.png next to meta_data.pkl")
        return read_dragbench_sample(work), {}
    jsons = sorted(work.glob("*.json"))
    if jsons:
        data = _read_json(jsons[0])
        request_part = data.get("request", data) if isinstance(data, dict) else data
        for key in ("image", "mask"):  # an uploaded JSON may only name files uploaded with it
            name = request_part.get(key) if isinstance(request_part, dict) else None
            if name and not (work / str(name)).resolve().is_relative_to(work.resolve()):
                raise DragError(f"{jsons[0].name}: {key} must be a file uploaded with the JSON, not {name!r}")
            if name and not (work / str(name)).is_file():
                raise DragError(f"{jsons[0].name} refers to {name}: upload it together with the JSON "
                                "(or import the edit.zip)")
        request, _, _ = read_request_file(jsons[0])
        extra = {k: data[k] for k in ("method", "config") if isinstance(data, dict) and k in data}
        return request, extra
    raise DragError("nothing to import: expected meta_data.pkl + original_image.png, or a request JSON with its image")


def _upload_name(p: Path) -> str:
    """Gradio stores uploads under their original names; keep those (a request JSON refers to its images by name)."""
    return p.name


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DragError(f"{path.name}: not valid JSON") from None
