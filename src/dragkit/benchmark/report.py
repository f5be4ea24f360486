"""Evaluate finished benchmark runs and write a side-by-side report (Markdown, CSV, JSON and PNG plots).

Aggregation as the papers: Mean Distance (and m-MD) over **all point pairs** (overall and per category), Image
Fidelity, background fidelity, DAI, the GScore-like judge and drag-back over images. With ``repeats`` > 1 each
aggregate of MD, m-MD and the judge also gets ``<metric>_std``: the sample standard deviation (n − 1) over the
repeats of that aggregate (each repeat: the same samples with that repeat's seeds). The metrics of one sample are
computed in :mod:`dragkit.benchmark.evaluate`.

Seeding and units are stated in every report: the DIFT noise of the original and the edited image are independent
draws, seeded from the sample id (:mod:`dragkit.metrics.seeds`); a run made with ``--resize W`` has its MD and m-MD
in pixels of the resized images (``resize``, ``md_pixels`` in report.json, a ``resize`` column in report.csv, a note
in report.md): not comparable to published MD, which is measured at the dataset's full size.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from pathlib import Path
from typing import Callable, Optional

from ..io import atomic_path, save_json_atomic
from .evaluate import (DEFAULT_METRICS, METRICS, Evaluators, Run, evaluate_sample,  # noqa: F401  (the report's API)
                       load_run)

logger = logging.getLogger(__name__)

PAIR_METRICS = ("md", "m_md")  # averaged over point pairs, from "<name>_distances"
COLUMN_ORDER = ["md", "m_md", "if", "if_bg", "dai_1", "dai_5", "dai_10", "dai_20", "gscore_like", "drag_back"]
_NOT_AGGREGATED = ("gscore_like_std",)  # per sample: the spread of that image's asks, not a metric


def repeat_std(per_sample: list[list], pairs: bool) -> Optional[float]:
    """Sample std (n − 1) over repeats of an aggregate: ``per_sample[i][r]`` is sample i's value (``pairs``: list of
    pair distances) in repeat r; each repeat's aggregate is the mean over its images (pairs). None for one repeat."""
    if not per_sample or len(per_sample[0]) < 2:
        return None
    means = []
    for r in range(len(per_sample[0])):
        xs = [d for v in per_sample for d in v[r]] if pairs else [v[r] for v in per_sample if v[r] is not None]
        if xs:
            means.append(statistics.fmean(xs))
    return statistics.stdev(means) if len(means) > 1 else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate(values: list[dict]) -> dict:
    """Overall numbers over a list of per-sample metric dicts (MD and m-MD over all pairs, the rest over images),
    with ``<metric>_std`` over repeats where the samples carry ``*_by_repeat`` values."""
    agg: dict = {"samples": len(values)}
    for name in PAIR_METRICS:
        key = f"{name}_distances"
        pairs = [d for v in values for d in v.get(key, [])]
        if pairs:
            agg[name] = statistics.fmean(pairs)
            agg["pairs"] = len(pairs)
            std = repeat_std([v[f"{key}_by_repeat"] for v in values if f"{key}_by_repeat" in v], pairs=True)
            if std is not None:
                agg[f"{name}_std"] = std
    keys = sorted({k for v in values for k, x in v.items() if _is_number(x) and k not in _NOT_AGGREGATED})
    for k in keys:
        xs = [v[k] for v in values if _is_number(v.get(k))]
        if xs:
            agg[k] = statistics.fmean(xs)
        std = repeat_std([v[f"{k}_by_repeat"] for v in values if f"{k}_by_repeat" in v], pairs=False)
        if std is not None:
            agg[f"{k}_std"] = std
    return agg


def md_pixels(resize: Optional[int]) -> str:
    """What MD's pixels are for a run made with ``--resize`` ``resize`` (None: not resized)."""
    if not resize:
        return "original"
    return f"resized to {resize} px wide: not comparable to published MD (full-size pixels)"


def run_report(run: Run, per_sample: dict[str, tuple[Optional[str], dict]]) -> dict:
    """The report entry of one run from its per-sample metric values {sample id: (category, values)}; ``resize``
    and ``md_pixels`` say whether its MD is in resized pixels."""
    values = [v for _, v in per_sample.values()]
    categories = sorted({c for c, _ in per_sample.values() if c})
    timings = [r["timings"]["total"] for r in run.results if r.get("timings", {}).get("total") is not None]
    return {
        "run": str(run.path), "label": run.label, "dataset": run.meta.get("dataset"), "method": run.meta.get("method"),
        "model": run.meta.get("model"), "seed": run.meta.get("seed"), "dai_normalisation": run.meta.get("dai"),
        "resize": run.meta.get("resize"), "md_pixels": md_pixels(run.meta.get("resize")),
        "failed": run.failed,
        "seconds_per_sample": statistics.fmean(timings) if timings else None,
        "overall": aggregate(values),
        "per_category": {c: aggregate([v for cc, v in per_sample.values() if cc == c]) for c in categories},
        "samples": {sid: {"category": c, **v} for sid, (c, v) in per_sample.items()},
    }


def evaluate_runs(runs: list[Run], ev: Evaluators, on_sample: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Evaluate every finished sample of every run, sample by sample (a sample's source features serve all runs)."""
    by_id = [{r["sample_id"]: r for r in run.results} for run in runs]
    per_run: list[dict] = [{} for _ in runs]
    for sid in sorted({sid for records in by_id for sid in records}):
        ev.next_sample()
        for records, out in zip(by_id, per_run):
            if sid in records:
                out[sid] = (records[sid].get("category"), evaluate_sample(records[sid], ev))
                if on_sample:
                    on_sample(sid)
    return [run_report(run, out) for run, out in zip(runs, per_run)]


# --- writing ---------------------------------------------------------------------------------------------------------

def metric_columns(reports: list[dict]) -> list[str]:
    """The metric columns present in any scope of any report (their ``_std`` companions are shown beside them)."""
    keys = {k for r in reports for scope in [r["overall"], *r["per_category"].values()] for k in scope}
    rest = sorted(k for k in keys
                  if k not in COLUMN_ORDER and k not in ("samples", "pairs") and not k.endswith("_std"))
    return [k for k in COLUMN_ORDER if k in keys] + rest


def std_columns(reports: list[dict]) -> set[str]:
    """The metrics that have a ``_std`` (repeats) in some scope of some report."""
    return {k[:-4] for r in reports for scope in [r["overall"], *r["per_category"].values()] for k in scope
            if k.endswith("_std")}


def format_value(value) -> str:
    """A table cell: 4 significant digits for floats, "–" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_cell(scope: dict, metric: str) -> str:
    """``metric`` of a report scope, "mean ± std" when repeats gave a std."""
    std = scope.get(f"{metric}_std")
    return format_value(scope.get(metric)) + (f" ± {format_value(std)}" if std is not None else "")


def describe_evaluation(evaluation: Optional[dict]) -> list[str]:
    """Markdown lines on how the numbers were made: DIFT model and revision, its noise seeding, repeats, seeds."""
    if not evaluation:
        return []
    lines = []
    dift = evaluation.get("dift")
    if dift:
        lines.append(f"DIFT: `{dift['model']}` (revision {dift.get('revision') or 'unknown'}), "
                     f"t = {dift['timestep']}, up_blocks[{dift['block']}], {dift['ensemble']} noise draws; the "
                     "original and the edited image get independent noise (seeds `dift-original` and `dift-edited` "
                     "of the sample id), as the official evaluator.")
    lines.append(f"Repeats: {evaluation.get('repeats', 1)} (± = std over repeats, n − 1); seeds per sample: "
                 f"`{evaluation.get('seed_rule')}` — every seed is listed in report.json.")
    return lines + [""]


def to_markdown(reports: list[dict], evaluation: Optional[dict] = None) -> str:
    cols = metric_columns(reports)
    head = "| run | method | samples | pairs | " + " | ".join(cols) + " |"
    sep = "|" + "---|" * (4 + len(cols))
    lines = ["# Benchmark report", "",
             "MD: Mean Distance (px, ↓, DIFT, over all point pairs) · m_md: MD with the match searched inside the "
             "editable region (↓) · IF: 1 − LPIPS-Alex (↑) · if_bg: IF outside the editable region (↑) · dai_γ: "
             "Dragging Accuracy Index (↓) · gscore_like: GScore-like judge (1–10, ↑) · drag_back: 1 − LPIPS of the "
             "original and its dragged-back edit (↑).", "", *describe_evaluation(evaluation), "## Overall", "",
             head, sep]
    for r in reports:
        o = r["overall"]
        lines.append(f"| {r['label']} | {r['method']} | {o['samples']} | {o.get('pairs', '–')} | "
                     + " | ".join(format_cell(o, c) for c in cols) + " |")
    for r in reports:
        if r.get("resize"):
            lines += ["", f"**{r['label']}: resized pixels.** Run with `--resize {r['resize']}`: MD and m-MD are in "
                          f"pixels of images {r['resize']} px wide, not comparable to published MD (full-size "
                          "pixels)."]
    failed = [(r["label"], r["failed"]) for r in reports if r["failed"]]
    for label, ids in failed:
        lines += ["", f"{label}: {len(ids)} failed sample(s) not counted: {', '.join(ids)}"]
    categories = sorted({c for r in reports for c in r["per_category"]})
    for c_metric in cols if categories else []:
        lines += ["", f"## {c_metric} per category", "",
                  "| category | " + " | ".join(r["label"] for r in reports) + " |",
                  "|" + "---|" * (1 + len(reports))]
        for cat in categories:
            lines.append(f"| {cat} | " + " | ".join(format_cell(r["per_category"].get(cat, {}), c_metric)
                                                   for r in reports) + " |")
    return "\n".join(lines) + "\n"


def write_csv(reports: list[dict], path: Path) -> None:
    """One row per run and scope (all, then each category); the last column, ``resize``, is the run's ``--resize``
    width (empty: full size), i.e. whether its MD is in resized pixels."""
    stds = std_columns(reports)
    cols = [name for c in metric_columns(reports) for name in ([c, f"{c}_std"] if c in stds else [c])]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "method", "dataset", "category", "samples", "pairs", *cols, "resize"])
        for r in reports:
            scopes = [("all", r["overall"]), *sorted(r["per_category"].items())]
            for cat, values in scopes:
                writer.writerow([r["label"], r["method"], r["dataset"], cat, values.get("samples"),
                                 values.get("pairs", ""), *["" if values.get(c) is None else values[c] for c in cols],
                                 r.get("resize") or ""])


def write_report(reports: list[dict], out_dir: str | Path, evaluation: Optional[dict] = None) -> list[Path]:
    """report.md, report.csv, report.json and the plots into ``out_dir``; returns the written paths. ``evaluation``
    (:meth:`Evaluators.describe`) is recorded in report.json and summarised in report.md."""
    from .plots import category_bars, md_vs_if

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_json_atomic({"runs": reports, **({"evaluation": evaluation} if evaluation else {})}, out_dir / "report.json")
    write_csv(reports, out_dir / "report.csv")
    md = to_markdown(reports, evaluation)
    written = [out_dir / "report.json", out_dir / "report.csv"]
    plots = []
    try:
        plots.append(md_vs_if(reports, out_dir / "md_vs_if.png"))
        for metric in metric_columns(reports):
            plots.append(category_bars(reports, metric, out_dir / f"per_category_{metric}.png"))
    except ImportError:
        logger.warning("matplotlib is not installed: report without plots (pip install matplotlib)")
    plots = [p for p in plots if p]
    if plots:
        md += "\n## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text(md)
    return written + [out_dir / "report.md"] + plots
