"""Run one method over a benchmark dataset: per sample identity LoRA (cached), edit, write results.

``RUN_DIR/run.json`` records what the run is (dataset, method, config, model, seed, resize); every sample writes
``RUN_DIR/<sample id>/dragged_image.png`` and ``result.json`` (request, final handles, timings, DAI) atomically, or
``error.json`` when it fails — the run goes on. Beside them: ``input.png`` when the sample was resized and
``mask.png``, the editable region the edit used (the report's m-MD, if-bg and drag-back read it). A sample with a
``result.json`` is finished: re-running the same command resumes; a different configuration into the same RUN_DIR
is refused. With a :class:`~dragkit.benchmark.cluster.RayPool` the edits run on Ray workers and this process writes
the same files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from ..config import config_to_dict
from ..datasets import BenchSample, read_sample, resize_request, sample_ids
from ..errors import first_line
from ..io import edit_record, save_image_atomic, save_json_atomic
from ..metrics.dai import GAMMAS, dai_all
from ..types import DragError, DragRequest, EditCancelled
from .rundir import check_run_dir, write_run_meta

logger = logging.getLogger(__name__)

RESULT, ERROR, MASK = "result.json", "error.json", "mask.png"


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


def write_inputs(sample: BenchSample, request: DragRequest, sample_dir: Path) -> tuple[str, Optional[str]]:
    """Write what the report needs of the input beside the result — ``input.png`` when ``request`` was resized,
    ``mask.png`` (0/255) when it has a mask — and return (image path, mask path) as ``result.json`` records them."""
    image_path = str(sample.image_path.resolve())
    if request is not sample.request:  # resized: keep the exact input next to the output for the report
        save_image_atomic(request.image, sample_dir / "input.png")
        image_path = "input.png"
    if request.mask is None:
        return image_path, None
    save_image_atomic(Image.fromarray(np.where(np.asarray(request.mask) != 0, 255, 0).astype(np.uint8)),
                      sample_dir / MASK)
    return image_path, MASK


def write_result(sample: BenchSample, request: DragRequest, result, config, sample_dir: Path, *,
                 dai_official: bool) -> dict:
    """Write an edit's image and ``result.json`` (after :func:`write_inputs`); returns the record."""
    image_path = "input.png" if request is not sample.request else str(sample.image_path.resolve())
    mask_path = MASK if request.mask is not None else None
    save_image_atomic(result.image, sample_dir / "dragged_image.png")
    record = {
        "status": "ok", "sample_id": sample.sample_id, "category": sample.category, "size": list(request.size),
        **edit_record(request, image_path, mask_path, config, result),
        "metrics": dai_all(request.image, result.image, request.handles, request.targets, GAMMAS, dai_official),
    }
    save_json_atomic(record, sample_dir / RESULT)
    if (sample_dir / ERROR).exists():
        os.unlink(sample_dir / ERROR)
    return record


def run_sample(editor, config, sample: BenchSample, request: DragRequest, sample_dir: Path, *, seed: int,
               dai_official: bool, callback=None) -> dict:
    """Edit one sample and write its image and ``result.json``; returns the result record."""
    write_inputs(sample, request, sample_dir)
    result = editor.edit(request, config, callback=callback, seed=seed)
    return write_result(sample, request, result, config, sample_dir, dai_official=dai_official)


def load_request(dataset: str, data_dir: str | Path, sid: str, resize: Optional[int]) -> tuple[BenchSample,
                                                                                              DragRequest]:
    sample = read_sample(dataset, data_dir, sid)
    return sample, resize_request(sample.request, resize) if resize else sample.request


@dataclass
class _Progress:
    """Records each sample's status in the summary (a failure also in ``error.json``) and tells ``on_sample``."""

    summary: RunSummary
    on_sample: Optional[Callable[[str, str], None]] = None

    def __call__(self, sid: str, status: str) -> None:
        {"done": self.summary.done, "skipped": self.summary.skipped}.get(status, []).append(sid)
        if self.on_sample is not None:
            self.on_sample(sid, status)

    def fail(self, sid: str, sample_dir: Path, message: str) -> None:
        logger.warning("%s failed: %s", sid, message)
        save_json_atomic({"status": "failed", "sample_id": sid, "error": message}, sample_dir / ERROR)
        self.summary.failed[sid] = message
        self(sid, "failed")


def run_benchmark(editor, config, dataset: str, data_dir: str | Path, out_dir: str | Path, *, model: str = "",
                  seed: int = 0, resize: Optional[int] = None, limit: Optional[int] = None,
                  shard: tuple[int, int] = (0, 1), dai_official: bool = True,
                  on_sample: Optional[Callable[[str, str], None]] = None,
                  callback_for: Optional[Callable[[str], object]] = None, pool=None) -> RunSummary:
    """Run ``editor`` with ``config`` over this shard of the dataset into ``out_dir`` (resumable).

    ``on_sample(sample_id, status)`` is called after each sample with "done", "skipped" or "failed";
    ``callback_for(sample_id)`` may return a per-step progress callback for the edit. ``pool`` (a
    :class:`~dragkit.benchmark.cluster.RayPool`) runs the edits on its workers instead of ``editor`` (then unused);
    samples finish in any order, the files written are the same.
    """
    out_dir = Path(out_dir)
    ids = select_ids(sample_ids(dataset, data_dir), limit, shard)
    write_run_meta(out_dir, check_run(out_dir, run_meta(dataset, data_dir, config, model, seed, resize, dai_official)))
    progress = _Progress(RunSummary(), on_sample)
    todo = []
    for sid in ids:
        if is_finished(out_dir / sid):
            progress(sid, "skipped")
        else:
            todo.append(sid)
    args = (config, dataset, data_dir, out_dir, seed, resize, dai_official, progress)
    if pool is None:
        _run_here(editor, todo, *args, callback_for=callback_for)
    else:
        _run_on_pool(pool, todo, *args)
    return progress.summary


def _run_here(editor, todo: list[str], config, dataset, data_dir, out_dir: Path, seed: int, resize, dai_official,
              progress: _Progress, callback_for=None) -> None:
    for sid in todo:
        try:
            sample, request = load_request(dataset, data_dir, sid, resize)
            run_sample(editor, config, sample, request, out_dir / sid, seed=seed, dai_official=dai_official,
                       callback=callback_for(sid) if callback_for else None)
        except (KeyboardInterrupt, EditCancelled):
            raise
        except Exception as exc:  # a failing sample is recorded and the run continues
            logger.debug("traceback", exc_info=True)
            progress.fail(sid, out_dir / sid, first_line(exc, with_type=True))
        else:
            progress(sid, "done")


def _run_on_pool(pool, todo: list[str], config, dataset, data_dir, out_dir: Path, seed: int, resize, dai_official,
                 progress: _Progress) -> None:
    from .cluster import EditJob

    prepared: dict[str, tuple[BenchSample, DragRequest]] = {}

    def jobs():
        for sid in todo:
            try:
                sample, request = load_request(dataset, data_dir, sid, resize)
                write_inputs(sample, request, out_dir / sid)
            except Exception as exc:  # an unreadable sample fails here, before any worker sees it
                progress.fail(sid, out_dir / sid, first_line(exc, with_type=True))
                continue
            prepared[sid] = (sample, request)
            yield sid, EditJob(request, config, seed)

    for sid, outcome in pool.map(jobs(), count=len(todo)):
        sample, request = prepared.pop(sid)
        try:
            if outcome.error is not None:
                raise DragError(outcome.error)
            write_result(sample, request, outcome.result, config, out_dir / sid, dai_official=dai_official)
        except Exception as exc:
            progress.fail(sid, out_dir / sid, first_line(exc))
        else:
            progress(sid, "done")
