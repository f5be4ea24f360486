"""A picture of shapes-benchmark results side by side: one row per task — the input with its drag drawn, the ground
truth, then each run's edited image — scaled up (nearest) and labelled. Reads run folders of ``dragkit bench shapes``
(``DIR/<variant>/<task id>.png``); loads no model.

    python scripts/shapes_montage.py --out docs/shapes/onestep_examples.png --tasks 000,003,007,014 \
        runs/shapes-main:dragdiffusion runs/shapes-main-gd:gooddrag runs/shapes-onestep:fastdrag \
        runs/shapes-onestep:soliddrag
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from dragkit.animation import draw_points
from dragkit.shapes.scenes import render
from dragkit.shapes.tasks import make_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("columns", nargs="+", metavar="RUN_DIR:VARIANT")
    parser.add_argument("--tasks", required=True, help="comma-separated task ids, e.g. 000,003")
    parser.add_argument("--seed", type=int, default=0, help="the task set (bench shapes --seed)")
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    ids = args.tasks.split(",")
    by_id = {t.task_id: t for t in make_tasks(max(int(i) for i in ids) + 1, args.seed)}
    labels = ["input + drag", "ground truth"] + [c.split(":", 1)[1] for c in args.columns]
    size, head = 64 * args.scale, 14
    sheet = Image.new("RGB", (size * len(labels), head + size * len(ids)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, label in enumerate(labels):
        draw.text((j * size + 4, 1), label, fill="black")
    for i, task_id in enumerate(ids):
        task = by_id[task_id]
        cells = [draw_points(Image.fromarray(task.image()), [task.handle], [task.target]),
                 Image.fromarray(render(task.moved_scene()))]
        for column in args.columns:
            run, variant = column.split(":", 1)
            cells.append(Image.open(Path(run) / variant / f"{task_id}.png").convert("RGB"))
        for j, cell in enumerate(cells):
            sheet.paste(cell.resize((size, size), Image.NEAREST), (j * size, head + i * size))
    sheet.save(args.out)


if __name__ == "__main__":
    main()
