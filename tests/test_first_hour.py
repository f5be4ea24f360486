"""Issue 23, the first hour of a new user: mask mistakes and a shrunk image warn (one library check, every front
end), a generated image is dragged with its own model, an offline failure is fast and one line, --threads and -v
on every command, Ctrl-C during the imports is one line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dragkit.checks import NO_MASK_NOTICE, edit_notices, mask_notices, size_notice
from dragkit.types import DragRequest

REPO = Path(__file__).resolve().parents[1]


def dragkit(*args, env=None, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "dragkit", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, **kw)


def test_mask_notices_one_library_check():
    img = Image.new("RGB", (64, 48))
    assert mask_notices(None, [(1, 1)], [(5, 5)]) == [NO_MASK_NOTICE]  # a real photo without a mask
    assert mask_notices(None, [(1, 1)], [(5, 5)], generated=True) == []
    mask = np.zeros((48, 64), np.uint8)
    mask[:, :32] = 1
    req = DragRequest(img, [(10, 10)], [(50, 10)], mask)
    (notice,) = mask_notices(req.mask, req.handles, req.targets)
    assert notice.startswith("target 1 (50, 10) lies outside the editable region")
    inverted = DragRequest(img, [(40, 10)], [(50, 10)], mask)  # both points on the black side
    notices = mask_notices(inverted.mask, inverted.handles, inverted.targets)
    assert len(notices) == 3 and "handle 1" in notices[0] and "inverted" in notices[2]
    assert mask_notices(mask, [(10, 10)], [(20, 10)]) == []


def test_working_size_notice():
    assert size_notice((4000, 3000), 8, 128) == ("the 4000x3000 image is edited at 128x96 (max_side=128) and scaled "
                                                 "back; for more detail, raise it: --set max_side=N (API: config "
                                                 "max_side; web app: Advanced parameters)")
    assert size_notice((100, 60), 8, 128) == ""  # rounding to the VAE factor is not a shrink
    model = SimpleNamespace(vae_scale_factor=8)
    req = DragRequest(Image.new("RGB", (400, 300)), [(1, 1)], [(9, 9)])
    notices = edit_notices(model, req, SimpleNamespace(max_side=128))
    assert notices[0] == NO_MASK_NOTICE and "edited at 128x96" in notices[1]


def test_parser_threads_verbose_and_help():
    from dragkit.cli import _leaves, build_parser

    parser = build_parser()
    for leaf in _leaves(parser):
        assert "--threads" in leaf._option_string_actions and "-v" in leaf._option_string_actions, leaf.prog
    base = ["edit", "x.png", "--drag", "1,1:2,2", "--out", "y.png"]
    assert parser.parse_args([*base, "-v"]).verbose and parser.parse_args(["-v", *base]).verbose
    assert not parser.parse_args(base).verbose and parser.parse_args(base).threads is None
    assert "shapes example" in parser.format_help()


def test_apply_threads(monkeypatch):
    import torch

    from dragkit.cli.common import apply_threads, default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert default_threads() == 1
    before = torch.get_num_threads()
    try:
        apply_threads(None)
        assert os.environ["OMP_NUM_THREADS"] == "1" and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert default_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_cli_notices_and_generated_model(tiny_model_dir, tmp_path):
    """No mask and a shrunk image: one warning line each; a generation is dragged with its recorded model (no
    --model), and another --model is refused with one line before anything loads."""
    gen = tmp_path / "gen.png"
    r = dragkit("generate", "--prompt", "a cat", "--model", tiny_model_dir, "--steps", "4", "--width", "64",
                "--height", "48", "--out", gen, "--no-progress", "--threads", "1")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out.png"
    r = dragkit("edit", gen, "--generated", "--drag", "20,24:34,26", "--set", "optimization_steps=1", "--out", out,
                "--no-progress")
    assert r.returncode == 0 and out.exists(), r.stderr
    assert "no mask" not in r.stderr and "Retry" not in r.stderr  # generated: no notice; no Hub
    r = dragkit("edit", gen, "--generated", "--model", tmp_path, "--drag", "20,24:34,26", "--out", out,
                "--overwrite")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"dragkit: error: --model {tmp_path}: the image was generated with {tiny_model_dir}; drag it with that "
        "model (leave out --model) or drop --generated to edit it as a photo"]

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)).save(big)
    r = dragkit("edit", big, "--model", tiny_model_dir, "--drag", "100,100:150,120", "--lora-steps", "0",
                "--set", "optimization_steps=1", "--set", "num_inference_steps=4", "--set", "max_side=128",
                "--out", tmp_path / "big-out.png", "--no-progress")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2, r.stderr  # each notice once, one line
    assert "no mask: the whole image may change" in lines[0]
    assert "the 400x300 image is edited at 128x96 (max_side=128)" in lines[1]
    assert Image.open(tmp_path / "big-out.png").size == (400, 300)


@pytest.mark.slow
def test_offline_hub_model_fails_fast_with_one_line(tmp_path):
    img = tmp_path / "p.png"
    Image.new("RGB", (64, 64)).save(img)
    start = time.monotonic()
    r = dragkit("edit", img, "--drag", "1,1:9,9", "--model", "nobody/not-a-cached-model", "--out", tmp_path / "o.png")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "HF_HUB_OFFLINE is set" in r.stderr and time.monotonic() - start < 60  # imports only, no retries


def test_ctrl_c_during_the_imports_is_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "dragkit", "edit", "x.png", "--drag", "1,1:2,2", "--out",
                             str(tmp_path / "y.png")], env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # past the interpreter's start, inside dragkit's imports (torch, diffusers take seconds)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 130 and "interrupted" not in err:
        pytest.skip(f"the command finished before the signal (rc {proc.returncode})")
    assert proc.returncode == 130 and err.strip().splitlines() == ["dragkit: interrupted"], err
