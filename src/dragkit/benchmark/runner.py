"""Run one method over a benchmark dataset: per sample identity LoRA (cached), edit, write results.

``RUN_DIR/run.json`` records what the run is (dataset, method, config, model, seed, resize); every sample writes
``RUN_DIR/<sample id>/dragged_image.png`` and ``result.json`` (request, final handles, timings, DAI) atomically, or
``error.json`` when it fails — the run goes on. A sample with a ``result.json`` is finished: re-running the same
command resumes; a different configuration into the same RUN_DIR is refused.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..config import config_to_dict
from ..datasets import BenchSample, read_sample, resize_request, sample_ids
from ..errors import first_line
from ..io import edit_record, save_image_atomic, save_json_atomic
from ..metrics.dai import GAMMAS, dai_all
from ..types import DragError, DragRequest, EditCancelled
from .rundir import check_run_dir, write_run_meta

logger = logging.getLogger(__name__)

RESULT, ERROR = "result.json", "error.json"


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def parse_shard(text: Optional[str]) -> tuple[int, int]:
    """"i/n" (0 ≤ i < n) → (i, n); None → (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise DragError(f"--shard expects i/n, e.g. 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise DragError(f"--shard {text}: need 0 <= i < n")
    return i, n


def select_ids(ids: list[str], limit: Optional[int] = None, shard: tuple[int, int] = (0, 1)) -> list[str]:
    """The first ``limit`` ids, then every n-th from the i-th (so shards of a limited run partition it)."""
    ids = ids[:limit] if limit is not None else ids
    i, n = shard
    return ids[i::n]


def run_meta(dataset: str, data_dir: str | Path, config, model: str, seed: int, resize: Optional[int],
             dai_official: bool) -> dict:
    return {"dataset": dataset, "data": str(Path(data_dir).resolve()), "method": config.method,
            "config": config_to_dict(config), "model": model, "seed": seed, "resize": resize,
            "dai": "official" if dai_official else "mean"}


def check_run(out_dir: str | Path, meta: dict) -> dict:
    """``run.json`` of RUN_DIR with this run (:func:`run_meta`), or a :class:`DragError` when RUN_DIR already holds a
    run with other settings (any but where the data lies). Nothing is written."""
    return check_run_dir(out_dir, meta, unchecked=("data",))


def is_finished(sample_dir: Path) -> bool:
    return (sample_dir / RESULT).is_file() and (sample_dir / "dragged_image.png").is_file()


def run_sample(editor, config, sample: BenchSample, request: DragRequest, sample_dir: Path, *, seed: int,
               dai_official: bool, callback=None) -> dict:
    """Edit one sample and write its image and ``result.json``; returns the result record."""
    image_path = str(sample.image_path.resolve())
    if request is not sample.request:  # resized: keep the exact input next to the output for the report
        save_image_atomic(request.image, sample_dir / "input.png")
        image_path = "input.png"
    result = editor.edit(request, config, callback=callback, seed=seed)
    save_image_atomic(result.image, sample_dir / "dragged_image.png")
    record = {
        "status": "ok", "sample_id": sample.sample_id, "category": sample.category, "size": list(request.size),
        **edit_record(request, image_path, None, config, result), "steps": result.steps,
        "metrics": dai_all(request.image, result.image, request.handles, request.targets, GAMMAS, dai_official),
    }
    save_json_atomic(record, sample_dir / RESULT)
    if (sample_dir / ERROR).exists():
        os.unlink(sample_dir / ERROR)
    return record


def run_benchmark(editor, config, dataset: str, data_dir: str | Path, out_dir: str | Path, *, model: str = "",
                  seed: int = 0, resize: Optional[int] = None, limit: Optional[int] = None,
                  shard: tuple[int, int] = (0, 1), dai_official: bool = True,
                  on_sample: Optional[Callable[[str, str], None]] = None,
                  callback_for: Optional[Callable[[str], object]] = None) -> RunSummary:
    """Run ``editor`` with ``config`` over this shard of the dataset into ``out_dir`` (resumable).

    ``on_sample(sample_id, status)`` is called after each sample with "done", "skipped" or "failed";
    ``callback_for(sample_id)`` may return a per-step progress callback for the edit.
    """
    out_dir = Path(out_dir)
    ids = select_ids(sample_ids(dataset, data_dir), limit, shard)
    write_run_meta(out_dir, check_run(out_dir, run_meta(dataset, data_dir, config, model, seed, resize, dai_official)))
    summary = RunSummary()
    for sid in ids:
        sample_dir = out_dir / sid
        if is_finished(sample_dir):
            summary.skipped.append(sid)
            status = "skipped"
        else:
            try:
                sample = read_sample(dataset, data_dir, sid)
                request = resize_request(sample.request, resize) if resize else sample.request
                run_sample(editor, config, sample, request, sample_dir, seed=seed, dai_official=dai_official,
                           callback=callback_for(sid) if callback_for else None)
                summary.done.append(sid)
                status = "done"
            except (KeyboardInterrupt, EditCancelled):
                raise
            except Exception as exc:  # a failing sample is recorded and the run continues
                message = first_line(exc, with_type=True)
                logger.warning("%s failed: %s", sid, message)
                logger.debug("traceback", exc_info=True)
                save_json_atomic({"status": "failed", "sample_id": sid, "error": message}, sample_dir / ERROR)
                summary.failed[sid] = message
                status = "failed"
        if on_sample is not None:
            on_sample(sid, status)
    return summary
