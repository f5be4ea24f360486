"""The shapes benchmark runner (``dragkit bench shapes``): methods and ablations over seeded "move this object" tasks.

One model load, then for every variant (a labelled method config; ``identity`` = the input returned unchanged, the
baseline row) and every task (:mod:`dragkit.shapes.tasks`): edit, save ``DIR/<variant>/<task id>.png``, measure
(:mod:`dragkit.shapes.metrics`) and append one JSON line to ``DIR/results.jsonl``. Then ``summary.json`` (means per
variant, and the standard error of the means of :data:`ERROR_METRICS`), ``table.md`` (those four as mean ± standard
error), ``table.csv`` and ``plot.png`` (per-task drag error vs background PSNR, means marked). Methods: ``identity``
and every method of the registry :data:`dragkit.config.METHODS` (:func:`method_names`, read when called).

Re-scoring (:func:`rescore_run`, ``--rescore``): every record's metrics recomputed from its saved image and the task
rebuilt from its scene seed — no model — so that metrics added later apply to earlier runs.

Resuming: pairs (variant, task) already in ``results.jsonl`` are skipped, so re-running the same command continues,
and a larger ``--n`` extends a run (the first k tasks of a task set never change). ``DIR/run.json`` records the task
seed, the model and each variant's config; a different config under an existing label, another seed or another model
is refused before any work. The summary covers the requested tasks for every variant recorded in the folder.

Ablations (:data:`ABLATIONS`, ``--ablations``), each a set of config changes on top of the method's (overridden)
config, labelled ``<method>-<ablation>`` (a method without an entry has none):

- ``no-lora``: no identity LoRA (``lora_steps=0``);
- ``no-refattn``: no reference-latent-control while denoising (``reference_attention=false``);
- ``no-ipms`` (GoodDrag): DragDiffusion's motion supervision, sg(F(h_i)) at the current handle, instead of the
  information-preserving target F_orig(h⁰_i) (``information_preserving=false``);
- ``no-aldd`` (GoodDrag): every drag operation at t*, then plain denoising — ``drag_denoise_steps=1``,
  ``trackings_per_denoise`` = T_d·B (70 with the defaults), the paper's "w/o AlDD" (§5.3, Fig. 12).

Sweeps (``--sweep FIELD=v1,v2,…``, repeatable; DragDiffusion's Fig. 7 ablations: ``inversion_strength``,
``lora_steps``, ``feature_block``): for every method that has the field, one row per value, labelled
``<method>@FIELD=value``, each the method's (overridden) config with that one field changed; each swept field gets
``sweep_<FIELD>.png`` — drag error and background PSNR against the value, one line per method, mean ± standard error
over the tasks. Fields are swept one at a time (not a grid), as in the paper.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..benchmark.rundir import check_run_dir, write_run_meta
from .. import config as method_registry
from ..config import apply_overrides, config_fields, config_to_dict, configs_with_overrides, default_config
from ..io import atomic_path, save_image_atomic, save_json_atomic
from ..types import DragError
from .metrics import drag_metrics
from .scenes import random_scene
from .tasks import ShapeTask, task_from_scene

logger = logging.getLogger(__name__)

IDENTITY = "identity"
RESULTS, SUMMARY = "results.jsonl", "summary.json"
SUMMARY_METRICS = ("drag_error_px", "drag_error_fraction", "background_psnr", "shape_iou", "ghost", "hole_psnr")
ERROR_METRICS = ("drag_error_fraction", "background_psnr", "ghost", "hole_psnr")  # also "<metric>_se" in summaries


def method_names() -> tuple[str, ...]:
    """What ``--method`` accepts: ``identity`` and every method registered in :data:`dragkit.config.METHODS` now."""
    return (IDENTITY, *method_registry.METHODS)

ABLATIONS: dict[str, list[tuple[str, Callable[[Any], dict]]]] = {
    "dragdiffusion": [
        ("no-lora", lambda c: {"lora_steps": 0}),
        ("no-refattn", lambda c: {"reference_attention": False}),
    ],
    "gooddrag": [
        ("no-lora", lambda c: {"lora_steps": 0}),
        ("no-refattn", lambda c: {"reference_attention": False}),
        ("no-ipms", lambda c: {"information_preserving": False}),
        ("no-aldd", lambda c: {"drag_denoise_steps": 1,
                               "trackings_per_denoise": c.drag_denoise_steps * c.trackings_per_denoise}),
    ],
}


@dataclass(frozen=True)
class Variant:
    """One row of the table: a label, its method, its config (None for identity) and, for a sweep row, the swept
    (field, value)."""

    label: str
    method: str
    config: Any = None
    sweep: Optional[tuple[str, Any]] = None

    def meta(self) -> dict:
        meta = {"method": self.method, "config": None if self.config is None else config_to_dict(self.config)}
        if self.sweep is not None:
            meta["sweep"] = {"field": self.sweep[0], "value": self.sweep[1]}
        return meta


def parse_sweep(text: str) -> tuple[str, list[str]]:
    """"FIELD=v1,v2,…" → (FIELD, [v1, v2, …]) (values deduplicated, order kept)."""
    name, _, values = text.partition("=")
    items = list(dict.fromkeys(v.strip() for v in values.split(",") if v.strip()))
    if not name.strip() or not items:
        raise DragError(f"--sweep expects FIELD=v1,v2,..., got {text!r}")
    return name.strip(), items


def sweep_variants(configs: dict[str, Any], sweep: str) -> list[Variant]:
    """The rows of one ``--sweep FIELD=v1,v2,…``: every method whose config has FIELD, every value."""
    name, values = parse_sweep(sweep)
    having = {m: c for m, c in configs.items() if name in config_fields(type(c))}
    if not having:
        raise DragError(f"--sweep {name}: no requested method ({', '.join(configs) or 'none'}) has this config field")
    rows = []
    for method, config in having.items():
        for value in values:
            changed = apply_overrides(config, [f"{name}={value}"])
            rows.append(Variant(f"{method}@{name}={value}", method, changed, (name, getattr(changed, name))))
    return rows


def build_variants(methods: list[str], overrides: list[str], ablations: bool = False,
                   sweeps: Sequence[str] = ()) -> list[Variant]:
    """Identity first (always: the baseline row), then each requested method with ``overrides`` (FIELD=VALUE, each
    applied to every method whose config has the field; an error when none has it) and, with ``ablations``, its
    ablation rows. With ``sweeps`` ("FIELD=v1,v2,…" each) the method rows are the sweep rows instead."""
    import dataclasses

    known = method_names()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise DragError(f"unknown method {unknown[0]!r}; choose from {', '.join(known)}")
    if sweeps and ablations:
        raise DragError("--sweep and --ablations make different tables: run them into separate folders")
    drag_methods = [m for m in dict.fromkeys(methods) if m != IDENTITY]
    configs = configs_with_overrides({m: default_config(m) for m in drag_methods}, overrides)
    variants = [Variant(IDENTITY, IDENTITY)]
    if sweeps:
        return variants + [v for sweep in sweeps for v in sweep_variants(configs, sweep)]
    for method, config in configs.items():
        variants.append(Variant(method, method, config))
        if ablations:
            variants += [Variant(f"{method}-{name}", method, dataclasses.replace(config, **change(config)))
                         for name, change in ABLATIONS.get(method, [])]
    return variants


# --- the run folder ------------------------------------------------------------------------------------------------

def check_run(out_dir: Path, seed: int, model: Optional[str], variants: list[Variant]) -> dict:
    """The folder's ``run.json`` with this run added — the task seed, the model (identity-only runs use none) and each
    variant's config — or a :class:`DragError` when it conflicts with what the folder already holds (another task
    seed, model, or config under the same label). Nothing is written."""
    needs_model = any(v.config is not None for v in variants)
    meta = {"seed": seed, "model": model if needs_model else None, "variants": {v.label: v.meta() for v in variants}}
    return check_run_dir(out_dir, meta, merge=("variants",), open_keys=("model",))


def read_results(out_dir: Path) -> list[dict]:
    """The records of ``results.jsonl``; a partial last line (an interrupted append) is dropped from the file."""
    path = out_dir / RESULTS
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise DragError(f"{path}: line {i + 1} is not JSON") from None
            logger.warning("%s: dropping a partial last line", path)
            with atomic_path(path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def append_result(out_dir: Path, record: dict) -> None:
    with open(out_dir / RESULTS, "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


# --- one edit ------------------------------------------------------------------------------------------------------

def run_task(editor, variant: Variant, task: ShapeTask, out_dir: Path, *, seed: int, callback=None) -> dict:
    """Edit ``task`` with ``variant`` (identity: no edit), save the image, return its ``results.jsonl`` record."""
    result = None if variant.config is None else editor.edit(task.request(), variant.config, callback=callback,
                                                             seed=seed)
    return task_result(variant, task, result, out_dir)


def task_result(variant: Variant, task: ShapeTask, result, out_dir: Path) -> dict:
    """Save the edited image of ``task`` (``result`` None: identity, the input itself) and measure it; returns the
    ``results.jsonl`` record."""
    original = task.image()
    record: dict = {"variant": variant.label, "method": variant.method, "task_id": task.task_id,
                    "scene_seed": task.scene_seed, "object": task.scene.shapes[task.index].kind,
                    "colour": str(task.scene.shapes[task.index].colour), "prompt": task.prompt,
                    "handle": list(task.handle), "target": list(task.target), "offset": list(task.offset),
                    "distance": task.distance}
    if variant.sweep is not None:
        record["sweep"] = {"field": variant.sweep[0], "value": variant.sweep[1]}
    if result is None:
        edited, final_handles, timings, steps = original, [list(task.handle)], {}, 0
    else:
        edited, timings, steps = np.asarray(result.image.convert("RGB")), result.timings, result.steps
        final_handles = [list(p) for p in result.final_handles]
    from PIL import Image

    save_image_atomic(Image.fromarray(edited), out_dir / variant.label / f"{task.task_id}.png")
    record.update(final_handles=final_handles, steps=steps, timings=timings,
                  metrics=drag_metrics(original, edited, task.scene, task.index, task.offset))
    return record


def run_shapes_benchmark(load_editor: Callable[[], Any], variants: list[Variant], tasks: list[ShapeTask],
                         out_dir: str | Path, *, seed: int = 0, model: Optional[str] = None,
                         callback=None, on_task: Optional[Callable[[str, str, str], None]] = None,
                         pool=None) -> dict:
    """Run every (variant, task) pair not yet in ``out_dir`` and write the summary files; returns the summary.

    ``load_editor()`` is called once, before anything is written, and only if some drag variant has work left.
    ``on_task(label, task_id, status)`` is called after each pair with "done" or "skipped"; ``callback`` receives
    every ProgressEvent. ``pool`` (a :class:`~dragkit.benchmark.cluster.RayPool`, which loads its own editors) runs
    the edits on Ray workers; this process measures and writes, pairs finish in any order.
    """
    out_dir = Path(out_dir)
    meta = check_run(out_dir, seed, model, variants)
    done = {(r["variant"], r["task_id"]) for r in read_results(out_dir)}
    todo = [(v, t) for v in variants for t in tasks if (v.label, t.task_id) not in done]
    needs_editor = pool is None and any(v.config is not None for v, _ in todo)
    editor = load_editor() if needs_editor else None  # fails before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    write_run_meta(out_dir, meta)
    report = on_task or (lambda label, task_id, status: None)
    for variant, task in [(v, t) for v in variants for t in tasks if (v.label, t.task_id) in done]:
        report(variant.label, task.task_id, "skipped")
    here = todo if pool is None else [(v, t) for v, t in todo if v.config is None]
    for variant, task in here:
        append_result(out_dir, run_task(editor, variant, task, out_dir, seed=seed, callback=callback))
        report(variant.label, task.task_id, "done")
    if pool is not None:
        _run_on_pool(pool, [(v, t) for v, t in todo if v.config is not None], out_dir, seed, report)
    return write_summary(out_dir, [t.task_id for t in tasks], [v.label for v in variants])


def _run_on_pool(pool, pairs: list[tuple[Variant, ShapeTask]], out_dir: Path, seed: int, report) -> None:
    from ..benchmark.cluster import EditJob

    jobs = (((v.label, t.task_id), EditJob(t.request(), v.config, seed)) for v, t in pairs)
    by_key = {(v.label, t.task_id): (v, t) for v, t in pairs}
    for key, outcome in pool.map(jobs, count=len(pairs)):
        variant, task = by_key[key]
        if outcome.error is not None:  # as in one process, where the edit's exception stops the run
            raise DragError(f"{variant.label} task {task.task_id}: {outcome.error}")
        append_result(out_dir, task_result(variant, task, outcome.result, out_dir))
        report(variant.label, task.task_id, "done")


# --- re-scoring a finished run --------------------------------------------------------------------------------------

def task_of_record(record: dict, size: int) -> ShapeTask:
    """The task of a ``results.jsonl`` record, rebuilt from its scene seed (``size`` px scenes); a
    :class:`DragError` when the record's handle or target is not that task's (another task generator)."""
    seed = record["scene_seed"]
    task = task_from_scene(random_scene(seed, size), seed, record["task_id"])
    if task is None or [list(task.handle), list(task.target)] != [list(record["handle"]), list(record["target"])]:
        raise DragError(f"task {record['task_id']} (scene {seed}): its handle and target are not those of the "
                        f"shapes task of that scene")
    return task


def rescore_run(out_dir: str | Path, task_ids: Optional[Sequence[str]] = None) -> dict:
    """Recompute the metrics of every record of the run folder ``out_dir`` from its saved image
    (``DIR/<variant>/<task id>.png``), rewrite ``results.jsonl`` atomically (every other field kept), then the summary
    files over ``task_ids`` (default: every task in the folder); returns the summary. No model is loaded. A
    :class:`DragError` for a folder that is not a shapes run, a missing image, or ``results.jsonl`` changing while it
    is re-scored (a run writing into the folder: re-score when it has finished)."""
    from PIL import Image

    out_dir = Path(out_dir)
    path = out_dir / RESULTS
    if not (out_dir / "run.json").is_file() or not path.is_file():
        raise DragError(f"{out_dir}: not a shapes run folder (no run.json or {RESULTS})")
    meta = json.loads((out_dir / "run.json").read_text())
    records = read_results(out_dir)
    if not records:
        raise DragError(f"{path}: no records to re-score")
    before = path.read_bytes()
    tasks: dict[tuple[int, int], ShapeTask] = {}
    for record in records:
        image_path = out_dir / record["variant"] / f"{record['task_id']}.png"
        if not image_path.is_file():
            raise DragError(f"{image_path}: missing, cannot re-score {record['variant']} task {record['task_id']}")
        with Image.open(image_path) as image:
            edited = np.asarray(image.convert("RGB"))
        key = (record["scene_seed"], edited.shape[0])
        if key not in tasks:
            tasks[key] = task_of_record(record, edited.shape[0])
        task = tasks[key]
        record["metrics"] = drag_metrics(task.image(), edited, task.scene, task.index, task.offset)
    if path.read_bytes() != before:
        raise DragError(f"{path} changed while re-scoring (is a run writing into {out_dir}?); nothing rewritten")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    logger.info("%s: re-scored %d records", out_dir, len(records))
    ids = sorted({r["task_id"] for r in records}) if task_ids is None else list(task_ids)
    return write_summary(out_dir, ids, [IDENTITY, *meta.get("variants", {})])


# --- summary, tables, plot -----------------------------------------------------------------------------------------

def summarize(records: list[dict]) -> dict:
    """Means of the metrics over ``records`` of one variant (None and NaN values skipped; None when none is left),
    the standard error of the mean of each of :data:`ERROR_METRICS` (``<metric>_se``), plus n, ``vacated_n`` (the
    tasks whose move vacated a measurable region: those with a ghost value), objects lost and seconds per edit."""
    out: dict = {"n": len(records)}
    for key in SUMMARY_METRICS:
        mean, error = mean_and_error([r["metrics"].get(key) for r in records])
        out[key] = mean
        if key in ERROR_METRICS:
            out[f"{key}_se"] = None if mean is None else error
    out["vacated_n"] = sum(r["metrics"].get("ghost") is not None for r in records)
    out["objects_lost"] = sum(bool(r["metrics"].get("object_lost")) for r in records)
    seconds = [r["timings"]["total"] for r in records if r.get("timings", {}).get("total") is not None]
    out["seconds_per_edit"] = statistics.fmean(seconds) if seconds else None
    return out


def write_summary(out_dir: Path, task_ids: list[str], order: list[str]) -> dict:
    """``summary.json``, ``table.md``, ``table.csv``, ``plot.png`` (and ``sweep_<FIELD>.png`` per swept field) over
    ``task_ids``, for every variant in the folder (``order`` first). Returns the summary {variant: {...}}."""
    wanted = set(task_ids)
    records = [r for r in read_results(out_dir) if r["task_id"] in wanted]
    labels = list(dict.fromkeys(order + sorted({r["variant"] for r in records})))
    by_label = {label: [r for r in records if r["variant"] == label] for label in labels}
    summary = {label: summarize(rs) for label, rs in by_label.items() if rs}
    methods = {r["variant"]: r["method"] for r in records}
    save_json_atomic(summary, out_dir / SUMMARY)
    with atomic_path(out_dir / "table.md") as tmp:
        tmp.write_text(to_markdown([[label, methods[label], *table_cells(s)] for label, s in summary.items()]))
    write_csv([[label, methods[label], *csv_cells(s)] for label, s in summary.items()], out_dir / "table.csv")
    plot_error_vs_background({label: by_label[label] for label in summary}, out_dir / "plot.png")
    plot_sweeps(records, out_dir)
    return summary


TABLE_COLUMNS = ("variant", "method", "n", "drag error (px)", "drag error / requested", "background PSNR (dB)",
                 "shape IoU", "ghost", "hole PSNR (dB)", "objects lost", "s / edit")
CSV_COLUMNS = ("variant", "method", "n", "drag_error_px", "drag_error_fraction", "drag_error_fraction_se",
               "background_psnr", "background_psnr_se", "shape_iou", "ghost", "ghost_se", "hole_psnr", "hole_psnr_se",
               "vacated_n", "objects_lost", "seconds_per_edit")


def with_error(s: dict, key: str) -> str:
    """A table cell "mean ± standard error" of ``key`` (the mean alone when the summary has no ``<key>_se``, as in
    summaries written before it existed; "–" when there is no mean)."""
    from ..benchmark.report import format_value

    mean, error = s.get(key), s.get(f"{key}_se")
    if mean is None or error is None:
        return format_value(mean)
    return f"{format_value(mean)} ± {error:.2g}"


def table_cells(s: dict) -> list:
    return [s["n"], s["drag_error_px"], with_error(s, "drag_error_fraction"), with_error(s, "background_psnr"),
            s["shape_iou"], with_error(s, "ghost"), with_error(s, "hole_psnr"), s["objects_lost"],
            s["seconds_per_edit"]]


def csv_cells(s: dict) -> list:
    return [s.get(key) for key in CSV_COLUMNS[2:]]


def to_markdown(rows: list[list]) -> str:
    from ..benchmark.report import format_value

    lines = ["# Shapes benchmark", "",
             "Drag error: distance between the moved object's centroid (found by its colour) and where it should be "
             "(↓; / requested: as a fraction of the requested distance, identity = 1). Background PSNR: outside the "
             "object's old and new footprints (↑, capped at 60 dB). Shape IoU: with the original shape translated "
             "(↑). Ghost: fraction of the vacated interior (old footprint outside the new one + 2 px) still showing "
             "the object's colour (↓; a copy instead of a move, identity = 1). Hole PSNR: the vacated footprint "
             "against the ground-truth moved scene (↑, capped at 60 dB). Mean ± standard error over the tasks; "
             "ghost and hole PSNR over the tasks whose move vacates a region.", "",
             "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(format_value(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[list], path: Path) -> None:
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


def plot_error_vs_background(by_label: dict[str, list[dict]], path: Path) -> Optional[Path]:
    """Scatter of per-task drag error fraction (x, ↓) vs background PSNR (y, ↑), one colour per variant, means as
    large outlined markers; None when matplotlib is missing."""
    try:
        from ..benchmark.plots import pyplot, save_png

        plt = pyplot()
    except ImportError:
        logger.warning("matplotlib is not installed: no plot.png (pip install matplotlib)")
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    try:
        for i, (label, records) in enumerate(by_label.items()):
            colour = plt.get_cmap("tab10")(i % 10)
            xs = [r["metrics"]["drag_error_fraction"] for r in records]
            ys = [r["metrics"]["background_psnr"] for r in records]
            ax.scatter(xs, ys, s=10, alpha=0.35, color=colour)
            mx, my = statistics.fmean(xs), statistics.fmean(y for y in ys if not math.isnan(y))
            ax.scatter([mx], [my], s=120, color=colour, edgecolors="black", label=f"{label} (mean)", zorder=3)
        ax.set_xlim(left=0)  # 0 = moved exactly as asked; identity sits at 1
        ax.set_xlabel("drag error / requested distance ↓")
        ax.set_ylabel("background PSNR (dB) ↑")
        ax.set_title("better: upper left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        return save_png(fig, path)
    finally:
        plt.close(fig)


def mean_and_error(values: list[float]) -> tuple[Optional[float], float]:
    """(mean, standard error of the mean) of the finite values; (None, 0) when there are none."""
    xs = [v for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return None, 0.0
    return statistics.fmean(xs), (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0)


def sweep_curves(records: list[dict]) -> dict[str, dict[str, list[tuple]]]:
    """{field: {method: [(value, drag error fraction (mean, se), background PSNR (mean, se), n), …]}} of the sweep
    rows in ``records``, values in increasing order."""
    groups: dict = {}
    for r in records:
        if r.get("sweep"):
            key = (r["sweep"]["field"], r["method"], json.dumps(r["sweep"]["value"]))
            groups.setdefault(key, []).append(r)
    curves: dict = {}
    for (name, method, value), rs in groups.items():
        point = (json.loads(value), mean_and_error([x["metrics"]["drag_error_fraction"] for x in rs]),
                 mean_and_error([x["metrics"]["background_psnr"] for x in rs]), len(rs))
        curves.setdefault(name, {}).setdefault(method, []).append(point)
    for methods in curves.values():
        for points in methods.values():
            points.sort(key=lambda p: (str(type(p[0])), p[0]))
    return curves


def plot_sweeps(records: list[dict], out_dir: Path) -> list[Path]:
    """``sweep_<FIELD>.png`` per swept field: drag error / requested (↓) and background PSNR (↑) against the value,
    one line per method (mean ± standard error over the tasks), identity dashed; [] without sweeps or matplotlib."""
    curves = sweep_curves(records)
    if not curves:
        return []
    try:
        from ..benchmark.plots import pyplot, save_png

        plt = pyplot()
    except ImportError:
        logger.warning("matplotlib is not installed: no sweep plots (pip install matplotlib)")
        return []
    identity = [r["metrics"] for r in records if r["variant"] == IDENTITY]
    written = []
    for name, methods in curves.items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        try:
            for panel, (ax, metric, ylabel) in enumerate(zip(
                    axes, ("drag_error_fraction", "background_psnr"),
                    ("drag error / requested distance ↓", "background PSNR (dB) ↑"))):
                for method, points in methods.items():
                    xs = [p[0] for p in points]
                    ys, es = [p[1 + panel][0] for p in points], [p[1 + panel][1] for p in points]
                    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"{method} (n = {points[0][3]})")
                base = mean_and_error([m[metric] for m in identity])[0]
                if base is not None:
                    ax.axhline(base, color="grey", linestyle="--", label="identity")
                if panel == 0:
                    ax.set_ylim(bottom=0)  # 0 = moved exactly as asked; identity sits at 1
                ax.set_xlabel(name)
                ax.set_ylabel(ylabel)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
            fig.suptitle(f"sweep of {name} (mean ± standard error over tasks)")
            written.append(save_png(fig, out_dir / f"sweep_{name}.png"))
        finally:
            plt.close(fig)
    return written
