"""``dragkit bench``: run a method over a benchmark dataset, and report metrics of finished runs.

    dragkit bench dragbench --data DragBench --method dragdiffusion --out runs/dd
    dragkit bench drag100 --data Drag100 --method gooddrag --out runs/gd
    dragkit bench report runs/dd runs/gd --out report --metrics md,m-md,if,if-bg,dai --repeats 3
    dragkit bench shapes --method dragdiffusion --method gooddrag --n 100 --out runs/shapes --ablations
    dragkit bench shapes --method dragdiffusion --sweep inversion_strength=0.5,0.6,0.7,0.8 --n 30 --out runs/sweep
    dragkit bench shapes --out runs/shapes --rescore              # re-measure a finished run from its saved images
    dragkit bench dragbench --data DragBench --out runs/dd --ray auto --gpus-per-worker 1     # on a Ray cluster
    dragkit bench speed --warm --threads 1        # per-stage seconds, UNet calls and peak memory of every method

Each benchmark is a sub-command added by one function in ``SUBCOMMANDS``; every dataset of
:data:`dragkit.datasets.DATASETS` gets a runner.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

from ..types import DragError
from .common import add_method_options, add_model_options, build_config, load_editor, positive_int

logger = logging.getLogger(__name__)


def _add_dataset_runner(sub, dataset: str, title: str) -> None:
    p = sub.add_parser(dataset, help=f"run a method over {title}",
                       description=f"Edit every {title} sample (identity LoRA cached per sample) into RUN_DIR; "
                                   "re-running resumes, failing samples are recorded and skipped.")
    p.add_argument("--data", required=True, help=f"{title} folder (original layout)")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run folder: <sample id>/dragged_image.png + result.json")
    p.add_argument("--lora-cache", default=None, metavar="DIR",
                   help="identity-LoRA cache shared by runs (default: RUN_DIR/../lora_cache)")
    p.add_argument("--shard", default=None, metavar="i/n", help="run only samples i, i+n, i+2n… (0 <= i < n)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="only the first N samples")
    p.add_argument("--resize", type=positive_int, default=None, metavar="W",
                   help="resize samples to W pixels wide first (quick runs; points and mask scaled; MD is then in "
                        "resized pixels, not comparable to published MD)")
    p.add_argument("--dai-plain", action="store_true",
                   help="DAI as the plain mean over pairs (default: the official code's double division by N)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_options(p)
    add_method_options(p)
    add_cluster_options(p)
    p.set_defaults(func=run_dataset, dataset=dataset)


def add_cluster_options(p) -> None:
    g = p.add_argument_group("Ray cluster (pip install 'dragkit[cluster]')")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="spread the edits over a Ray cluster: ADDRESS of a running one (auto, HOST:6379, "
                        "ray://HOST:10001), or none to start a local one; the model loads once per worker")
    g.add_argument("--workers", type=positive_int, default=None,
                   help="Ray workers (default: as many as the cluster's GPUs, or CPUs without GPUs, allow)")
    g.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="GPUs per worker (default: 1 when the cluster has GPUs, else 0)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                   help="CPUs per worker, also its torch threads (default: %(default)s)")


def ray_pool(args: argparse.Namespace, lora_cache_dir: str):
    """A :class:`~dragkit.benchmark.cluster.RayPool` whose workers load the editor as this command would, or None
    without ``--ray`` (a one-line error when Ray is not installed)."""
    if args.ray is None:
        return None
    from ..benchmark.cluster import RayPool

    options = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "func"})
    for name in ("model", "model_config", "vae", "style_lora"):  # workers may start in another folder
        value = getattr(options, name, None)
        if value and Path(value).expanduser().exists():
            setattr(options, name, str(Path(value).expanduser().resolve()))
    load = functools.partial(load_editor, options, lora_cache_dir=str(Path(lora_cache_dir).resolve()))
    return RayPool(load, address=args.ray or None, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                   cpus_per_worker=args.cpus_per_worker)


def _add_report(sub) -> None:
    from ..benchmark.report import DEFAULT_METRICS, METRICS
    from ..hub import DIFT_MODEL

    p = sub.add_parser("report", help="metrics of finished runs, side by side",
                       description="Evaluate runs and write report.md, report.csv, report.json and PNG plots.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="REPORT_DIR")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated, from {', '.join(METRICS)} (default: %(default)s)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu for MD/IF models (default: the best available)")
    p.add_argument("--repeats", type=positive_int, default=1, metavar="N",
                   help="evaluate MD, m-MD and the judge N times (per-sample seeds 0..N-1 of a hash of the sample "
                        "id) and report mean ± std (default: %(default)s)")
    g = p.add_argument_group("Mean Distance and m-MD (DIFT)")
    g.add_argument("--dift-model", default=DIFT_MODEL,
                   help="diffusers model (Hub id or local folder) for DIFT features (default: %(default)s)")
    g.add_argument("--dift-ensemble", type=positive_int, default=8, help="noise draws (default: %(default)s)")
    g.add_argument("--dift-timestep", type=int, default=261, help="noise timestep (default: %(default)s)")
    g.add_argument("--dift-block", type=int, default=1, help="UNet up block used (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    j = p.add_argument_group("GScore-like judge (OpenAI-compatible chat completions)")
    j.add_argument("--judge-url", default=None, help="base URL, e.g. https://api.openai.com/v1 (or DRAGKIT_JUDGE_URL)")
    j.add_argument("--judge-model", default=None, help="model name (or DRAGKIT_JUDGE_MODEL)")
    j.add_argument("--judge-repeats", type=positive_int, default=10, help="asks per image (default: %(default)s)")
    j.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)")
    d = p.add_argument_group("drag-back (a second edit per sample: the run's method, config and seed)")
    d.add_argument("--model", default=None,
                   help="model that drags back (default: the model each run recorded in run.json)")
    d.add_argument("--lora-cache", default=None, metavar="DIR", help="identity-LoRA cache of the drag-back edits")
    p.set_defaults(func=run_report)


def _add_shapes(sub) -> None:
    from ..shapes.bench import method_names

    p = sub.add_parser("shapes", help="move-this-object tasks with ground truth, on the toy shapes model",
                       description="Seeded tasks 'move this object by this offset' on procedural scenes; measures "
                                   "drag error, background PSNR, shape IoU, ghost and hole PSNR against the exact "
                                   "ground truth. Writes DIR/summary.json, results.jsonl, table.md, table.csv, "
                                   "plot.png and the edited images; re-running resumes. The identity row (no edit) is "
                                   "always included.")
    p.add_argument("--method", dest="methods", action="append", choices=method_names(), default=None,
                   help="method to run (repeatable; default: dragdiffusion and gooddrag)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="config override, applied to every method that has the field (repeatable)")
    p.add_argument("--ablations", action="store_true",
                   help="add the ablation rows of each method (no-lora, no-refattn; GoodDrag also no-ipms, no-aldd)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="number of tasks (default: 100; with --rescore: every task in DIR)")
    p.add_argument("--seed", type=int, default=0, help="task set and LoRA-noise seed (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--lora-cache", default=None, metavar="DIR", help="identity-LoRA cache (default: DIR/lora_cache)")
    p.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="FIELD=v1,v2,...",
                   help="one row per value of a config field, for every method that has it, and sweep_FIELD.png "
                        "(repeatable: each field swept on its own; replaces the plain method rows)")
    p.add_argument("--rescore", action="store_true",
                   help="edit nothing and load no model: recompute every record's metrics in DIR from its saved "
                        "images, rewrite results.jsonl and the summary files (the summary over the first --n tasks, "
                        "default every task in DIR); the method options are not used")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_options(p, default_model=None, default_model_help="the shipped shapes model")
    add_cluster_options(p)
    p.set_defaults(func=run_shapes)


SUBCOMMANDS = [
    lambda sub: _add_dataset_runner(sub, "dragbench", "DragBench"),
    lambda sub: _add_dataset_runner(sub, "drag100", "Drag100"),
    _add_report,
    _add_shapes,
    lambda sub: _add_speed(sub),
]


def _add_speed(sub) -> None:
    from ..benchmark.speed_options import add_arguments

    p = sub.add_parser("speed", help="per-stage seconds, UNet calls and peak memory of an edit, every method",
                       description="Time a cold edit (and with --warm the preparation and warm re-edits) of every "
                                   "method on the tiny offline model or a full-size random-weight architecture; "
                                   "rows as a table and --json (docs/performance.md).")
    add_arguments(p)
    p.set_defaults(func=run_speed)


def run_speed(args: argparse.Namespace) -> int:
    """Print the speed benchmark's report; exit 1 when a run failed (an error row)."""
    from ..benchmark.speed import run_speed as run

    rows, report = run(args)
    print("\n".join(report))
    return 1 if any("error" in r for r in rows) else 0


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark runs and reports",
                       description="Run methods over DragBench / Drag100 (compare them with MD, IF, DAI, GScore-like) "
                                   "or over the shapes tasks (ground-truth metrics).")
    bench_sub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    bench_sub.required = True
    for add in SUBCOMMANDS:
        add(bench_sub)


class _SampleBar:
    """Outer progress bar over samples (with ETA), drawn on stderr."""

    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="samples", unit="sample", disable=not enabled, file=sys.stderr)
        self.failed = 0

    def __call__(self, sample_id: str, status: str) -> None:
        self.failed += status == "failed"
        self.bar.set_postfix_str(f"{sample_id} {status}" + (f", {self.failed} failed" if self.failed else ""),
                                 refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_dataset(args: argparse.Namespace) -> int:
    from ..benchmark.runner import check_run, parse_shard, run_benchmark, run_meta, select_ids
    from ..datasets import sample_ids

    out = Path(args.out)
    cache = Path(args.lora_cache) if args.lora_cache else out.resolve().parent / "lora_cache"
    pool = ray_pool(args, str(cache))  # without Ray installed, --ray fails first
    config = build_config(args)
    shard = parse_shard(args.shard)
    ids = select_ids(sample_ids(args.dataset, args.data), args.limit, shard)
    check_run(out, run_meta(args.dataset, args.data, config, args.model, args.seed, args.resize,
                            not args.dai_plain))  # before loading the model: a mismatch fails at once
    editor = load_editor(args, lora_cache_dir=str(cache)) if pool is None else None
    bar = _SampleBar(len(ids), enabled=not args.no_progress)
    try:
        summary = run_benchmark(editor, config, args.dataset, args.data, out, model=args.model, seed=args.seed,
                                resize=args.resize, limit=args.limit, shard=shard, dai_official=not args.dai_plain,
                                on_sample=bar, pool=pool)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
    print(f"{out}: {len(summary.done)} edited, {len(summary.skipped)} already done, {len(summary.failed)} failed")
    if args.resize:
        print(f"{out}: resized to {args.resize} px wide: its MD is in resized pixels, not comparable to published MD")
    for sid, message in summary.failed.items():
        print(f"  failed {sid}: {message}", file=sys.stderr)
    return 1 if summary.failed else 0


def report_evaluators(args: argparse.Namespace, metrics: tuple[str, ...]):
    """The :class:`Evaluators` of ``bench report``: DIFT, LPIPS, the judge and the drag-back editor as the options
    say, each loaded on first use."""
    from ..benchmark.report import Evaluators

    def dift():
        from ..metrics.mean_distance import DiftFeaturizer

        return DiftFeaturizer.from_pretrained(args.dift_model, device=args.device, timestep=args.dift_timestep,
                                              block=args.dift_block, ensemble=args.dift_ensemble)

    def lpips():
        from ..metrics.lpips import load_lpips
        from ..models import select_device

        return load_lpips(device=select_device(args.device))

    def judge():
        from ..metrics.gscore import JudgeClient

        return JudgeClient.from_env(args.judge_url, args.judge_model, timeout=args.judge_timeout)

    def editor(model: str):
        from ..editor import DragEditor

        return DragEditor.from_pretrained(model, device=args.device, lora_cache_dir=args.lora_cache)

    return Evaluators(metrics, dift, lpips, judge, judge_repeats=args.judge_repeats, repeats=args.repeats,
                      editor_factory=editor, drag_back_model=args.model)


def run_report(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..benchmark.report import METRICS, evaluate_runs, load_run, write_report

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise DragError(f"--metrics: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRICS)}")
    runs = [load_run(r) for r in args.runs]
    ev = report_evaluators(args, metrics)
    # every model loads before the first sample: a missing one fails at once, in one line
    if "gscore" in metrics:
        ev.get("gscore")
    if {"md", "m-md"} & set(metrics):
        ev.get("md")
    if {"if", "if-bg", "drag-back"} & set(metrics):
        ev.get("if")
    if "drag-back" in metrics:
        for run in runs:
            ev.editor(ev.drag_back_model_of(run.meta))
    with tqdm(total=sum(len(run.results) for run in runs), desc="evaluate", unit="image", file=sys.stderr,
              disable=args.no_progress) as bar:
        reports = evaluate_runs(runs, ev, on_sample=lambda sid: bar.update(1))
    for path in write_report(reports, args.out, ev.describe()):
        print(path)
    return 0


def run_shapes(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..shapes.bench import build_variants, run_shapes_benchmark
    from ..shapes.tasks import make_tasks
    from .common import ProgressBars

    if args.rescore:
        return rescore_shapes(args)
    args.n = args.n or 100
    variants = build_variants(args.methods or ["dragdiffusion", "gooddrag"], args.overrides, args.ablations,
                              args.sweeps)
    model = None
    if any(v.config is not None for v in variants):
        from ..shapes.model import default_model_path

        model = args.model or default_model_path()
        args.model = model
    out = Path(args.out)
    tasks = make_tasks(args.n, args.seed)
    cache = args.lora_cache or str(out / "lora_cache")
    bars = ProgressBars(enabled=not args.no_progress)
    pool = ray_pool(args, cache)
    with tqdm(total=len(variants) * len(tasks), desc="edits", unit="edit", file=sys.stderr,
              disable=args.no_progress or not sys.stderr.isatty()) as outer:
        def on_task(label, task_id, status):
            bars.close()
            outer.set_postfix_str(f"{label} {task_id} {status}", refresh=False)
            outer.update(1)

        try:
            summary = run_shapes_benchmark(lambda: load_editor(args, lora_cache_dir=cache), variants, tasks, out,
                                           seed=args.seed, model=model, callback=bars, on_task=on_task, pool=pool)
        finally:
            if pool is not None:
                pool.close()
    bars.close()
    print((out / "table.md").read_text().split("\n\n", 2)[-1].rstrip())
    return 0 if summary else 1


def rescore_shapes(args: argparse.Namespace) -> int:
    """``bench shapes --rescore``: re-measure the run in ``--out`` from its saved images; prints its table."""
    from ..shapes.bench import rescore_run

    unused = [name for name, given in (("--method", args.methods), ("--set", args.overrides),
                                       ("--ablations", args.ablations), ("--sweep", args.sweeps)) if given]
    if unused:
        logger.warning("--rescore re-measures every record in %s as it is: %s not used", args.out, ", ".join(unused))
    out = Path(args.out)
    task_ids = None if args.n is None else [f"{i:03d}" for i in range(args.n)]
    summary = rescore_run(out, task_ids)
    print((out / "table.md").read_text().split("\n\n", 2)[-1].rstrip())
    return 0 if summary else 1
