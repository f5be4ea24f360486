"""The shapes benchmark's metrics of what a move leaves behind (ghost, hole PSNR), their summaries and tables,
re-scoring a saved run (`bench shapes --rescore`), and methods taken from the registry."""

import dataclasses
import json
import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from dragkit import config
from dragkit.cli import build_parser, main
from dragkit.shapes import bench, metrics
from dragkit.shapes.scenes import render, replace_shape, shape_coverage
from dragkit.shapes.tasks import make_tasks
from dragkit.types import DragError, DragResult


@pytest.fixture(scope="module")
def tasks():
    return make_tasks(6, seed=0)


def measure(task, edited, offset=None):
    return metrics.drag_metrics(task.image(), np.asarray(edited), task.scene, task.index,
                                task.offset if offset is None else offset)


def regions(task):
    """The vacated interior and footprint, written out from the definitions (not through the module's helper)."""
    shape = task.scene.shapes[task.index]
    old = shape_coverage(shape, task.scene.size)
    new = shape_coverage(shape.moved(*task.offset), task.scene.size)
    outside_new = ~metrics.dilate(new > 0, metrics.FOOTPRINT_MARGIN)
    return (old == 1) & outside_new, (old > 0) & outside_new


def psnr_by_hand(a, b, region):
    diff = np.asarray(a, float)[region] - np.asarray(b, float)[region]
    mse = np.mean(diff ** 2)
    return metrics.PSNR_CAP if mse == 0 else min(metrics.PSNR_CAP, 10 * math.log10(255 ** 2 / mse))


# --- ghost and hole PSNR -------------------------------------------------------------------------------------------

def test_identity_is_all_ghost_and_a_low_hole_psnr(tasks):
    for t in tasks:
        interior, footprint = regions(t)
        assert interior.sum() >= metrics.MIN_VACATED_PIXELS
        m = measure(t, t.image())
        assert m["ghost"] == 1.0
        assert m["hole_psnr"] == pytest.approx(psnr_by_hand(t.image(), render(t.moved_scene()), footprint))
        assert m["hole_psnr"] < 20


def test_a_perfect_move_leaves_no_ghost_and_a_perfect_hole(tasks):
    for t in tasks:
        m = measure(t, render(t.moved_scene()))
        assert m["ghost"] == 0.0 and m["hole_psnr"] == metrics.PSNR_CAP
        blurred = Image.fromarray(render(t.moved_scene())).filter(ImageFilter.GaussianBlur(1))  # VAE-like softening
        b = measure(t, blurred)
        assert b["ghost"] < 0.05 and 25 < b["hole_psnr"] <= metrics.PSNR_CAP  # = on a plain background


def test_a_copy_is_all_ghost_with_the_hole_of_identity(tasks):
    for t in tasks:
        moved = t.moved_scene()
        both = dataclasses.replace(moved, shapes=moved.shapes + (t.scene.shapes[t.index],))  # drawn at both places
        m = measure(t, render(both))
        identity = measure(t, t.image())
        assert m["ghost"] == 1.0 and m["hole_psnr"] == identity["hole_psnr"]
        assert m["drag_error_fraction"] == pytest.approx(0.5, abs=0.05)  # the centroid of the two copies: half-way


def test_a_smear_scores_the_part_of_the_hole_it_covers(tasks):
    """The object at its target with a hard-edged smear of its positions from half-way to there: ghost = the smeared
    fraction of the vacated interior, hole PSNR = the PSNR of the smear against the background, both exact."""
    for t in tasks:
        shape, size = t.scene.shapes[t.index], t.scene.size
        smear = np.zeros((size, size), bool)
        for s in np.linspace(0.5, 1.0, 21):
            smear |= shape_coverage(shape.moved(s * t.offset[0], s * t.offset[1]), size) >= 0.5
        truth = render(t.moved_scene())
        edited = truth.copy()
        edited[smear] = shape.rgb
        interior, footprint = regions(t)
        m = measure(t, edited)
        assert m["ghost"] == pytest.approx(smear[interior].mean(), abs=1e-12)
        assert m["hole_psnr"] == pytest.approx(psnr_by_hand(edited, truth, footprint))
        full = np.zeros((size, size), bool)  # the whole path smeared: every vacated interior pixel is a ghost
        for s in np.linspace(0.0, 1.0, 41):
            full |= shape_coverage(shape.moved(s * t.offset[0], s * t.offset[1]), size) >= 0.5
        edited[full] = shape.rgb
        assert measure(t, edited)["ghost"] == 1.0
    ghosts = [measure(t, _half_smear(t))["ghost"] for t in tasks]
    assert all(0 < g < 1 for g in ghosts)


def _half_smear(t):
    shape, size = t.scene.shapes[t.index], t.scene.size
    edited = render(t.moved_scene())
    for s in np.linspace(0.5, 1.0, 21):
        edited[shape_coverage(shape.moved(s * t.offset[0], s * t.offset[1]), size) >= 0.5] = shape.rgb
    return edited


def test_a_move_too_short_to_vacate_anything_has_no_ghost_or_hole(tasks):
    t = tasks[0]
    for offset in [(0.0, 0.0), (0.7, -0.4), (1.5, 0.0)]:
        m = measure(t, t.image(), offset)
        assert m["ghost"] is None and m["hole_psnr"] is None
        assert json.loads(json.dumps(m))["ghost"] is None  # stays valid JSON
    assert metrics.ghost_fraction(np.ones((4, 4), bool), np.ones((4, 4), bool)) == 1.0  # 16 px: measured
    assert metrics.ghost_fraction(np.ones((4, 4), bool), np.eye(4, dtype=bool)) is None  # 4 px < MIN_VACATED_PIXELS


def test_the_ground_truth_render_is_the_tasks_moved_scene(tasks):
    for t in tasks:
        assert np.array_equal(metrics.moved_render(t.scene, t.index, t.offset), render(t.moved_scene()))


# --- summaries and tables ------------------------------------------------------------------------------------------

def record(variant, task_id, **values):
    base = {"drag_error_px": 1.0, "drag_error_fraction": 0.1, "background_psnr": 30.0, "shape_iou": 0.9,
            "object_lost": False}
    return {"variant": variant, "method": "dragdiffusion", "task_id": task_id, "metrics": {**base, **values},
            "timings": {}}


def test_summaries_skip_missing_values_and_give_standard_errors():
    rs = [record("a", "000", ghost=0.2, hole_psnr=30.0), record("a", "001", ghost=None, hole_psnr=None),
          record("a", "002", ghost=0.4, hole_psnr=float("nan")), record("a", "003", ghost=0.6, hole_psnr=40.0,
                                                                        drag_error_fraction=0.3)]
    s = bench.summarize(rs)
    assert s["n"] == 4 and s["vacated_n"] == 3
    assert s["ghost"] == pytest.approx(0.4) and s["ghost_se"] == pytest.approx(0.2 / math.sqrt(3))
    assert s["hole_psnr"] == pytest.approx(35.0) and s["hole_psnr_se"] == pytest.approx(5.0)
    assert s["drag_error_fraction"] == pytest.approx(0.15) and s["drag_error_fraction_se"] == pytest.approx(0.05)
    assert s["background_psnr_se"] == 0.0 and "shape_iou_se" not in s

    none = bench.summarize([record("b", "000", ghost=None, hole_psnr=None)])
    assert none["ghost"] is None and none["ghost_se"] is None and none["vacated_n"] == 0
    old = bench.summarize([record("c", "000")])  # a record written before ghost existed
    assert old["ghost"] is None and old["hole_psnr"] is None and old["drag_error_fraction"] == 0.1
    cells = bench.table_cells(s)
    assert cells[2] == "0.15 ± 0.05" and cells[5] == "0.4 ± 0.12" and cells[6] == "35 ± 5"
    assert bench.table_cells(none)[5] == "–" and bench.table_cells(none)[6] == "–"
    legacy = {k: v for k, v in s.items() if not k.endswith("_se")}  # a summary.json from before: means alone
    assert bench.table_cells(legacy)[2] == "0.15"


# --- re-scoring a saved run ----------------------------------------------------------------------------------------

class PerfectEditor:
    def __init__(self, tasks):
        self.truth = {t.handle: render(t.moved_scene()) for t in tasks}

    def edit(self, request, config, callback=None, seed=0):
        return DragResult(Image.fromarray(self.truth[request.handles[0]]), list(request.targets), [],
                          timings={"total": 0.5}, steps=3)


def test_rescore_round_trip_adds_metrics_to_an_old_run(tasks, tmp_path, capsys):
    few = tasks[:3]
    variants = bench.build_variants(["dragdiffusion"], [])
    summary = bench.run_shapes_benchmark(lambda: PerfectEditor(few), variants, few, tmp_path, seed=0, model="m")
    assert summary["identity"]["ghost"] == 1.0 and summary["dragdiffusion"]["ghost"] == 0.0
    assert summary["dragdiffusion"]["hole_psnr"] == metrics.PSNR_CAP and summary["identity"]["hole_psnr"] < 20
    table = (tmp_path / "table.md").read_text()
    assert "| 1 ± 0 |" in table and "| 0 ± 0 |" in table  # identity's and the perfect ghost
    header = (tmp_path / "table.csv").read_text().splitlines()[0].split(",")
    assert header == list(bench.CSV_COLUMNS)
    original = bench.read_results(tmp_path)
    run_json = (tmp_path / "run.json").read_text()

    # an "earlier" run: no ghost or hole PSNR yet, a stale value, no summary files
    with open(tmp_path / "results.jsonl", "w") as fh:
        for r in original:
            old = dict(r, metrics={k: v for k, v in r["metrics"].items() if k not in ("ghost", "hole_psnr")})
            old["metrics"]["shape_iou"] = -1.0
            fh.write(json.dumps(old) + "\n")
    for name in ("summary.json", "table.md", "table.csv", "plot.png"):
        (tmp_path / name).unlink()
    assert bench.summarize(bench.read_results(tmp_path)[:3])["ghost"] is None

    rescored = bench.rescore_run(tmp_path)
    assert bench.read_results(tmp_path) == original  # same records, same order, every field
    assert rescored == summary and json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "table.md").read_text() == table and (tmp_path / "plot.png").is_file()
    assert (tmp_path / "run.json").read_text() == run_json

    # the CLI: no model is loaded (the run's model "m" does not exist); --n limits the summary
    assert main(["bench", "shapes", "--out", str(tmp_path), "--rescore", "--n", "2"]) == 0
    assert "| dragdiffusion | dragdiffusion | 2 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["identity"]["n"] == 2
    assert bench.read_results(tmp_path) == original


def test_rescore_refuses_what_it_cannot_measure(tasks, tmp_path, capsys, monkeypatch):
    assert main(["bench", "shapes", "--out", str(tmp_path / "nothing"), "--rescore"]) == 2
    assert "not a shapes run folder" in capsys.readouterr().err

    few = tasks[:2]
    bench.run_shapes_benchmark(lambda: None, bench.build_variants(["identity"], []), few, tmp_path, seed=0)
    before = (tmp_path / "results.jsonl").read_text()
    (tmp_path / "identity" / "001.png").unlink()
    assert main(["bench", "shapes", "--out", str(tmp_path), "--rescore"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "001.png: missing" in err
    assert (tmp_path / "results.jsonl").read_text() == before

    bench.run_shapes_benchmark(lambda: None, bench.build_variants(["identity"], []), few, tmp_path / "b", seed=0)
    real = bench.drag_metrics

    def while_a_run_appends(*args):  # another process appends while the folder is re-scored
        with open(tmp_path / "b" / "results.jsonl", "a") as fh:
            fh.write(json.dumps(record("identity", "009")) + "\n")
        return real(*args)

    monkeypatch.setattr(bench, "drag_metrics", while_a_run_appends)
    with pytest.raises(DragError, match="changed while re-scoring"):
        bench.rescore_run(tmp_path / "b")
    monkeypatch.undo()

    forged = tmp_path / "b" / "results.jsonl"  # a record that is not the task of its scene seed
    rs = bench.read_results(tmp_path / "b")[:2]
    rs[0]["target"] = [0.0, 0.0]
    forged.write_text("".join(json.dumps(r) + "\n" for r in rs))
    with pytest.raises(DragError, match="not those of the shapes task"):
        bench.rescore_run(tmp_path / "b")


# --- every registered method ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NewMethodConfig(config.DragDiffusionConfig):
    method = "newdrag"


def test_every_registered_method_runs_in_the_shapes_benchmark(tasks, tmp_path, monkeypatch):
    assert bench.method_names() == ("identity", *config.METHODS)
    monkeypatch.setitem(config.METHODS, "newdrag", NewMethodConfig)  # registered after import, as a new method is
    assert "newdrag" in bench.method_names()
    variants = bench.build_variants(["newdrag", "dragdiffusion"], ["lora_steps=3"], ablations=True)
    assert [v.label for v in variants] == ["identity", "newdrag", "dragdiffusion", "dragdiffusion-no-lora",
                                           "dragdiffusion-no-refattn"]  # ablations stay per method
    assert isinstance(variants[1].config, NewMethodConfig) and variants[1].config.lora_steps == 3
    summary = bench.run_shapes_benchmark(lambda: PerfectEditor(tasks[:2]), variants[:2], tasks[:2], tmp_path,
                                         seed=0, model="m")
    assert summary["newdrag"]["ghost"] == 0.0 and summary["newdrag"]["n"] == 2

    args = build_parser().parse_args(["bench", "shapes", "--method", "newdrag", "--out", str(tmp_path)])
    assert args.methods == ["newdrag"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "shapes", "--method", "nodrag", "--out", str(tmp_path)])
    with pytest.raises(DragError, match="unknown method 'nodrag'"):
        bench.build_variants(["nodrag"], [])
