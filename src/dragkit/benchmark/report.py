"""Evaluate finished benchmark runs and write a side-by-side report (Markdown, CSV, JSON and PNG plots).

Aggregation as the papers: Mean Distance over **all point pairs** (overall and per category), Image Fidelity, DAI and
the GScore-like judge over images.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from PIL import Image

from ..io import atomic_path, load_image, save_json_atomic
from ..types import DragError
from .rundir import RUN_META
from .runner import ERROR, RESULT

logger = logging.getLogger(__name__)

METRICS = ("md", "if", "dai", "gscore")
DEFAULT_METRICS = ("md", "if", "dai")


@dataclass
class Run:
    """A finished (or partial) run directory: its meta data, the successful sample records and the failures."""

    path: Path
    meta: dict
    results: list[dict]
    failed: list[str]

    @property
    def label(self) -> str:
        return self.path.name


def load_run(path: str | Path) -> Run:
    path = Path(path)
    meta_file = path / RUN_META
    if not meta_file.is_file():
        raise DragError(f"{path}: not a benchmark run (no {RUN_META})")
    results, failed = [], []
    for f in sorted(path.rglob(RESULT)):
        record = json.loads(f.read_text())
        record["_dir"] = f.parent
        results.append(record)
    failed = sorted(f.parent.relative_to(path).as_posix() for f in path.rglob(ERROR)
                    if not (f.parent / RESULT).exists())
    if not results:
        raise DragError(f"{path}: no finished samples")
    return Run(path, json.loads(meta_file.read_text()), results, failed)


@dataclass
class Evaluators:
    """What the requested metrics need; each is created on first use (models load once per report)."""

    metrics: tuple[str, ...]
    dift_factory: Optional[Callable[[], object]] = None
    lpips_factory: Optional[Callable[[], object]] = None
    judge_factory: Optional[Callable[[], object]] = None
    judge_repeats: int = 10
    _made: dict = field(default_factory=dict)
    _source_features: dict = field(default_factory=dict)

    def get(self, name: str):
        if name not in self._made:
            factory = {"md": self.dift_factory, "if": self.lpips_factory, "gscore": self.judge_factory}[name]
            if factory is None:
                raise DragError(f"metric {name!r} needs a model that was not configured")
            self._made[name] = factory()
        return self._made[name]

    def source_features(self, image: Image.Image, prompt: str):
        """DIFT features of an original image, computed once for all runs of the sample being evaluated."""
        key = (hashlib.sha256(image.tobytes()).hexdigest(), image.size, prompt)
        if key not in self._source_features:
            self._source_features[key] = self.get("md").features(image, prompt)
        return self._source_features[key]

    def next_sample(self) -> None:
        """Forget cached source features (runs are evaluated sample by sample, so memory stays flat)."""
        self._source_features.clear()


def evaluate_sample(record: dict, ev: Evaluators) -> dict:
    """Metric values of one finished sample: {"md_distances": [...], "if": …, "dai_1": …, "gscore_like": …}."""
    from ..metrics.dai import dai_all

    sample_dir = record["_dir"]
    req = record["request"]
    original = load_image(sample_dir / req["image"])
    edited = load_image(sample_dir / "dragged_image.png")
    if edited.size != original.size:  # as the reference: the edited image is bilinearly resized to the source
        edited = edited.resize(original.size, Image.BILINEAR)
    handles, targets = req["handles"], req["targets"]
    out: dict = {}
    if "md" in ev.metrics:
        from ..metrics.mean_distance import point_distances

        dift = ev.get("md")
        src = ev.source_features(original, req.get("prompt", ""))
        dst = dift.features(edited, req.get("prompt", ""))
        out["md_distances"] = point_distances(src, dst, handles, targets, (original.size[1], original.size[0]))
    if "if" in ev.metrics:
        from ..metrics.lpips import image_fidelity

        out["if"] = image_fidelity(ev.get("if"), original, edited)
    if "dai" in ev.metrics:
        stored = {k: v for k, v in record.get("metrics", {}).items() if k.startswith("dai_")}
        out.update(stored or dai_all(original, edited, handles, targets))
    if "gscore" in ev.metrics:
        judged = ev.get("gscore").score(original, edited, repeats=ev.judge_repeats)
        out["gscore_like"] = judged.mean
        out["gscore_like_std"] = judged.std
    return out


def aggregate(values: list[dict]) -> dict:
    """Overall numbers over a list of per-sample metric dicts (MD over all pairs, the rest over images)."""
    agg: dict = {"samples": len(values)}
    pairs = [d for v in values for d in v.get("md_distances", [])]
    if pairs:
        agg["md"] = statistics.fmean(pairs)
        agg["pairs"] = len(pairs)
    keys = sorted({k for v in values for k in v if k not in ("md_distances", "gscore_like_std")})
    for k in keys:
        xs = [v[k] for v in values if v.get(k) is not None]
        if xs:
            agg[k] = statistics.fmean(xs)
    return agg


def run_report(run: Run, per_sample: dict[str, tuple[Optional[str], dict]]) -> dict:
    """The report entry of one run from its per-sample metric values {sample id: (category, values)}."""
    values = [v for _, v in per_sample.values()]
    categories = sorted({c for c, _ in per_sample.values() if c})
    timings = [r["timings"]["total"] for r in run.results if r.get("timings", {}).get("total") is not None]
    return {
        "run": str(run.path), "label": run.label, "dataset": run.meta.get("dataset"), "method": run.meta.get("method"),
        "model": run.meta.get("model"), "dai_normalisation": run.meta.get("dai"), "failed": run.failed,
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
    keys = {k for r in reports for scope in [r["overall"], *r["per_category"].values()] for k in scope}
    order = ["md", "if", "dai_1", "dai_5", "dai_10", "dai_20", "gscore_like"]
    rest = sorted(k for k in keys if k not in order and k not in ("samples", "pairs"))
    return [k for k in order if k in keys] + rest


def format_value(value) -> str:
    """A table cell: 4 significant digits for floats, "–" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_markdown(reports: list[dict]) -> str:
    cols = metric_columns(reports)
    head = "| run | method | samples | pairs | " + " | ".join(cols) + " |"
    sep = "|" + "---|" * (4 + len(cols))
    lines = ["# Benchmark report", "",
             "MD: Mean Distance (px, ↓, DIFT, over all point pairs) · IF: 1 − LPIPS-Alex (↑) · "
             "dai_γ: Dragging Accuracy Index (↓) · gscore_like: GScore-like judge (1–10, ↑).", "", "## Overall", "",
             head, sep]
    for r in reports:
        o = r["overall"]
        lines.append(f"| {r['label']} | {r['method']} | {o['samples']} | {o.get('pairs', '–')} | "
                     + " | ".join(format_value(o.get(c)) for c in cols) + " |")
    failed = [(r["label"], r["failed"]) for r in reports if r["failed"]]
    for label, ids in failed:
        lines += ["", f"{label}: {len(ids)} failed sample(s) not counted: {', '.join(ids)}"]
    categories = sorted({c for r in reports for c in r["per_category"]})
    for c_metric in cols if categories else []:
        lines += ["", f"## {c_metric} per category", "",
                  "| category | " + " | ".join(r["label"] for r in reports) + " |",
                  "|" + "---|" * (1 + len(reports))]
        for cat in categories:
            lines.append(f"| {cat} | " + " | ".join(format_value(r["per_category"].get(cat, {}).get(c_metric))
                                                   for r in reports) + " |")
    return "\n".join(lines) + "\n"


def write_csv(reports: list[dict], path: Path) -> None:
    cols = metric_columns(reports)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "method", "dataset", "category", "samples", "pairs", *cols])
        for r in reports:
            scopes = [("all", r["overall"]), *sorted(r["per_category"].items())]
            for cat, values in scopes:
                writer.writerow([r["label"], r["method"], r["dataset"], cat, values.get("samples"),
                                 values.get("pairs", ""), *["" if values.get(c) is None else values[c] for c in cols]])


def write_report(reports: list[dict], out_dir: str | Path) -> list[Path]:
    """report.md, report.csv, report.json and the plots into ``out_dir``; returns the written paths."""
    from .plots import category_bars, md_vs_if

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_json_atomic({"runs": reports}, out_dir / "report.json")
    write_csv(reports, out_dir / "report.csv")
    md = to_markdown(reports)
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
