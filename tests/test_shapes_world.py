"""The miniature world: scenes (exact ground truth), the training script (runs, resumes, exports a loadable model)
and the shipped model's quality bar on held-out scenes."""

import json
import math

import numpy as np
import pytest
import torch

from dragkit.shapes import scenes
from dragkit.shapes.model import WEIGHTS_DIR


def test_scenes_are_deterministic_and_varied():
    a, b = scenes.random_scene(7), scenes.random_scene(7)
    assert a == b
    assert np.array_equal(a.image(), b.image())
    many = [scenes.random_scene(s) for s in range(200)]
    assert {s.background.kind for s in many} == set(scenes.BACKGROUNDS)
    assert {sh.kind for s in many for sh in s.shapes} == set(scenes.KINDS)
    assert {len(s.shapes) for s in many} == {1, 2, 3}
    for s in many:
        assert len({sh.colour for sh in s.shapes}) == len(s.shapes)  # colours identify objects
        for i in range(len(s.shapes)):
            assert s.mask(i).any()
        masks = [s.mask(i) for i in range(len(s.shapes))]
        assert sum(m.astype(int) for m in masks).max() <= 1  # no overlaps


def test_coverage_geometry_matches_the_analytic_shapes():
    disc = scenes.Shape("disc", "red", 30.0, 20.0, 8.0)
    cov = scenes.shape_coverage(disc, 64)
    assert cov.sum() == pytest.approx(math.pi * 64, rel=0.02)
    cx, cy = scenes.coverage_centroid(cov)
    assert (cx, cy) == pytest.approx((30.0, 20.0), abs=0.02)
    square = scenes.Shape("square", "blue", 31.5, 31.5, 5.0)
    assert scenes.shape_coverage(square, 64).sum() == pytest.approx(100, rel=0.01)
    tri = scenes.Shape("triangle", "green", 32.0, 32.0, 10.0, angle=0.3)
    area = 3 * math.sqrt(3) / 4 * 10.0 ** 2  # equilateral triangle of circumradius 10
    tri_cov = scenes.shape_coverage(tri, 64)
    assert tri_cov.sum() == pytest.approx(area, rel=0.02)
    assert scenes.coverage_centroid(tri_cov) == pytest.approx((32.0, 32.0), abs=0.05)  # centroid = circumcentre
    moved = scenes.shape_coverage(tri.moved(5.0, -3.0), 64)
    assert scenes.coverage_centroid(moved) == pytest.approx((37.0, 29.0), abs=0.05)


def test_rendered_object_has_its_colour_inside_its_mask():
    s = scenes.random_scene(3)
    img = s.image().astype(int)
    for i, shape in enumerate(s.shapes):
        inner = s.coverage(i) == 1.0
        assert np.abs(img[inner] - np.array(shape.rgb)).max() <= 1


@pytest.mark.slow
def test_training_runs_resumes_and_exports_a_loadable_model(tmp_path):
    from dragkit.models import DiffusionModel
    from dragkit.shapes.train import train

    work = tmp_path / "work"
    train(work, None, vae_steps=2, unet_steps=2, vae_batch=2, unet_batch=2, checkpoint_every=1, progress=False)
    assert torch.load(work / "vae.pt", weights_only=True)["step"] == 2
    assert torch.load(work / "unet.pt", weights_only=True)["step"] == 2
    # Same command with more steps resumes (one more step each), then exports a diffusers folder.
    train(work, tmp_path / "model", vae_steps=3, unet_steps=3, vae_batch=2, unet_batch=2, checkpoint_every=1,
          progress=False)
    assert torch.load(work / "unet.pt", weights_only=True)["step"] == 3
    model = DiffusionModel.from_pretrained(str(tmp_path / "model"), device="cpu", dtype="fp32")
    assert model.vae_scale_factor == 4
    assert model.vae.config.scaling_factor != 1.0  # measured from the latents
    assert not (tmp_path / "model.tmp").exists()


def test_cli_train_rejects_bad_arguments(capsys):
    from dragkit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["shapes", "train", "--work", "x", "--vae-steps", "0"])
    assert exc.value.code == 2


@pytest.fixture(scope="module")
def shipped_model(shapes_model_dir):
    from dragkit.models import DiffusionModel

    return DiffusionModel.from_pretrained(str(shapes_model_dir), device="cpu", dtype="fp32")


def test_shipped_weights_are_small_safetensors():
    assert (WEIGHTS_DIR / "model_index.json").exists(), "the trained shapes model must ship with the package"
    files = [p for p in WEIGHTS_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".ckpt", ".pt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)


def test_shipped_model_meets_its_quality_bar(shipped_model):
    from dragkit.shapes.quality import inversion_psnr, vae_psnr

    v = vae_psnr(shipped_model, n=40)
    assert np.mean(v) >= 30.0
    inv = inversion_psnr(shipped_model, n=4)
    assert np.mean(inv) >= 25.0


@pytest.mark.slow
def test_quality_command_writes_report_and_grid(tmp_path, shapes_model_dir):
    from dragkit.cli import main

    assert main(["shapes", "quality", "--model", str(shapes_model_dir), "--out", str(tmp_path), "--n-vae", "4",
                 "--n-inversion", "1"]) == 0
    report = json.loads((tmp_path / "quality.json").read_text())
    assert report["n_vae"] == 4 and report["vae_psnr_mean"] > 0
    from PIL import Image

    grid = Image.open(tmp_path / "samples.png")
    assert grid.size == (8 * 64, 8 * 64)
