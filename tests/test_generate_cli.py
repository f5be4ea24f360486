"""`dragkit generate` and `dragkit edit --generated` end to end with the tiny offline model, and their errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
GEN = ["--steps", "8", "--width", "64", "--height", "48", "--no-progress"]
DRAG = {"dragdiffusion": ["--set", "optimization_steps=3"],
        "gooddrag": ["--set", "drag_denoise_steps=2", "--set", "trackings_per_denoise=2"]}


def dragkit(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "dragkit", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow
def test_generate_then_drag_the_generated_image(tiny_model_dir, tmp_path):
    gen = tmp_path / "gen.png"
    r = dragkit("generate", "--prompt", "a cat", "--negative-prompt", "blurry", "--seed", "7", "--guidance", "6",
                "--scheduler", "dpm++2m-karras", "--freeu", "1.5,1.6,0.9,0.2", "--model", tiny_model_dir,
                "--out", gen, *GEN)
    assert r.returncode == 0, r.stderr
    assert Image.open(gen).size == (64, 48)
    record = json.loads((tmp_path / "gen.generation.json").read_text())
    assert record["format"] == "dragkit-generation" and record["model"] == str(tiny_model_dir)
    s = record["settings"]
    assert (s["prompt"], s["negative_prompt"], s["seed"], s["guidance_scale"], s["num_inference_steps"]) == (
        "a cat", "blurry", 7, 6.0, 8)
    assert (s["scheduler"], s["width"], s["height"]) == ("dpm++2m-karras", 64, 48)
    assert (s["freeu_b1"], s["freeu_b2"], s["freeu_s1"], s["freeu_s2"]) == (1.5, 1.6, 0.9, 0.2)
    assert (tmp_path / "gen.generation.safetensors").stat().st_size > 0
    for method in ("dragdiffusion", "gooddrag"):
        out, js = tmp_path / f"{method}.png", tmp_path / f"{method}.json"
        r = dragkit("edit", gen, "--generated", "--drag", "20,24:34,26", "--method", method, "--model",
                    tiny_model_dir, "--out", out, "--json", js, "--no-progress", *DRAG[method])
        assert r.returncode == 0, r.stderr
        assert Image.open(out).size == (64, 48)
        record = json.loads(js.read_text())
        assert record["config"]["lora_steps"] == 0 and record["config"]["num_inference_steps"] == 8


@pytest.mark.slow
def test_generate_and_generated_errors(tiny_model_dir, tmp_path):
    plain = tmp_path / "photo.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(plain)
    cases = [
        (["edit", plain, "--generated", "--drag", "1,1:5,5"], "has no saved generation"),
        (["generate", "--prompt", "x", "--width", "60", *GEN[:2], "--height", "48"], "not a multiple of 8"),
        (["generate", "--prompt", "x", "--scheduler", "euler", *GEN], "unknown scheduler 'euler'"),
        (["generate", "--prompt", "x", "--freeu", "1.5,1.6", *GEN], "--freeu expects four numbers"),
        (["generate", "--prompt", "x", "--style-lora", tmp_path / "none.safetensors", *GEN], "style LoRA not found"),
    ]
    for args, message in cases:
        out = tmp_path / "out.png"
        r = dragkit(*args, "--model", tiny_model_dir, "--out", out)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, r.stderr)
        assert not out.exists() and not (tmp_path / "out.generation.json").exists()
