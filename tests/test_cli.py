"""`dragkit edit` end to end with a tiny offline model, and its behaviour on bad input."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FAST = ["--lora-steps", "2", "--set", "optimization_steps=3", "--set", "num_inference_steps=10", "--no-progress"]


def dragkit(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "dragkit", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """An odd-sized, non-square image (sides not multiples of 8)."""
    d = tmp_path_factory.mktemp("in")
    rng = np.random.default_rng(0)
    arr = (rng.random((75, 101, 3)) * 255).astype(np.uint8)
    path = d / "photo.png"
    Image.fromarray(arr).save(path)
    mask = np.zeros((75, 101), np.uint8)
    mask[10:60, 20:90] = 255
    Image.fromarray(mask).save(d / "mask.png")
    return path


@pytest.mark.slow
def test_edit_end_to_end_json_and_replay(tiny_model_dir, photo, tmp_path):
    out, js = tmp_path / "edited.png", tmp_path / "edited.json"
    r = dragkit("edit", photo, "--drag", "30,40:50,40", "--drag", "100,74:90,60", "--mask", photo.parent / "mask.png",
                "--model", tiny_model_dir, "--out", out, "--json", js, *FAST)
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (101, 75)
    data = json.loads(js.read_text())
    assert data["request"]["handles"] == [[30.0, 40.0], [100.0, 74.0]]
    assert data["request"]["targets"] == [[50.0, 40.0], [90.0, 60.0]]
    assert data["method"] == "dragdiffusion" and data["config"]["optimization_steps"] == 3
    assert len(data["final_handles"]) == 2 and all(len(p) == 2 for p in data["final_handles"])
    # the start is the handles snapped to the feature grid (half the 104×72 working size): within a grid cell
    assert np.allclose(data["trajectory"][0], data["request"]["handles"], atol=101 / 52 + 1e-6)
    assert 2 <= len(data["trajectory"]) <= 4
    assert set(data["timings"]) >= {"lora", "inversion", "optimization", "denoising", "total"}
    # the request part replays the same edit deterministically
    out2 = tmp_path / "again.png"
    r = dragkit("edit", "--request", js, "--model", tiny_model_dir, "--out", out2, *FAST)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(out2)))


@pytest.mark.slow
def test_edit_dragbench_sample(tiny_model_dir, tmp_path):
    sample = tmp_path / "animals" / "s1"
    sample.mkdir(parents=True)
    Image.fromarray((np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8)).save(
        sample / "original_image.png")
    mask = np.zeros((60, 80), np.uint8)
    mask[5:50, 5:70] = 1
    with open(sample / "meta_data.pkl", "wb") as fh:
        pickle.dump({"prompt": "a photo", "points": [[10, 10], [20, 12]], "mask": mask}, fh)
    out = tmp_path / "dragged_image.png"
    r = dragkit("edit", "--dragbench", sample, "--model", tiny_model_dir, "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (80, 60)


def _write_evil_pickle(path: Path, marker: Path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(path, "wb") as fh:
        pickle.dump({"prompt": "", "points": [[1, 1], [2, 2]], "mask": Evil()}, fh)


@pytest.mark.parametrize("case", ["unequal", "none", "outside", "mask_size", "not_image", "missing_image", "bad_drag",
                                  "missing_model", "pickle_ckpt", "evil_pickle", "unknown_field", "bad_value"])
def test_bad_input_one_line_nonzero_no_output(case, tiny_model_dir, photo, tmp_path, capsys):
    out = tmp_path / "out.png"
    args = [photo, "--drag", "30,40:50,40", "--model", tiny_model_dir, "--out", out, *FAST]
    if case == "unequal":
        args = [photo, "--drag", "30,40:50,40", "--drag", "1,2", "--model", tiny_model_dir, "--out", out]
    elif case == "none":
        args = [photo, "--model", tiny_model_dir, "--out", out]
    elif case == "outside":
        args = [photo, "--drag", "30,40:101,40", "--model", tiny_model_dir, "--out", out]
    elif case == "mask_size":
        Image.new("L", (10, 10), 255).save(tmp_path / "small.png")
        args += ["--mask", tmp_path / "small.png"]
    elif case == "not_image":
        (tmp_path / "x.png").write_text("not an image")
        args[0] = tmp_path / "x.png"
    elif case == "missing_image":
        args[0] = tmp_path / "nope.png"
    elif case == "bad_drag":
        args[2] = "30;40->50,40"
    elif case == "missing_model":
        args[4] = tmp_path / "no_such_model"
    elif case == "pickle_ckpt":
        (tmp_path / "model.ckpt").write_bytes(b"\x80\x04K\x01.")
        args[4] = tmp_path / "model.ckpt"
    elif case == "evil_pickle":
        sample = tmp_path / "sample"
        sample.mkdir()
        Image.open(photo).save(sample / "original_image.png")
        _write_evil_pickle(sample / "meta_data.pkl", tmp_path / "pwned")
        args = ["--dragbench", sample, "--model", tiny_model_dir, "--out", out]
    elif case == "unknown_field":
        args += ["--set", "no_such_field=1"]
    elif case == "bad_value":
        args += ["--set", "latent_lr=fast"]
    from dragkit.cli import main

    code = main(["edit", *map(str, args)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dragkit: error: "), err
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))  # no half-written temporary left behind
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_hub_model_unreachable_is_fast_and_clear(photo, tmp_path):
    import time

    start = time.time()
    r = dragkit("edit", photo, "--drag", "30,40:50,40", "--model", "someone/not-cached-model", "--out",
                tmp_path / "o.png")
    assert r.returncode == 2
    assert "someone/not-cached-model" in r.stderr and "--model PATH" in r.stderr
    assert time.time() - start < 30  # seconds (interpreter start included), not a minute-long hang


def test_help_lists_commands():
    r = dragkit("--help")
    assert r.returncode == 0 and "edit" in r.stdout
    r = dragkit("edit", "--help")
    assert "--drag" in r.stdout and "--set" in r.stdout and "--method" in r.stdout
