"""``dragkit edit``: drag one image."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from ..animation import write_animation
from ..config import config_fields
from ..datasets import read_dragbench_sample
from ..hub import DEFAULT_MODEL
from ..io import (check_outputs, edit_record, load_image, load_mask, parse_drag, read_request_file, write_image,
                  write_json)
from ..types import DragError, DragRequest
from .common import (ProgressBars, add_max_pixels_option, add_method_options, add_model_options, build_config,
                     generation_model, load_editor, write_outputs)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("edit", help="drag-edit one image",
                       description="Move the content under each handle to its target: "
                                   "dragkit edit photo.png --drag 120,200:180,200 --out edited.png")
    p.add_argument("image", nargs="?", help="input image (or use --dragbench / --request)")
    src = p.add_argument_group("input")
    src.add_argument("--drag", action="append", default=[], metavar="HX,HY:TX,TY",
                     help="a handle and its target in image pixels (repeatable)")
    src.add_argument("--mask", help="editable region (nonzero = may change; with transparency: opaque = may change); "
                                    "default: whole image")
    src.add_argument("--prompt", default=None, help="text prompt (default: empty, or the sample's)")
    src.add_argument("--dragbench", metavar="SAMPLE_DIR",
                     help="a DragBench sample folder (original_image.png + meta_data.pkl)")
    src.add_argument("--request", metavar="REQUEST.json", help="a request JSON (the 'request' of --json's output)")
    src.add_argument("--generated", action="store_true",
                     help="IMAGE was made by `dragkit generate`: drag it from its saved latents (no LoRA, no "
                          "inversion; its prompts, guidance, sampler and FreeU)")
    add_max_pixels_option(src)
    add_model_options(p, default_model=None,
                      default_model_help=f"{DEFAULT_MODEL}; with --generated, the model recorded with the generation")
    add_method_options(p)
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, help="edited image (same size as the input)")
    out.add_argument("--json", dest="json_out", help="also write {request, final_handles, trajectory, timings}")
    out.add_argument("--trajectory", metavar="ANIMATION.gif",
                     help="also write an animation of the edit (gooddrag): intermediate results, moving handles")
    out.add_argument("--overwrite", action="store_true", help="allow an output to replace an input file")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _read_request(args) -> tuple[DragRequest, str, str | None, dict]:
    """The request, the paths to record for its image and mask, and every input file (kind → path)."""
    sources = [s for s in (args.image, args.dragbench, args.request) if s]
    if len(sources) != 1:
        raise DragError("give exactly one input: IMAGE (with --drag), --dragbench SAMPLE_DIR or --request FILE")
    if args.dragbench:
        if args.drag or args.mask:
            raise DragError("--drag/--mask cannot be combined with --dragbench (the sample has its points and mask)")
        req = read_dragbench_sample(args.dragbench, args.max_pixels)
        image = str(Path(args.dragbench) / "original_image.png")
        inputs = {"image": image, "sample": str(Path(args.dragbench) / "meta_data.pkl")}
        return _with_prompt(req, args.prompt), image, None, inputs
    if args.request:
        if args.drag or args.mask:
            raise DragError("--drag/--mask cannot be combined with --request")
        req, image_path, mask_path = read_request_file(args.request, args.max_pixels)
        inputs = {"image": image_path, "mask": mask_path, "request": args.request}
        return _with_prompt(req, args.prompt), image_path, mask_path, inputs
    if not args.drag:
        raise DragError("no drag given: add --drag HX,HY:TX,TY")
    pairs = [parse_drag(d) for d in args.drag]
    image = load_image(args.image, args.max_pixels)
    mask = load_mask(args.mask, args.max_pixels) if args.mask else None
    req = DragRequest(image, [h for h, _ in pairs], [t for _, t in pairs], mask, args.prompt or "")
    return req, args.image, args.mask, {"image": args.image, "mask": args.mask}


def _with_prompt(request: DragRequest, prompt: str | None) -> DragRequest:
    if prompt is None:
        return request
    return DragRequest(request.image, request.handles, request.targets, request.mask, prompt)


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


def _record_inputs(image: str) -> dict:
    """The generation record beside ``image`` (an input of ``--generated``: no output may replace it)."""
    from ..generation import record_paths

    latents, record = record_paths(image)
    return {"generation latents": str(latents), "generation record": str(record)}


def run(args: argparse.Namespace) -> int:
    request, image_path, mask_path, inputs = _read_request(args)
    generation = _read_generation(args, request) if args.generated else None
    if generation is not None:
        inputs.update(_record_inputs(args.image))
        args.model = generation_model(args.model, generation.model)
    elif args.model is None:
        args.model = DEFAULT_MODEL
    config = build_config(args)
    if args.trajectory:
        config = _with_animation(config, args.trajectory)
    if Path(args.out).suffix.lower() not in IMAGE_SUFFIXES:
        raise DragError(f"--out {args.out}: use an image extension such as .png")
    check_outputs({"--out": args.out, "--json": args.json_out, "--trajectory": args.trajectory}, inputs,
                  args.overwrite)
    editor = load_editor(args)
    bars = ProgressBars(enabled=not args.no_progress)
    try:
        result = editor.edit(request, config, callback=bars, seed=args.seed, generation=generation)
    finally:
        bars.close()
    writers = {args.out: lambda tmp: write_image(result.image, tmp, args.out)}
    if args.trajectory:
        frames = result.frames or []
        writers[args.trajectory] = lambda tmp: write_animation(frames, tmp)
    if args.json_out:
        # the config the edit ran with (for a generated image: the generation's step count, no LoRA)
        record = edit_record(request, image_path, mask_path, result.config, result)
        writers[args.json_out] = lambda tmp: write_json(record, tmp)
    write_outputs(writers)  # all the files appear together, or none
    logger.info("wrote %s (%s)", args.out, json.dumps({k: round(v, 2) for k, v in result.timings.items()}))
    return 0
