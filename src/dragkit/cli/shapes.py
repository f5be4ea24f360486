"""``dragkit shapes``: the miniature world — train the toy model, measure its quality bar.

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
from .common import positive_int

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("shapes", help="the shapes world: train the toy model, measure its quality",
                       description=__doc__.split("\n\n")[0])
    s = p.add_subparsers(dest="shapes_command", metavar="ACTION")
    s.required = True

    t = s.add_parser("train", help="train the toy model from scratch (resumable)",
                     description=train_command.DESCRIPTION)
    train_command.add_train_arguments(t)  # also sets func (python -m dragkit.shapes.train takes the same options)

    q = s.add_parser("quality", help="VAE / inversion reconstruction PSNR on held-out scenes and a sample grid",
                     description="Write quality.json and samples.png (rows: held-out scene, sample for its caption).")
    q.add_argument("--model", default=None, help="diffusers folder (default: the shipped shapes model)")
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

    model_path = args.model or default_model_path()
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
