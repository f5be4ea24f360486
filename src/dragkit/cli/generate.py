"""``dragkit generate``: generate an image and save what a later ``dragkit edit --generated`` needs beside it."""

from __future__ import annotations

import argparse
import logging

from ..config import SCHEDULERS, GenerationConfig
from ..io import check_outputs, check_pixels
from ..types import DragError
from .common import ProgressBars, add_max_pixels_option, add_model_options, load_editor

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    d = GenerationConfig()
    p = sub.add_parser("generate", help="generate an image that can then be dragged (--generated)",
                       description="Generate an image and keep every step latent: dragkit generate --prompt "
                                   "'a photo of a cat' --out gen.png, then dragkit edit gen.png --generated --drag …")
    g = p.add_argument_group("generation")
    g.add_argument("--prompt", required=True, help="text prompt")
    g.add_argument("--negative-prompt", default=d.negative_prompt, help="negative prompt (default: none)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the initial noise (default: %(default)s)")
    g.add_argument("--guidance", type=float, default=d.guidance_scale,
                   help="classifier-free guidance scale, 1 = none (default: %(default)s)")
    g.add_argument("--steps", type=int, default=d.num_inference_steps, help="sampling steps (default: %(default)s)")
    g.add_argument("--scheduler", default=d.scheduler, metavar="NAME",
                   help=f"sampler: {', '.join(SCHEDULERS)} (default: %(default)s)")
    g.add_argument("--width", type=int, default=d.width,
                   help="a multiple of the VAE factor, 8 for SD (default: the model family's, 512 SD-1.5, 1024 SDXL)")
    g.add_argument("--height", type=int, default=d.height,
                   help="a multiple of the VAE factor, 8 for SD (default: the model family's, 512 SD-1.5, 1024 SDXL)")
    g.add_argument("--freeu", default=None, metavar="B1,B2,S1,S2",
                   help="FreeU factors, e.g. 1.5,1.6,0.9,0.2 (default: off = 1,1,1,1)")
    add_max_pixels_option(g)
    add_model_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True,
                     help="image (PNG recommended); OUT_STEM.generation.json/.safetensors are written beside it")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_freeu(text: str | None) -> dict[str, float]:
    """"B1,B2,S1,S2" → GenerationConfig's FreeU fields."""
    if text is None:
        return {}
    try:
        b1, b2, s1, s2 = (float(v) for v in text.split(","))
    except ValueError:
        raise DragError(f"--freeu expects four numbers B1,B2,S1,S2, got {text!r}") from None
    return {"freeu_b1": b1, "freeu_b2": b2, "freeu_s1": s1, "freeu_s2": s2}


def config_from_args(args: argparse.Namespace) -> GenerationConfig:
    return GenerationConfig(prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed,
                            guidance_scale=args.guidance, num_inference_steps=args.steps, scheduler=args.scheduler,
                            width=args.width, height=args.height, **parse_freeu(args.freeu))


def run(args: argparse.Namespace) -> int:
    from ..checks import check_generation
    from ..generation import image_format, record_paths, save_generation

    config = config_from_args(args)
    if config.width and config.height:  # None: the model family's default canvas (at most 1024², under any limit)
        check_pixels((config.width, config.height), args.max_pixels, "the requested image")
    image_format(args.out)  # before any work; width/height are checked against the loaded VAE's factor
    tensors, meta = record_paths(args.out)
    check_outputs({"--out": args.out, "its record": meta, "its latents": tensors})
    editor = load_editor(args)
    check_generation(editor.model, config)
    bars = ProgressBars(enabled=not args.no_progress)
    try:
        generation = editor.generate(config, callback=bars)
    finally:
        bars.close()
    try:
        written = save_generation(generation, args.out)  # the image and its record: all three files, or none
    except OSError as exc:
        raise DragError(f"cannot write {args.out}: {exc.strerror or exc}; nothing was written") from None
    logger.info("wrote %s (%.1f s)", ", ".join(map(str, written)), generation.timings["total"])
    return 0
