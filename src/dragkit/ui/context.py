"""What the web app's sessions share (:class:`AppContext`): the loaded editor, the methods' configs and parameters,
the folder for written files, the device lock, the cancel flags, the wanted preparations and live re-edits. No
Gradio; nothing per session or per run (each session's prepared image lives in its own ``gr.State``)."""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import GenerationConfig, default_config, method_names
from ..family import SD, resolve
from . import params as params_mod
from . import session as ss
from .job import CancelFlags, LiveEdits, Preparations

KEEP_RUN_DIRS = 64  # per-run folders (edit-, export-, import-, traj-) kept in the work folder


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@dataclass
class AppContext:
    """What every session shares: the loaded editor, the methods' start configs and parameters, the upload size
    limit, the folder for written files, the device lock (one edit, preparation or generation at a time on the model),
    the sessions' cancel flags, their wanted preparations (content key and cancel flag) and their wanted live
    re-edits."""

    editor: Any
    defaults: dict[str, Any]  # method → config shown at start
    params: dict[str, list[params_mod.Param]]  # method → its advanced parameters
    gen_params: dict[str, params_mod.Param]  # GenerationConfig field → parameter
    work: Path  # where exports, imports, edit files and trajectories are written
    upload_max_side: int = ss.DEFAULT_UPLOAD_MAX_SIDE
    device_lock: threading.Lock = field(default_factory=threading.Lock)
    cancel_flags: CancelFlags = field(default_factory=CancelFlags)
    preparations: Preparations = field(default_factory=Preparations)
    live_edits: LiveEdits = field(default_factory=LiveEdits)

    @classmethod
    def create(cls, editor: Any, defaults: Optional[dict[str, Any]] = None,
               upload_max_side: int = ss.DEFAULT_UPLOAD_MAX_SIDE, work_dir: Optional[str] = None) -> AppContext:
        """The context over ``editor``: ``defaults`` maps method → start config (paper defaults where missing), with
        the loaded model family's layer choices (SD-1.5 or SDXL) and the model's canvas size filled in. Without ``work_dir`` the
        files go to a new ``dragkit-ui-*`` folder in the temp dir, removed with the context (at the latest when the
        process exits)."""
        model = getattr(editor, "model", None)
        family, size = getattr(model, "family", SD), getattr(model, "default_size", 512)
        defaults = dict(defaults or {})
        for m in method_names():
            defaults[m] = resolve(defaults.get(m) or default_config(m), family, size)
        work = Path(work_dir or tempfile.mkdtemp(prefix="dragkit-ui-"))
        work.mkdir(parents=True, exist_ok=True)
        params = {m: params_mod.method_params(m, defaults[m], family, size) for m in method_names()}
        gen_params = {p.name: p for p in params_mod.method_params("generate", GenerationConfig(width=size, height=size),
                                                                    family)}
        ctx = cls(editor, defaults, params, gen_params, work, upload_max_side)
        if work_dir is None:
            ctx._cleanup = weakref.finalize(ctx, shutil.rmtree, str(work), True)
        return ctx

    def close(self) -> None:
        """Remove the work folder now (when the context made it)."""
        cleanup = getattr(self, "_cleanup", None)
        if cleanup is not None:
            cleanup()

    @property
    def can_prepare(self) -> bool:
        """Whether the editor prepares images (``prepare`` and ``edit(..., prepared=)``, on a loaded model)."""
        return callable(getattr(self.editor, "prepare", None)) and getattr(self.editor, "model", None) is not None

    @property
    def methods(self) -> list[str]:
        return list(self.params)

    def fresh_dir(self, prefix: str) -> Path:
        """A new folder under the work folder (one per export, import, edit…); only the newest
        :data:`KEEP_RUN_DIRS` are kept (Gradio serves its own copies of what a page shows)."""
        folders = sorted((d for d in self.work.iterdir() if d.is_dir()), key=_mtime)
        for old in folders[:max(0, len(folders) - KEEP_RUN_DIRS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.work))

    def config_for(self, method: str, values: list[Any]) -> Any:
        """``method``'s start config with its widgets' ``values`` applied (DragError if one is invalid)."""
        return params_mod.config_from_values(self.defaults[method], self.params[method], values)
