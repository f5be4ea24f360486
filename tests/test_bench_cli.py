"""End to end: `dragkit bench dragbench|drag100` with the tiny model, `dragkit bench report`, resume, failures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit.benchmark.runner import run_benchmark
from dragkit.editor import DragEditor, default_config
from dragkit.metrics.dai import dai_all
from dragkit.metrics.lpips import ALEXNET_URL, LPIPS
from dragkit.testing import save_tiny_model
from dragkit.types import EditCancelled

REPO = Path(__file__).resolve().parents[1]
FAST = ["--lora-steps", "2", "--set", "optimization_steps=2", "--set", "num_inference_steps=10"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def dragkit(*args, cwd, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "dragkit", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def random_lpips_weights(torch_home: Path) -> None:
    """LPIPS files with random weights where load_lpips looks for them (the torch hub cache)."""
    torch.manual_seed(0)
    model = LPIPS()
    directory = torch_home / "hub" / "checkpoints"
    directory.mkdir(parents=True)
    torch.save(model.net.state_dict(), directory / ALEXNET_URL.rsplit("/", 1)[-1])
    torch.save({k: v.abs() for k, v in model.state_dict().items() if k.startswith("lin")}, directory / "alex.pth")


@pytest.mark.slow
def test_dragbench_run_then_report(tiny, dragbench_dir, tmp_path):
    run = tmp_path / "runs" / "dd"
    r = dragkit("bench", "dragbench", "--data", dragbench_dir, "--out", run, "--model", tiny, "--limit", "2",
                "--resize", "64", "--no-progress", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 edited, 0 already done, 0 failed" in r.stdout
    assert "resized to 64 px wide: its MD is in resized pixels, not comparable to published MD" in r.stdout
    meta = json.loads((run / "run.json").read_text())
    assert meta["dataset"] == "dragbench" and meta["method"] == "dragdiffusion" and meta["resize"] == 64
    assert meta["config"]["optimization_steps"] == 2 and meta["dai"] == "official"
    records = sorted(run.glob("*/*/result.json"))
    assert [p.parent.relative_to(run).as_posix() for p in records] == \
        sorted(p.relative_to(dragbench_dir).as_posix() for p in dragbench_dir.glob("*/*"))[:2]
    for path in records:
        rec = json.loads(path.read_text())
        original = Image.open(path.parent / "input.png").convert("RGB")
        edited = Image.open(path.parent / "dragged_image.png").convert("RGB")
        assert rec["status"] == "ok" and rec["category"] == "animals" and original.size == edited.size
        assert original.size[0] == 64 and rec["size"] == list(original.size)
        assert len(rec["final_handles"]) == len(rec["request"]["handles"]) and rec["timings"]["total"] > 0
        assert rec["metrics"] == pytest.approx(dai_all(original, edited, rec["request"]["handles"],
                                                       rec["request"]["targets"]))
    assert len(list((tmp_path / "runs" / "lora_cache").glob("*.safetensors"))) == 2

    # other settings into the same folder are refused (one line, exit 2)
    r = dragkit("bench", "dragbench", "--data", dragbench_dir, "--out", run, "--model", tiny, "--limit", "2",
                "--resize", "64", "--no-progress", *FAST, "--set", "latent_lr=0.5", cwd=tmp_path)
    assert r.returncode == 2 and "different config" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    random_lpips_weights(tmp_path / "torch")
    report = tmp_path / "report"
    r = dragkit("bench", "report", run, "--out", report, "--dift-model", tiny, "--dift-ensemble", "2",
                "--metrics", "md,if,dai", cwd=tmp_path, env_extra={"TORCH_HOME": str(tmp_path / "torch")})
    assert r.returncode == 0, r.stderr
    data = json.loads((report / "report.json").read_text())["runs"][0]
    samples = data["samples"].values()
    distances = [d for s in samples for d in s["md_distances"]]
    n_pairs = sum(len(json.loads(p.read_text())["request"]["handles"]) for p in records)
    assert data["overall"]["pairs"] == len(distances) == n_pairs == 3  # 2 + 1 point pairs
    assert data["overall"]["md"] == pytest.approx(np.mean(distances))
    assert data["overall"]["if"] == pytest.approx(np.mean([s["if"] for s in samples])) and data["overall"]["if"] < 1
    assert data["per_category"]["animals"]["md"] == pytest.approx(data["overall"]["md"])
    assert data["overall"]["dai_5"] == pytest.approx(np.mean([s["dai_5"] for s in samples]))
    csv_rows = (report / "report.csv").read_text().splitlines()
    assert csv_rows[0].startswith("run,method,dataset,category,samples,pairs,md,if,dai_1")
    assert csv_rows[1].startswith("dd,dragdiffusion,dragbench,all,2,3,")
    md = (report / "report.md").read_text()
    assert "| dd | dragdiffusion | 2 | 3 |" in md and "![md_vs_if](md_vs_if.png)" in md
    assert "**dd: resized pixels.** Run with `--resize 64`" in md and data["resize"] == 64  # not published-MD pixels
    assert "original and the edited image get independent noise" in md
    for name in ("md_vs_if.png", "per_category_md.png", "per_category_if.png"):
        with Image.open(report / name) as im:
            assert im.format == "PNG" and im.size[0] > 200


def _drag100_sample(root: Path, name: str, points, size=(64, 48)) -> None:
    d = root / name
    d.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(d / "original.jpg")
    Image.fromarray(np.full((size[1], size[0]), 255, np.uint8)).save(d / "mask.png")
    (d / "points.json").write_text(json.dumps({"points": points}))


@pytest.fixture
def drag100(tmp_path):
    root = tmp_path / "drag100"
    _drag100_sample(root, "a_0", [[20, 20], [26, 22]])
    _drag100_sample(root, "b_0", [[20, 20], [26, 22], [5]])  # broken: odd number of points
    _drag100_sample(root, "c_0", [[40, 30], [36, 30], [10, 10], [12, 14]])
    _drag100_sample(root, "d_0", [[30, 20], [30, 26]])
    return root


@pytest.mark.slow
def test_drag100_shard_resume_and_failing_sample(tiny, drag100, tmp_path):
    run = tmp_path / "gd"
    r = dragkit("bench", "drag100", "--data", drag100, "--out", run, "--model", tiny, "--shard", "0/2",
                "--no-progress", "--dai-plain", *FAST, cwd=tmp_path)
    assert r.returncode == 0 and "2 edited, 0 already done, 0 failed" in r.stdout  # shard 0/2 = a_0, c_0
    assert (run / "a_0" / "result.json").is_file() and not (run / "b_0").exists()
    # the whole set into the same RUN_DIR resumes: a_0, c_0 are done, b_0 fails (recorded), d_0 is edited anyway
    r = dragkit("bench", "drag100", "--data", drag100, "--out", run, "--model", tiny,
                "--no-progress", "--dai-plain", *FAST, cwd=tmp_path)
    assert r.returncode == 1 and "1 edited, 2 already done, 1 failed" in r.stdout
    assert "odd number of points" in r.stderr
    err = json.loads((run / "b_0" / "error.json").read_text())
    assert err["status"] == "failed" and "odd number of points" in err["error"]
    assert not (run / "b_0" / "result.json").exists() and (run / "d_0" / "dragged_image.png").is_file()
    rec = json.loads((run / "c_0" / "result.json").read_text())
    assert rec["category"] is None and rec["request"]["prompt"] == "" and len(rec["final_handles"]) == 2
    r = dragkit("bench", "report", run, "--out", tmp_path / "rep", "--metrics", "dai", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "rep" / "report.json").read_text())["runs"][0]
    assert data["failed"] == ["b_0"] and data["overall"]["samples"] == 3 and data["dai_normalisation"] == "mean"
    assert "1 failed sample(s) not counted: b_0" in (tmp_path / "rep" / "report.md").read_text()


def test_interrupted_run_resumes(tiny, drag100, tmp_path):
    editor = DragEditor.from_pretrained(str(tiny), device="cpu", lora_cache_dir=str(tmp_path / "lora"))
    config = default_config("dragdiffusion").__class__(lora_steps=2, optimization_steps=2, num_inference_steps=10)
    seen = []

    def interrupt_second(sample_id):
        def callback(event):
            if sample_id == "c_0" and event.stage == "denoising":
                raise EditCancelled  # stands for Ctrl-C / a killed job in the middle of an edit
        seen.append(sample_id)
        return callback

    with pytest.raises(EditCancelled):
        run_benchmark(editor, config, "drag100", drag100, tmp_path / "run", callback_for=interrupt_second)
    assert (tmp_path / "run" / "a_0" / "result.json").is_file()
    assert (tmp_path / "run" / "b_0" / "error.json").is_file()
    assert not (tmp_path / "run" / "c_0" / "dragged_image.png").exists()
    assert not list((tmp_path / "run").rglob(".*"))  # no half-written temporary files left
    first = (tmp_path / "run" / "a_0" / "dragged_image.png").read_bytes()

    summary = run_benchmark(editor, config, "drag100", drag100, tmp_path / "run")
    assert summary.skipped == ["a_0"] and summary.done == ["c_0", "d_0"] and list(summary.failed) == ["b_0"]
    assert (tmp_path / "run" / "a_0" / "dragged_image.png").read_bytes() == first
