"""GoodDrag through the public API and the CLI, on a tiny offline model: odd sizes, border handles, animation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import points
from dragkit.config import GoodDragConfig
from dragkit.types import DragRequest

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(num_inference_steps=10, drag_denoise_steps=2, trackings_per_denoise=2, supervision_steps_per_tracking=2,
             lora_steps=0)


@pytest.fixture(scope="module", autouse=True)
def threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared 2-core machine: one thread avoids OpenMP contention
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from dragkit.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def test_api_odd_size_border_handles_progress_and_animation(tiny):
    from dragkit.editor import DragEditor
    from dragkit.models import DiffusionModel

    editor = DragEditor(DiffusionModel.from_pretrained(str(tiny), device="cpu", dtype="fp32"))
    w, h = 100, 60  # not multiples of 8: working size 96×64, grid 32×48
    mask = np.zeros((h, w), np.uint8)
    mask[:, :70] = 1
    request = DragRequest(photo(w, h), handles=[(0, 0), (99, 59)], targets=[(14, 9), (85, 48)], mask=mask)
    events = []
    result = editor.edit(request, GoodDragConfig(**SMALL, animation=True), callback=events.append)

    assert result.image.size == (w, h)
    assert len(result.final_handles) == 2
    assert all(0 <= x <= w - 1 and 0 <= y <= h - 1 for x, y in result.final_handles)
    grid = (48, 32)
    start = points.to_image(points.to_grid(request.handles, (w, h), grid), (w, h), grid)
    assert result.trajectory[0] == start
    assert result.final_handles == result.trajectory[-1]
    assert 0 < result.steps <= 2 * 2 * 2
    optimisation = [e for e in events if e.stage == "optimization"]
    assert [e.step for e in optimisation] == list(range(1, result.steps + 1))
    # 10 "leading" DDIM steps 901, 801, …, 1; round(0.75·10) = 8 inverted → drag at indices 2 and 3
    drag_timesteps = {1 + 100 * (10 - 1 - i) for i in (2, 3)}
    assert all(e.total == 8 and len(e.handles) == 2 and e.timestep in drag_timesteps for e in optimisation)
    assert {e.stage for e in events} >= {"inversion", "optimization", "denoising"}
    # frames: the input, one per tracking (initial ones included), the result; all at the input size
    assert len(result.frames) == len(result.trajectory) + 1
    assert all(f.size == (w, h) for f in result.frames)
    assert set(result.timings) >= {"lora", "inversion", "optimization", "denoising", "total"}


def test_api_without_mask_and_without_animation(tiny):
    from dragkit.editor import DragEditor
    from dragkit.models import DiffusionModel

    editor = DragEditor(DiffusionModel.from_pretrained(str(tiny), device="cpu", dtype="fp32"))
    request = DragRequest(photo(64, 48, seed=1), handles=[(20, 20)], targets=[(40, 24)])
    for cfg in (GoodDragConfig(**SMALL), GoodDragConfig(**SMALL, regularize_without_mask=False)):
        result = editor.edit(request, cfg)
        assert result.image.size == (64, 48) and result.frames is None
        assert np.isfinite(np.asarray(result.image, dtype=np.float32)).all()


@pytest.mark.slow
def test_cli_edit_gooddrag_writes_image_json_and_animation(tiny, tmp_path):
    image, out, js, gif = (tmp_path / n for n in ("in.png", "out.png", "out.json", "edit.gif"))
    photo(96, 64).save(image)
    cmd = [sys.executable, "-m", "dragkit", "edit", str(image), "--drag", "30,20:44,26", "--drag", "70,40:60,36",
           "--model", str(tiny), "--method", "gooddrag", "--lora-steps", "2", "--no-progress",
           "--set", "num_inference_steps=10", "--set", "drag_denoise_steps=2", "--set", "trackings_per_denoise=2",
           "--set", "supervision_steps_per_tracking=2", "--out", str(out), "--json", str(js), "--trajectory", str(gif)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Image.open(out).size == (96, 64)
    data = json.loads(js.read_text())
    assert data["method"] == "gooddrag"
    assert data["config"]["drag_denoise_steps"] == 2 and data["config"]["animation"] is True
    assert len(data["final_handles"]) == 2 and data["trajectory"][-1] == data["final_handles"]
    with Image.open(gif) as anim:
        assert anim.size == (96, 64)
        assert 3 <= anim.n_frames <= len(data["trajectory"]) + 1  # GIF merges identical consecutive frames


@pytest.mark.parametrize("method, path", [("dragdiffusion", "edit.gif"), ("gooddrag", "edit.mp4")])
def test_cli_trajectory_flag_errors(tmp_path, capsys, method, path):
    from dragkit.cli import main

    image = tmp_path / "in.png"
    photo(32, 32).save(image)
    rc = main(["edit", str(image), "--drag", "4,4:8,8", "--method", method, "--model", str(tmp_path / "none"),
               "--out", str(tmp_path / "o.png"), "--trajectory", str(tmp_path / path)])
    assert rc == 2
    assert "--trajectory" in capsys.readouterr().err
