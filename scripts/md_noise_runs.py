"""Build the two no-model runs that show how Mean Distance's DIFT noise is seeded (issue 24), and the tiny DIFT model.

- ``identity``: every edited image *is* the original (the method did nothing). Its MD is the "no-move" distance
  |handle − target| averaged over pairs when the original and the edited image share DIFT noise (identical inputs,
  identical features, every handle matches itself); with independent noise, as the official evaluator, it is not.
- ``shifted``: every edited image is the original moved cyclically by (SHIFT_X, SHIFT_Y) = (4, 3) px (5 px) — a
  tiny edit that ignores the drag. Targets stay the dataset's.

Both go through the real runner (``run.json``, ``result.json``, ``mask.png``), so ``dragkit bench report`` evaluates
them exactly as a method's runs. Then, offline and single-threaded::

    python scripts/md_noise_runs.py --data /work/shared/data/dragbench_dev --out /tmp/md24
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 dragkit bench report /tmp/md24/identity /tmp/md24/shifted \\
        --out /tmp/md24/report --metrics md --dift-model /tmp/md24/tiny --device cpu --repeats 2 --no-progress

The tiny model (:func:`dragkit.testing.save_tiny_model`, seed 0) is random: its features are mostly noise, which
exaggerates the effect of shared noise; the numbers say how the seeding works, not how SD 2.1 scores.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from dragkit.benchmark.runner import run_benchmark
from dragkit.config import METHODS
from dragkit.testing import save_tiny_model
from dragkit.types import DragResult

logger = logging.getLogger("md_noise_runs")

SHIFT_X, SHIFT_Y = 4, 3


def shifted(image: Image.Image, dx: int, dy: int) -> Image.Image:
    """``image`` moved cyclically by (dx, dy) pixels (content at (x, y) lands on (x + dx, y + dy))."""
    return Image.fromarray(np.roll(np.asarray(image), (dy, dx), axis=(0, 1)))


class FixedEditor:
    """An "editor" that returns the input moved by a fixed (dx, dy): (0, 0) is the identity edit."""

    def __init__(self, dx: int = 0, dy: int = 0):
        self.dx, self.dy = dx, dy

    def edit(self, request, config, callback=None, seed=0):
        return DragResult(shifted(request.image, self.dx, self.dy), list(request.handles), [],
                          timings={"total": 0.0})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="DragBench folder")
    p.add_argument("--out", required=True, help="folder for identity/, shifted/ and tiny/")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    if not (out / "tiny" / "model_index.json").is_file():
        save_tiny_model(out / "tiny")
    config = METHODS["dragdiffusion"]()
    for name, editor in (("identity", FixedEditor()), ("shifted", FixedEditor(SHIFT_X, SHIFT_Y))):
        summary = run_benchmark(editor, config, "dragbench", args.data, out / name, model="none")
        logger.info("%s: %d written, %d already there, %d failed", out / name, len(summary.done),
                    len(summary.skipped), len(summary.failed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
