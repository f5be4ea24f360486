"""The options of ``dragkit bench speed`` (:mod:`dragkit.benchmark.speed`), importable without torch: the CLI builds
its parser from them at every start."""

from __future__ import annotations

import argparse

from ..config import method_names

MAX_REEDITS = 3  # warm re-edits with their own points: len(speed.WARM_POINTS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``dragkit bench speed`` (and of ``scripts/benchmark.py``, its wrapper)."""
    p.add_argument("--model", help="model to load (default: the tiny offline model)")
    p.add_argument("--arch", choices=["tiny", "sd15", "sdxl"], default="tiny",
                   help="random-weight architecture to build (sdxl: use --size 1024)")
    p.add_argument("--device")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--method", action="append", choices=method_names())
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's, which honours $OMP_NUM_THREADS; 1 on "
                   "a machine shared with other jobs, where oversubscribed threads slow everything down)")
    p.add_argument("--warmup", action="store_true", help="one short edit first (CUDA kernels, allocator; with "
                   "--compile it also compiles, so the cold edit no longer includes that)")
    p.add_argument("--warm", nargs="?", const="all", metavar="METHODS",
                   help="after the cold edit: editor.prepare (timed) and --reedits warm re-edits with new points; "
                   "with a comma list, for those methods only (e.g. the one-step methods beside one long cold edit)")
    p.add_argument("--reedits", type=int, default=1, choices=range(1, MAX_REEDITS + 1),
                   help="warm re-edits per method with --warm (default: %(default)s)")
    p.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                   help="torch.compile the UNet first (default backend: inductor; 'eager' only traces)")
    p.add_argument("--no-mask", action="store_true", help="no mask (DragDiffusion's drag forwards then stop at the "
                   "feature block: partial forwards)")
    p.add_argument("--json", help="write the rows as JSON here (after every row)")
    p.add_argument("--append", action="store_true", help="keep the rows --json already holds, add this run's after "
                   "them (several runs in one file: scripts/device_check.sh's rows)")
    p.add_argument("--flops", action="store_true", help="count FLOPs instead of timing: TFLOP per stage of a cold "
                   "edit and a warm re-edit of every --method, on --arch sd15|sdxl built on the meta device (nothing "
                   "is computed), at --size")
    g = p.add_argument_group("generated-image mode")
    g.add_argument("--generated", action="store_true",
                   help="time a generation, then the drag of the generated image (no LoRA, no inversion)")
    g.add_argument("--sizes", help="WxH list for --generated, e.g. 768x512,512x1024 (default: --size square)")
    g.add_argument("--guidance", type=float, default=7.5, help="CFG scale of the generation (default: %(default)s)")
    g.add_argument("--scheduler", default="ddim", help="sampler of the generation (default: %(default)s)")

