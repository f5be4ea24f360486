"""A benchmark's run folder records what it holds in ``RUN_DIR/run.json``, so that re-running a command resumes it and
another setting into the same folder is refused before any work. Shared by the dataset runner
(:mod:`dragkit.benchmark.runner`) and the shapes benchmark (:mod:`dragkit.shapes.bench`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from ..io import save_json_atomic
from ..types import DragError

RUN_META = "run.json"


def check_run_dir(out_dir: str | Path, meta: dict, *, merge: Iterable[str] = (), open_keys: Iterable[str] = (),
                  unchecked: Iterable[str] = ()) -> dict:
    """What ``run.json`` holds with this run added: ``meta`` itself in a new folder; otherwise the recorded settings,
    which must agree with ``meta`` on every key, or a one-line :class:`DragError` naming those that differ.

    - ``merge``: keys whose value is a dict of entries (the shapes benchmark's variants): an entry recorded under the
      same name must agree; new entries are added.
    - ``open_keys``: a recorded None is not fixed yet (the new value is taken) and a new None keeps the recorded value
      (the shapes benchmark's model, which identity-only runs do not use).
    - ``unchecked``: recorded, never compared; the first run's value stays (where the dataset lies: a resumed run may
      read the same samples from another path).

    Nothing is written (:func:`write_run_meta` does, once the run starts).
    """
    path = Path(out_dir) / RUN_META
    if not path.exists():
        return dict(meta)
    recorded = json.loads(path.read_text())
    merged, differ = dict(recorded), []
    merge, open_keys, unchecked = set(merge), set(open_keys), set(unchecked)
    for key, value in meta.items():
        old = recorded.get(key)
        if key in unchecked:
            merged.setdefault(key, value)
        elif key in merge:
            entries = dict(old or {})
            differ += [f"{name!r} in {key}" for name, entry in value.items() if entries.get(name, entry) != entry]
            merged[key] = {**entries, **value}
        elif key in open_keys and (old is None or value is None):
            merged[key] = old if value is None else value
        elif old != value:
            differ.append(key)
    if differ:
        raise DragError(f"{out_dir} holds a run with different {', '.join(differ)}; use another --out")
    return merged


def write_run_meta(out_dir: str | Path, meta: dict) -> None:
    """Record ``meta`` (from :func:`check_run_dir`) as the folder's ``run.json``."""
    save_json_atomic(meta, Path(out_dir) / RUN_META)
