"""What the web app's sessions share (:class:`AppContext`): the loaded editor, the methods' configs and parameters,
the folder for written files, the device lock and the cancel flags. No Gradio; nothing per session or per run."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import GenerationConfig, default_config, method_names
from ..family import SD, resolve
from . import params as params_mod
from . import session as ss
from .job import CancelFlags


@dataclass
class AppContext:
    """What every session shares: the loaded editor, the methods' start configs and parameters, the upload size
    limit, the folder for written files, the device lock (one edit or generation at a time on the model) and the
    sessions' cancel flags."""

    editor: Any
    defaults: dict[str, Any]  # method → config shown at start
    params: dict[str, list[params_mod.Param]]  # method → its advanced parameters
    gen_params: dict[str, params_mod.Param]  # GenerationConfig field → parameter
    work: Path  # where exports, imports, edit files and trajectories are written
    max_side: int = ss.DEFAULT_MAX_SIDE
    device_lock: threading.Lock = field(default_factory=threading.Lock)
    cancel_flags: CancelFlags = field(default_factory=CancelFlags)

    @classmethod
    def create(cls, editor: Any, defaults: Optional[dict[str, Any]] = None, max_side: int = ss.DEFAULT_MAX_SIDE,
               work_dir: Optional[str] = None) -> AppContext:
        """The context over ``editor``: ``defaults`` maps method → start config (paper defaults where missing), with
        the loaded model family's layer choices and canvas size (SD-1.5 or SDXL) filled in."""
        family = getattr(getattr(editor, "model", None), "family", SD)
        defaults = dict(defaults or {})
        for m in method_names():
            defaults[m] = resolve(defaults.get(m) or default_config(m), family)
        work = Path(work_dir or tempfile.mkdtemp(prefix="dragkit-ui-"))
        work.mkdir(parents=True, exist_ok=True)
        params = {m: params_mod.method_params(m, defaults[m], family) for m in method_names()}
        size = family.default_size
        gen_params = {p.name: p for p in params_mod.method_params("generate", GenerationConfig(width=size, height=size),
                                                                    family)}
        return cls(editor, defaults, params, gen_params, work, max_side)

    @property
    def methods(self) -> list[str]:
        return list(self.params)

    def fresh_dir(self, prefix: str) -> Path:
        """A new folder under the work folder (one per export, import, edit…)."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.work))

    def config_for(self, method: str, values: list[Any]) -> Any:
        """``method``'s start config with its widgets' ``values`` applied (DragError if one is invalid)."""
        return params_mod.config_from_values(self.defaults[method], self.params[method], values)
