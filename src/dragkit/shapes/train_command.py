"""The training command of the shapes model, shared by ``dragkit shapes train`` and ``python -m dragkit.shapes.train``
(:func:`main`).

Light: the options are declared without torch (``--help`` stays fast); :mod:`.train` loads when the command runs.
The import goes one way, command → training: :mod:`.train` imports this module only when it runs as the program.
"""

from __future__ import annotations

import argparse
import logging
from typing import Optional

from ..io import positive_int

DESCRIPTION = ("Train VAE, then UNet + text encoder, on procedural scenes; re-running the same command resumes from "
               "the checkpoints in --work.")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work", required=True, help="folder for resumable checkpoints (vae.pt, unet.pt)")
    p.add_argument("--export", default=None, help="write the trained diffusers folder here (fp16 safetensors)")
    p.add_argument("--vae-steps", type=positive_int, default=8000, help="default: %(default)s")
    p.add_argument("--unet-steps", type=positive_int, default=6000, help="default: %(default)s")
    p.add_argument("--vae-batch", type=positive_int, default=16, help="default: %(default)s")
    p.add_argument("--unet-batch", type=positive_int, default=16, help="default: %(default)s")
    p.add_argument("--vae-crop", type=positive_int, default=32,
                   help="VAE trains on crops of this size (default: %(default)s)")
    p.add_argument("--arch", choices=("sd", "sdxl"), default="sd",
                   help="sd: the SD-1.5-layout toy; sdxl: the XL toy (SDXL's UNet layout, two text encoders)")
    p.add_argument("--vae-from", default=None, metavar="MODEL_DIR",
                   help="use this trained shapes model's VAE (skips VAE training), e.g. for the XL toy")
    p.add_argument("--checkpoint-every", type=positive_int, default=200, help="default: %(default)s")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from .train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("dragkit").setLevel(logging.INFO)
    train(args.work, args.export, args.vae_steps, args.unet_steps, args.vae_batch, args.unet_batch,
          args.checkpoint_every, not args.no_progress, args.vae_crop, args.arch, args.vae_from)
    return 0


def main(argv: Optional[list[str]] = None, prog: str = "python -m dragkit.shapes.train") -> int:
    """``python -m dragkit.shapes.train ARGS``: the same options as ``dragkit shapes train ARGS``."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_train(args)
