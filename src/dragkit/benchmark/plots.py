"""PNG plots of a report (matplotlib, Agg backend): MD vs IF with one point per run, and per-category bars."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..io import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display); ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path``, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def md_vs_if(reports: list[dict], path: Path) -> Optional[Path]:
    """Scatter of Mean Distance (x, ↓) against Image Fidelity (y, ↑), one labelled point per run, MD's ± std over
    repeats as error bars; None without data."""
    points = [(r["label"], r["overall"]["md"], r["overall"]["if"], r["overall"].get("md_std")) for r in reports
              if r["overall"].get("md") is not None and r["overall"].get("if") is not None]
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    try:
        for label, md, fid, md_std in points:
            ax.errorbar(md, fid, xerr=md_std, fmt="o", markersize=6, capsize=3)  # ± std over repeats, if any
            ax.annotate(label, (md, fid), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel("Mean Distance (px) ↓")
        ax.set_ylabel("Image Fidelity (1 − LPIPS) ↑")
        ax.set_title("better: upper left")
        ax.ticklabel_format(useOffset=False)
        ax.grid(alpha=0.3)
        return save_png(fig, path)
    finally:
        plt.close(fig)


def category_bars(reports: list[dict], metric: str, path: Path) -> Optional[Path]:
    """Grouped bars of ``metric`` per category, one bar colour per run (± std over repeats as error bars where there
    is one); None when no run has categories."""
    categories = sorted({c for r in reports for c, v in r["per_category"].items() if v.get(metric) is not None})
    if not categories:
        return None
    plt = pyplot()
    width = 0.8 / len(reports)
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(categories) + 2), 4))
    try:
        for i, r in enumerate(reports):
            scopes = [r["per_category"].get(c, {}) for c in categories]
            xs = [k + (i - (len(reports) - 1) / 2) * width for k in range(len(categories))]
            kept = [(x, s[metric], s.get(f"{metric}_std") or 0.0) for x, s in zip(xs, scopes)
                    if s.get(metric) is not None]
            ax.bar([x for x, _, _ in kept], [v for _, v, _ in kept], width=width, label=r["label"],
                   yerr=[e for _, _, e in kept] if any(e for _, _, e in kept) else None, capsize=2)
        ax.set_xticks(range(len(categories)))
        ax.set_xticklabels(categories, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        return save_png(fig, path)
    finally:
        plt.close(fig)
