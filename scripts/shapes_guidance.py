"""Which CFG scale suits the shipped shapes model's generations? (issue 23: at 7.5 they did not look like their
prompt.) Generates the captions of held-out scenes at each guidance scale (same seeds) and checks each image against
its caption by colour: an object counts as present when at least ``--min-px`` pixels lie within ``--tol`` (RGB
distance) of its palette colour; a palette colour the caption does not name, found the same way, is a false object.

    python scripts/shapes_guidance.py --n 12 --guidance 1,2,3,5,7.5

Prints, per scale: the share of named objects present, false objects per image and images matching their caption
exactly (every named colour present, no other); one process, one generation at a time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def colours_found(image: np.ndarray, tol: float, min_px: int) -> set[str]:
    from dragkit.shapes.scenes import COLOURS

    pixels = image[..., :3].astype(np.float32)
    return {name for name, rgb in COLOURS.items()
            if int((np.linalg.norm(pixels - np.array(rgb, np.float32), axis=-1) < tol).sum()) >= min_px}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=12, help="held-out scenes (default: %(default)s)")
    p.add_argument("--guidance", default="1,2,3,5,7.5")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--tol", type=float, default=60.0)
    p.add_argument("--min-px", type=int, default=12)
    args = p.parse_args()

    from dragkit import DragEditor, GenerationConfig
    from dragkit.shapes.model import default_model_path
    from dragkit.shapes.scenes import EVAL_SEED, random_scene

    editor = DragEditor.from_pretrained(default_model_path(), device="cpu")
    scenes = [random_scene(EVAL_SEED + i) for i in range(args.n)]
    print("guidance | named objects present | false objects / image | images matching the caption | s / image")
    for g in (float(x) for x in args.guidance.split(",")):
        present = named = false = exact = 0
        start = time.perf_counter()
        for i, scene in enumerate(scenes):
            gen = editor.generate(GenerationConfig(prompt=scene.caption(), seed=i, guidance_scale=g,
                                                   num_inference_steps=args.steps, width=64, height=64))
            found = colours_found(np.asarray(gen.image.convert("RGB")), args.tol, args.min_px)
            wanted = {s.colour for s in scene.shapes}
            present += len(wanted & found)
            named += len(wanted)
            false += len(found - wanted)
            exact += found == wanted
        per = (time.perf_counter() - start) / len(scenes)
        print(f"{g:g} | {present}/{named} = {present / named:.2f} | {false / len(scenes):.2f} | "
              f"{exact}/{len(scenes)} | {per:.1f}", flush=True)


if __name__ == "__main__":
    main()
