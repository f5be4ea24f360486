"""The training command of the shapes model, shared by ``dragkit shapes train`` and ``python -m dragkit.shapes.train``.

Light: the options are declared without torch (``--help`` stays fast); :mod:`.train` loads when the command runs.
"""

from __future__ import annotations

import argparse
import logging

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
