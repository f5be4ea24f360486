"""SolidDrag (dragkit's own method): the registry, the editor story, and — on the shapes model, where success is known
exactly — that it finishes drags that FastDrag leaves half done, without a ghost."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit.config import METHODS, FastDragConfig, SolidDragConfig
from dragkit.editor import DragEditor
from dragkit.shapes.metrics import drag_metrics
from dragkit.shapes.tasks import make_tasks
from dragkit.types import DragRequest


def test_registry_and_fastdrag_defaults():
    assert METHODS["soliddrag"] is SolidDragConfig and issubclass(SolidDragConfig, FastDragConfig)
    cfg, fast = SolidDragConfig(), FastDragConfig()
    assert (cfg.num_inference_steps, cfg.lora_steps, cfg.kv_copy) == \
        (fast.num_inference_steps, fast.lora_steps, fast.kv_copy)
    assert cfg.inversion_strength == 0.5 and cfg.inverted_steps == 5  # from the shapes-world ablation
    assert cfg.core_threshold is None and cfg.copies_kv


@pytest.fixture(scope="module")
def shapes_editor(shapes_model_dir):
    return DragEditor.from_pretrained(str(shapes_model_dir))


def test_soliddrag_finishes_the_drags_fastdrag_leaves_half_done(shapes_editor):
    errors = {"fastdrag": [], "soliddrag": []}
    ghosts = {"fastdrag": [], "soliddrag": []}
    for task in make_tasks(4):
        for method in errors:
            result = shapes_editor.edit(task.request(), METHODS[method]())
            m = drag_metrics(task.image(), np.asarray(result.image), task.scene, task.index, task.offset)
            errors[method].append(m["drag_error_fraction"])
            ghosts[method].append(m["ghost"])
    # measured (4 tasks): FastDrag ≈ 0.4 of the distance left, SolidDrag ≈ 0.1; a failed move scores 1
    assert np.mean(errors["soliddrag"]) < 0.25 < np.mean(errors["fastdrag"])
    assert max(ghosts["soliddrag"]) < 0.05


def test_featureless_content_falls_back_to_the_fastdrag_warp(tiny_model):
    """A flat image has no object under the handle (the core is the whole region): FastDrag's warp, no crash."""
    editor = DragEditor(tiny_model)
    request = DragRequest(Image.new("RGB", (64, 64), (120, 120, 120)), [(20, 20)], [(40, 28)])
    config = dataclasses.replace(SolidDragConfig(), num_inference_steps=6, inversion_strength=0.5)
    solid = editor.edit(request, config)
    fast = editor.edit(request, METHODS["fastdrag"](num_inference_steps=6, inversion_strength=0.5))
    assert solid.steps == 0 and solid.final_handles == fast.final_handles
    assert torch.isfinite(solid.latent).all()


def test_a_warm_re_edit_reuses_the_inversion_and_its_kv(tiny_model):
    editor = DragEditor(tiny_model)
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    config = dataclasses.replace(SolidDragConfig(), num_inference_steps=6, inversion_strength=0.5)
    request = DragRequest(image, [(20, 20)], [(30, 26)])
    prepared = editor.prepare(image, "", config)
    warm = editor.edit(request, config, prepared=prepared)
    cold = editor.edit(request, config)
    assert warm.inversion_cached and not cold.inversion_cached
    torch.testing.assert_close(warm.latent, cold.latent, atol=0, rtol=0)


def test_generated_image_sdxl_and_bf16(tiny_model, tmp_path_factory):
    """SolidDrag wherever FastDrag runs: a generated image under CFG (the features of the conditional branch), the
    SDXL family (its feature block), bf16 (an fp32 master latent)."""
    from dragkit.config import GenerationConfig
    from dragkit.models import DiffusionModel
    from dragkit.testing import save_tiny_sdxl_model

    config = dataclasses.replace(SolidDragConfig(), num_inference_steps=6)
    editor = DragEditor(tiny_model)
    gen = editor.generate(GenerationConfig(prompt="a disc", num_inference_steps=6, guidance_scale=5.0, width=64,
                                           height=48))
    result = editor.edit(DragRequest(gen.image, [(20, 20)], [(30, 22)]), config, generation=gen)
    assert result.image.size == (64, 48) and torch.isfinite(result.latent).all()

    xl = tmp_path_factory.mktemp("xl") / "model"
    save_tiny_sdxl_model(xl)
    for dtype in ("fp32", "bf16"):
        model = DiffusionModel.from_pretrained(str(xl), device="cpu", dtype=dtype)
        rng = np.random.default_rng(4)
        image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        out = DragEditor(model).edit(DragRequest(image, [(20, 20)], [(36, 30)]), config)
        assert out.config.feature_block == model.family.feature_block and out.latent.dtype == torch.float32
        assert torch.isfinite(out.latent).all()
