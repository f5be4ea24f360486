"""``dragkit shapes``: the miniature world — train the toy model, measure its quality bar.

    dragkit shapes train --work runs/shapes-train --export src/dragkit/shapes/weights
    dragkit shapes quality --out docs/shapes

The benchmark itself is ``dragkit bench shapes``.
"""

from __future__ import annotations

import argparse
import json
import logging

from ..types import DragError
from .common import positive_int

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("shapes", help="the shapes world: train the toy model, measure its quality",
                       description=__doc__.split("\n\n")[0])
    s = p.add_subparsers(dest="shapes_command", metavar="ACTION")
    s.required = True

    t = s.add_parser("train", help="train the toy model from scratch (resumable)",
                     description="Train VAE, then UNet + text encoder, on procedural scenes; re-running the same "
                                 "command resumes from the checkpoints in --work.")
    t.add_argument("--work", required=True, help="folder for resumable checkpoints (vae.pt, unet.pt)")
    t.add_argument("--export", default=None, help="write the trained diffusers folder here (fp16 safetensors)")
    t.add_argument("--vae-steps", type=positive_int, default=8000, help="default: %(default)s")
    t.add_argument("--unet-steps", type=positive_int, default=6000, help="default: %(default)s")
    t.add_argument("--vae-batch", type=positive_int, default=16, help="default: %(default)s")
    t.add_argument("--unet-batch", type=positive_int, default=16, help="default: %(default)s")
    t.add_argument("--vae-crop", type=positive_int, default=32,
                   help="VAE trains on crops of this size (default: %(default)s)")
    t.add_argument("--checkpoint-every", type=positive_int, default=200, help="default: %(default)s")
    t.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=run_train)

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


def run_train(args: argparse.Namespace) -> int:
    import torch

    from ..shapes.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("dragkit").setLevel(logging.INFO)
    train(args.work, args.export, args.vae_steps, args.unet_steps, args.vae_batch, args.unet_batch,
          args.checkpoint_every, not args.no_progress, args.vae_crop)
    return 0


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
