"""``dragkit shapes``: the miniature world — an example to edit offline, train the toy model, measure its quality.

    dragkit shapes example --out scene.png          # prints a ready `dragkit edit scene.png --model shapes ...`
    dragkit shapes train --work runs/shapes-train --export src/dragkit/shapes/weights
    dragkit shapes quality --out docs/shapes

The benchmark itself is ``dragkit bench shapes``.
"""

from __future__ import annotations

import argparse
import json
import logging

from ..shapes import train_command
from ..types import DragError
from .common import positive_int, resolve_model

EXAMPLE_TASK = 6  # a yellow disc on stripes, to be moved 18 px down: one object, an unmistakable result

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("shapes", help="the shapes world: `shapes example` (a first edit, offline), train the toy "
                                      "model, measure its quality",
                       description=__doc__.split("\n\n")[0])
    s = p.add_subparsers(dest="shapes_command", metavar="ACTION")
    s.required = True

    e = s.add_parser("example", help="write an example scene and its mask, and print a ready `dragkit edit` command",
                     description="Write a 64x64 scene of the shapes world (OUT) and the region that may change "
                                 "(OUT_STEM.mask.png), and print the `dragkit edit` command that moves its object "
                                 "with the shipped model (--model shapes): no download, no network.")
    e.add_argument("--out", required=True, help="the scene image (.png)")
    e.add_argument("--task", type=int, default=EXAMPLE_TASK,
                   help="which task of the shapes benchmark's task set 0 (default: %(default)s)")
    e.set_defaults(func=run_example)

    t = s.add_parser("train", help="train the toy model from scratch (resumable)",
                     description=train_command.DESCRIPTION)
    train_command.add_train_arguments(t)  # also sets func (python -m dragkit.shapes.train takes the same options)

    q = s.add_parser("quality", help="VAE / inversion reconstruction PSNR on held-out scenes and a sample grid",
                     description="Write quality.json and samples.png (rows: held-out scene, sample for its caption).")
    q.add_argument("--model", default=None, help="diffusers folder or 'shapes' (default: the shipped shapes model)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--n-vae", type=positive_int, default=200,
                   help="held-out scenes for the VAE (default: %(default)s)")
    q.add_argument("--n-inversion", type=positive_int, default=50,
                   help="held-out scenes for inversion + denoising (default: %(default)s)")
    q.add_argument("--guidance", type=float, default=3.0, help="CFG scale of the samples (default: %(default)s)")
    q.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    q.set_defaults(func=run_quality)


def run_quality(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from ..io import save_image_atomic, save_json_atomic
    from ..models import DiffusionModel
    from ..shapes.model import default_model_path
    from ..shapes.quality import measure, sample_grid

    model_path = resolve_model(args.model) or default_model_path()
    if not Path(model_path).is_dir():
        raise DragError(f"not a model folder: {model_path}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = DiffusionModel.from_pretrained(model_path, device=args.device, dtype="fp32")
    report = asdict(measure(model, args.n_vae, args.n_inversion))
    report["model"] = args.model or "dragkit/shapes/weights (shipped)"
    save_json_atomic(report, out / "quality.json")
    save_image_atomic(sample_grid(model, guidance=args.guidance), out / "samples.png")
    print(json.dumps(report, indent=1))
    return 0


def run_example(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from PIL import Image

    from ..io import check_outputs, write_image
    from ..shapes.tasks import make_tasks
    from .common import write_outputs

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise DragError(f"--out {out}: the scene is written as a .png")
    if not 0 <= args.task < 1000:
        raise DragError(f"--task {args.task}: choose 0-999")
    mask_path = out.with_name(f"{out.stem}.mask.png")
    edited = out.with_name(f"{out.stem}-edited.png")
    check_outputs({"--out": out, "its mask": mask_path})
    task = make_tasks(args.task + 1)[args.task]
    scene, mask = Image.fromarray(task.image()), Image.fromarray(task.mask.astype("uint8") * 255)
    write_outputs({out: lambda tmp: write_image(scene, tmp, out), mask_path: lambda tmp: write_image(mask, tmp, out)})
    (hx, hy), (tx, ty) = task.handle, task.target
    command = ["dragkit", "edit", str(out), "--model", "shapes", "--drag", f"{hx:.0f},{hy:.0f}:{tx:.0f},{ty:.0f}",
               "--mask", str(mask_path), "--prompt", task.prompt, "--out", str(edited)]
    print(f"# wrote {out} ({task.prompt}) and {mask_path}; edit it with the shipped model:")
    print(shlex.join(command))
    return 0
