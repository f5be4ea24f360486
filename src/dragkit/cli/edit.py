"""``dragkit edit``: drag one image."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from ..animation import save_animation
from ..config import config_fields
from ..datasets import read_dragbench_sample
from ..io import edit_record, load_image, load_mask, parse_drag, read_request_file, save_image_atomic, save_json_atomic
from ..types import DragError, DragRequest
from .common import ProgressBars, add_method_options, add_model_options, build_config, load_editor

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("edit", help="drag-edit one image",
                       description="Move the content under each handle to its target: "
                                   "dragkit edit photo.png --drag 120,200:180,200 --out edited.png")
    p.add_argument("image", nargs="?", help="input image (or use --dragbench / --request)")
    src = p.add_argument_group("input")
    src.add_argument("--drag", action="append", default=[], metavar="HX,HY:TX,TY",
                     help="a handle and its target in image pixels (repeatable)")
    src.add_argument("--mask", help="editable region (nonzero / opaque = may change); default: whole image")
    src.add_argument("--prompt", default=None, help="text prompt (default: empty, or the sample's)")
    src.add_argument("--dragbench", metavar="SAMPLE_DIR",
                     help="a DragBench sample folder (original_image.png + meta_data.pkl)")
    src.add_argument("--request", metavar="REQUEST.json", help="a request JSON (the 'request' of --json's output)")
    src.add_argument("--generated", action="store_true",
                     help="IMAGE was made by `dragkit generate`: drag it from its saved latents (no LoRA, no "
                          "inversion; its prompts, guidance, sampler and FreeU)")
    add_model_options(p)
    add_method_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, help="edited image (same size as the input)")
    out.add_argument("--json", dest="json_out", help="also write {request, final_handles, trajectory, timings}")
    out.add_argument("--trajectory", metavar="ANIMATION.gif",
                     help="also write an animation of the edit (gooddrag): intermediate results, moving handles")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _read_request(args) -> tuple[DragRequest, str, str | None]:
    sources = [s for s in (args.image, args.dragbench, args.request) if s]
    if len(sources) != 1:
        raise DragError("give exactly one input: IMAGE (with --drag), --dragbench SAMPLE_DIR or --request FILE")
    if args.dragbench:
        req = read_dragbench_sample(args.dragbench)
        if args.drag:
            raise DragError("--drag cannot be combined with --dragbench (the sample has its points)")
        if args.prompt is not None:
            req = DragRequest(req.image, req.handles, req.targets, req.mask, args.prompt)
        return req, str(Path(args.dragbench) / "original_image.png"), None
    if args.request:
        req, image_path, mask_path = read_request_file(args.request)
        if args.drag or args.mask:
            raise DragError("--drag/--mask cannot be combined with --request")
        if args.prompt is not None:
            req = DragRequest(req.image, req.handles, req.targets, req.mask, args.prompt)
        return req, image_path, mask_path
    if not args.drag:
        raise DragError("no drag given: add --drag HX,HY:TX,TY")
    pairs = [parse_drag(d) for d in args.drag]
    image = load_image(args.image)
    mask = load_mask(args.mask) if args.mask else None
    req = DragRequest(image, [h for h, _ in pairs], [t for _, t in pairs], mask, args.prompt or "")
    return req, args.image, args.mask


def _with_animation(config, path: str):
    if "animation" not in config_fields(type(config)):
        raise DragError(f"--trajectory is not supported by --method {config.method}; use --method gooddrag")
    if Path(path).suffix.lower() != ".gif":
        raise DragError(f"--trajectory {path}: the animation is written as a .gif")
    return dataclasses.replace(config, animation=True)


def _read_generation(args, request: DragRequest):
    from ..generation import load_generation

    if not args.image:
        raise DragError("--generated needs an IMAGE made by `dragkit generate` (not --dragbench / --request)")
    if args.prompt is not None:
        raise DragError("--prompt cannot be combined with --generated (the generation's prompts are used)")
    return load_generation(args.image, request.image)


def run(args: argparse.Namespace) -> int:
    request, image_path, mask_path = _read_request(args)
    generation = _read_generation(args, request) if args.generated else None
    config = build_config(args)
    if args.trajectory:
        config = _with_animation(config, args.trajectory)
    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
        raise DragError(f"--out {args.out}: use an image extension such as .png")
    editor = load_editor(args)
    bars = ProgressBars(enabled=not args.no_progress)
    try:
        result = editor.edit(request, config, callback=bars, seed=args.seed, generation=generation)
    finally:
        bars.close()
    save_image_atomic(result.image, args.out)
    if args.trajectory:
        save_animation(result.frames or [], args.trajectory)
    if args.json_out:
        # the config the edit ran with (for a generated image: the generation's step count, no LoRA)
        save_json_atomic(edit_record(request, image_path, mask_path, result.config, result), args.json_out)
    logger.info("wrote %s (%s)", args.out, json.dumps({k: round(v, 2) for k, v in result.timings.items()}))
    return 0
