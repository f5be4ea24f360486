"""Kept for old command lines: ``python scripts/benchmark.py ARGS`` is ``dragkit bench speed ARGS``
(:mod:`dragkit.benchmark.speed`, where the benchmark lives)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dragkit.benchmark.speed import *  # noqa: E402,F401,F403  (markdown, warm_summary, … for old imports)
from dragkit.benchmark.speed import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
