"""The story of one edit (DragEditor.edit) on the tiny offline model: one working image for every stage, the method
registry, the config actually used on the result, LoRA cache hits reported, the identity LoRA frozen while dragging,
and one validation for every config field."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import editor as editor_module
from dragkit import stages
from dragkit.config import (METHODS, DragDiffusionConfig, GenerationConfig, GoodDragConfig, MethodConfig,
                            apply_overrides, configs_with_overrides, default_config, field_help)
from dragkit.editor import OPTIMIZE, DragEditor
from dragkit.family import SD, resolve
from dragkit.lora import LoraCache
from dragkit.types import DragError, DragRequest

FAST = dict(lora_steps=2, num_inference_steps=10)


@pytest.fixture(scope="module")
def editor(tiny_model):
    return DragEditor(tiny_model)


def odd_sized_request() -> DragRequest:
    """61×45: not multiples of 8, so the working image (64×48) is a resample of the input."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (45, 61, 3), dtype=np.uint8))
    return DragRequest(image, [(20, 20)], [(30, 22)], prompt="a cat")


def test_identity_lora_trains_on_the_working_image_inversion_uses(editor, monkeypatch):
    """One working-size image for LoRA, inversion and supervision (the LoRA once saw a bicubic resample while the
    drag saw a bilinear one)."""
    seen = {}
    real = editor_module.train_identity_lora

    def spy(unet, scheduler_config, mean, std, text, **kw):
        seen["mean"], seen["text"] = mean.clone(), text.cond.clone()
        return real(unet, scheduler_config, mean, std, text, **kw)

    monkeypatch.setattr(editor_module, "train_identity_lora", spy)
    request = odd_sized_request()
    config = DragDiffusionConfig(optimization_steps=1, **FAST)
    editor.edit(request, config)
    edit = stages.start_edit(editor.model, request, config)
    assert edit.working_size == (64, 48)
    torch.testing.assert_close(seen["mean"], stages.encode(editor.model, edit)[0], atol=0, rtol=0)
    torch.testing.assert_close(seen["text"], edit.text.cond, atol=0, rtol=0)


def test_registry_maps_every_method_to_its_config_and_optimize():
    assert list(OPTIMIZE) == list(METHODS) == ["dragdiffusion", "gooddrag", "fastdrag", "soliddrag"]
    for name, cls in METHODS.items():
        assert cls.method == name and issubclass(cls, MethodConfig) and default_config(name) == cls()
    with pytest.raises(DragError, match="unknown method"):
        default_config("dragnuwa")


@pytest.mark.parametrize("config", [DragDiffusionConfig(optimization_steps=2, **FAST),
                                    GoodDragConfig(drag_denoise_steps=1, trackings_per_denoise=1, **FAST)])
def test_result_carries_the_config_used_and_reports_the_lora_cache(tiny_model, tmp_path, config):
    editor = DragEditor(tiny_model, lora_cache=LoraCache(tmp_path / "lora"))
    request = odd_sized_request()
    first_events, second_events = [], []
    first = editor.edit(request, config, callback=first_events.append)
    second = editor.edit(request, config, callback=second_events.append)
    assert first.config == second.config == resolve(config, SD, tiny_model.default_size)  # family layers, max_side
    assert (first.config.feature_block, first.config.reference_attention_blocks) == (2, (2, 3))
    assert not first.lora_cached and second.lora_cached
    assert [e.step for e in first_events if e.stage == "lora"] == [1, 2]
    assert not any(e.cached for e in first_events)
    lora = [e for e in second_events if e.stage == "lora"]
    assert len(lora) == 1 and lora[0].cached and lora[0].step == lora[0].total == 2
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
    assert list(first.timings) == ["lora", "inversion", "optimization", "denoising", "total"]
    assert all(type(k) is str for k in first.timings)  # plain names: strict JSON encoders (orjson) take them
    assert first.timings["total"] >= sum(v for k, v in first.timings.items() if k != "total")


def test_no_lora_gradients_while_dragging(editor, monkeypatch):
    """The identity LoRA is attached frozen during the drag: its weights get no gradient."""
    grads = []
    real = editor_module.OPTIMIZE["dragdiffusion"]

    def spy(fm, edit, z_t, config, callback=None):
        out = real(fm, edit, z_t, config, callback)
        lora = [p for n, p in fm.model.unet.named_parameters() if "dragkit_identity" in n]
        grads.append((len(lora), [p.requires_grad for p in lora], [p.grad for p in lora]))
        return out

    monkeypatch.setitem(editor_module.OPTIMIZE, "dragdiffusion", spy)
    editor.edit(odd_sized_request(), DragDiffusionConfig(optimization_steps=2, **FAST))
    (count, requires, gradients), = grads
    assert count > 0 and not any(requires) and all(g is None for g in gradients)
    assert not any("dragkit_identity" in n for n, _ in editor.model.unet.named_parameters())  # removed afterwards


def test_not_a_method_config_is_refused(editor):
    with pytest.raises(TypeError, match="not a method config"):
        editor.edit(odd_sized_request(), GenerationConfig())


# --- one validation, help on every field -----------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [DragDiffusionConfig, GoodDragConfig, GenerationConfig])
def test_every_field_has_help(cls):
    helps = field_help(cls)
    assert set(helps) == {f.name for f in dataclasses.fields(cls)} and all(len(h) > 10 for h in helps.values())


def test_shared_fields_live_on_the_base_with_per_method_defaults():
    shared = {f.name for f in dataclasses.fields(MethodConfig)}
    assert len(shared) == 17
    for cls in (DragDiffusionConfig, GoodDragConfig):
        assert [f.name for f in dataclasses.fields(cls)][:17] == [f.name for f in dataclasses.fields(MethodConfig)]
    assert (DragDiffusionConfig().inverted_steps, GoodDragConfig().inverted_steps) == (35, 38)
    assert (DragDiffusionConfig().latent_lr, GoodDragConfig().latent_lr) == (0.01, 0.02)


@pytest.mark.parametrize("cls", [DragDiffusionConfig, GoodDragConfig])
@pytest.mark.parametrize("assignment,message", [
    ("latent_lr=nan", "latent_lr must be a finite number"),
    ("latent_lr=inf", "latent_lr must be a finite number"),
    ("latent_lr=0", "latent_lr must be > 0"),
    ("stop_distance=-1", "stop_distance must be > 0"),
    ("stop_distance=nan", "stop_distance must be a finite number"),
    ("mask_weight=inf", "mask_weight must be a finite number"),
    ("inversion_strength=1.5", "inversion_strength must be <= 1"),
    ("num_inference_steps=100000000", "num_inference_steps must be <= 1000"),
    ("lora_rank=0", "lora_rank must be >= 1"),
    ("reference_attention_blocks=-1,2", "reference_attention_blocks must be >= 0"),
    ("inversion_strength=0.001", "rounds to 0 inverted steps"),
])
def test_one_validation_for_both_methods(cls, assignment, message):
    with pytest.raises(DragError, match=message):
        apply_overrides(cls(), [assignment])


def test_generation_settings_are_validated_the_same_way():
    for kwargs, message in [({"guidance_scale": math.nan}, "guidance_scale must be a finite"),
                            ({"freeu_b1": math.nan}, "freeu_b1 must be a finite"),
                            ({"freeu_b1": 0.0}, "freeu_b1 must be > 0"),
                            ({"scheduler": "euler"}, "unknown scheduler")]:
        with pytest.raises(DragError, match=message):
            GenerationConfig(**kwargs)


def test_set_applies_to_every_method_that_has_the_field():
    configs = configs_with_overrides({m: default_config(m) for m in METHODS},
                                     ["latent_lr=0.05", "drag_step_size=2", "optimization_steps=3"])
    assert configs["dragdiffusion"].latent_lr == configs["gooddrag"].latent_lr == 0.05
    assert configs["gooddrag"].drag_step_size == 2 and configs["dragdiffusion"].optimization_steps == 3
    with pytest.raises(DragError, match="no requested method"):
        configs_with_overrides({"dragdiffusion": DragDiffusionConfig()}, ["drag_step_size=2"])
