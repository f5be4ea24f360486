"""CPU threads under load: the same short shapes edit with each threading option, one fresh process per run, one run
at a time, with the machine's load average before each run (issue 23; the numbers are in README "CPU threads").

    python scripts/threads_benchmark.py                       # 10 LoRA + 10 drag steps, every option, 2 repeats
    python scripts/threads_benchmark.py --modes default,one --repeats 1 --lora-steps 80 --steps 80

Options (``--modes``):

* ``default`` — torch's default intra-op thread count (one per core), the edit on the main thread;
* ``one`` — ``torch.set_num_threads(1)``, main thread (what ``--threads 1`` does);
* ``passive`` — the default thread count with ``OMP_WAIT_POLICY=passive`` (idle OpenMP workers sleep, not spin);
* ``worker`` — the default thread count, the edit in a worker thread (as the web app runs it).

Each line: the option, torch's thread count, the edit's seconds (model loading excluded) and ``/proc/loadavg``'s
1-minute figure before and after. Nothing is written besides a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("default", "one", "passive", "worker")


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def child(args: argparse.Namespace) -> None:
    import threading

    import numpy as np
    import torch
    from PIL import Image

    from dragkit import DragEditor, DragRequest
    from dragkit.config import apply_overrides, default_config
    from dragkit.shapes.model import default_model_path

    if args.mode == "one":
        torch.set_num_threads(1)
    editor = DragEditor.from_pretrained(default_model_path(), device="cpu")
    image = Image.open(args.scene).convert("RGB")
    mask = np.asarray(Image.open(args.scene.replace(".png", ".mask.png")).convert("L")) > 0
    request = DragRequest(image, [(15, 16)], [(10, 33)], mask, "yellow disc, stripes background")
    config = apply_overrides(default_config("dragdiffusion"),
                             [f"lora_steps={args.lora_steps}", f"optimization_steps={args.steps}"])
    before = loadavg()
    out: dict = {}

    def run() -> None:
        start = time.perf_counter()
        out["result"] = editor.edit(request, config)
        out["seconds"] = time.perf_counter() - start

    if args.mode == "worker":
        t = threading.Thread(target=run)
        t.start()
        t.join()
    else:
        run()
    print(json.dumps({"mode": args.mode, "threads": torch.get_num_threads(), "seconds": round(out["seconds"], 1),
                      "timings": {k: round(v, 1) for k, v in out["result"].timings.items()},
                      "load_before": before, "load_after": loadavg()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--lora-steps", type=int, default=10)
    p.add_argument("--steps", type=int, default=10, help="optimization_steps")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--scene", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        scene = str(Path(tmp) / "scene.png")
        subprocess.run([sys.executable, "-m", "dragkit", "shapes", "example", "--out", scene], check=True,
                       stdout=subprocess.DEVNULL)
        for _ in range(args.repeats):
            for mode in args.modes.split(","):
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
                if mode == "passive":
                    env["OMP_WAIT_POLICY"] = "passive"
                cmd = [sys.executable, __file__, "--mode", mode, "--scene", scene, "--lora-steps",
                       str(args.lora_steps), "--steps", str(args.steps)]
                line = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                print(line.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
