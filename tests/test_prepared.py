"""The prepared image (issue 16, interactive speed): a re-edit of the same image reuses the identity LoRA, the inverted
latent and GoodDrag's undragged trajectory, gives the same result as a cold edit, and refuses another image."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit.config import GenerationConfig, default_config
from dragkit.editor import DragEditor
from dragkit.types import DragError, DragRequest

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def editor(tiny_model):
    return DragEditor(tiny_model)


def image(seed=0, size=64):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def small(method, **kw):
    config = dataclasses.replace(default_config(method), **{"lora_steps": 3, "num_inference_steps": 10, **kw})
    if method == "dragdiffusion":
        return dataclasses.replace(config, optimization_steps=4)
    return dataclasses.replace(config, drag_denoise_steps=2, trackings_per_denoise=1, supervision_steps_per_tracking=2)


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def stage(self, name):
        return [e for e in self.events if e.stage == name]


class ForwardCount:
    """UNet forwards, by a forward hook."""

    def __init__(self, unet):
        self.n = 0
        self.handle = unet.register_forward_hook(self)

    def __call__(self, *_):
        self.n += 1


@pytest.mark.parametrize("method", ["dragdiffusion", "gooddrag"])
def test_a_warm_re_edit_reuses_lora_and_inversion_and_equals_a_cold_edit(editor, method):
    config = small(method)
    request = DragRequest(image(), [(20, 20)], [(30, 24)], prompt="a photo")
    cold = editor.edit(request, config)

    prepared = editor.prepare(request.image, request.prompt, config)
    assert set(prepared.loras) and set(prepared.latents) and prepared.posterior is not None
    events = Recorder()
    warm = editor.edit(request, config, callback=events, prepared=prepared)
    assert warm.lora_cached and warm.inversion_cached and not cold.lora_cached and not cold.inversion_cached
    assert [(e.step, e.cached) for e in events.stage("lora")] == [(3, True)]
    assert [e.cached for e in events.stage("inversion")] == [True]
    torch.testing.assert_close(warm.latent, cold.latent, rtol=0, atol=1e-6)  # same numbers, in one process
    assert warm.final_handles == cold.final_handles

    # new points: still warm
    again = editor.edit(DragRequest(request.image, [(40, 40)], [(44, 30)], prompt="a photo"), config,
                        prepared=prepared)
    assert again.lora_cached and again.inversion_cached


def test_gooddrag_re_edits_reuse_the_undragged_trajectory(editor, tiny_model):
    config = small("gooddrag")
    request = DragRequest(image(1), [(20, 20)], [(30, 24)], prompt="x")
    prepared = editor.prepare(request.image, request.prompt, config)
    counts = []
    for _ in range(2):
        counter = ForwardCount(tiny_model.unet)
        try:
            result = editor.edit(request, config, prepared=prepared)
        finally:
            counter.handle.remove()
        counts.append(counter.n)
    (trajectory,) = prepared.undragged.values()
    assert len(trajectory) == 2  # F_orig, x̄ at both drag timesteps
    assert counts[1] == counts[0] - 1  # the undragged forward at t* − 1 is not run again (t* comes free)
    assert result.inversion_cached


def test_other_settings_recompute_only_what_they_change(editor):
    config = small("dragdiffusion")
    request = DragRequest(image(2), [(20, 20)], [(30, 24)])
    prepared = editor.prepare(request.image, "", config)
    stronger = dataclasses.replace(config, inversion_strength=0.5)
    result = editor.edit(request, stronger, prepared=prepared)
    assert result.lora_cached and not result.inversion_cached
    assert len(prepared.latents) == 2 and len(prepared.loras) == 1
    result = editor.edit(request, dataclasses.replace(config, lora_steps=2), prepared=prepared)
    assert not result.lora_cached and not result.inversion_cached


def test_preparing_into_a_prepared_image_adds_only_what_is_missing(editor):
    """The web app prepares again when a setting changes: into the image's prepared image, so another strength
    inverts again but keeps the LoRA (no LoRA step runs)."""
    from dragkit.family import resolve

    config = resolve(small("dragdiffusion"), editor.model.family, editor.model.default_size)  # as edits run it
    prepared = editor.prepare(image(6), "", config)
    assert prepared.holds(config, 0) and not prepared.holds(config, 1)
    events = []
    stronger = dataclasses.replace(config, inversion_strength=0.5)
    assert not prepared.holds(stronger, 0)
    again = editor.prepare(image(6), "", stronger, callback=events.append, prepared=prepared)
    assert again is prepared and prepared.holds(stronger, 0) and prepared.holds(config, 0)
    assert [(e.stage, e.cached) for e in events if e.stage == "lora"] == [("lora", True)]
    with pytest.raises(DragError, match="not the prepared image"):
        editor.prepare(image(7), "", config, prepared=prepared)


def test_a_prepared_image_belongs_to_one_image_prompt_and_model(editor, tiny_model_dir):
    from dragkit.models import DiffusionModel

    config = small("dragdiffusion", lora_steps=0)
    prepared = editor.prepare(image(3), "a cat", config)
    for request, message in [
        (DragRequest(image(4), [(20, 20)], [(30, 24)], prompt="a cat"), "not the prepared image"),
        (DragRequest(image(3, 48), [(20, 20)], [(30, 24)], prompt="a cat"), "not the prepared image"),
        (DragRequest(image(3), [(20, 20)], [(30, 24)], prompt="a dog"), "another prompt"),
    ]:
        with pytest.raises(DragError, match=message):
            editor.edit(request, config, prepared=prepared)
    other = DragEditor(DiffusionModel.from_pretrained(str(tiny_model_dir), device="cpu", dtype="bf16"))
    with pytest.raises(DragError, match="prepared on"):
        other.edit(DragRequest(image(3), [(20, 20)], [(30, 24)], prompt="a cat"), config, prepared=prepared)


def test_a_generated_image_needs_no_preparation(editor):
    generation = editor.generate(GenerationConfig(prompt="x", width=64, height=64, num_inference_steps=10))
    request = DragRequest(generation.image, [(20, 20)], [(30, 24)], prompt="x")
    prepared = editor.prepare(generation.image, "x", small("dragdiffusion", lora_steps=0))
    with pytest.raises(DragError, match="needs no preparation"):
        editor.edit(request, small("dragdiffusion", lora_steps=0), generation=generation, prepared=prepared)


def test_without_the_mask_term_dragdiffusion_stops_the_forward_at_the_feature_block(editor, tiny_model):
    """No mask drawn → no mask term → ε is unused: the drag forwards end at the feature block (the last decoder block
    never runs while dragging), with or without a mask the edit still runs end to end."""
    calls = {"last_block": 0}
    last = tiny_model.unet.up_blocks[-1]
    handle = last.register_forward_hook(lambda *_: calls.__setitem__("last_block", calls["last_block"] + 1))
    config = small("dragdiffusion", lora_steps=0)
    try:
        result = editor.edit(DragRequest(image(5), [(20, 20)], [(30, 24)]), config)
        unmasked = calls["last_block"]
        calls["last_block"] = 0
        mask = np.zeros((64, 64), np.uint8)
        mask[10:40, 10:40] = 1
        masked = editor.edit(DragRequest(image(5), [(20, 20)], [(30, 24)], mask=mask), config)
    finally:
        handle.remove()
    inversion, denoising = config.inverted_steps, config.inverted_steps  # one forward per step each
    assert unmasked == inversion + denoising  # none of the drag's forwards reached the last block
    drag_forwards = calls["last_block"] - inversion - denoising  # with the mask term: every forward runs it all
    assert drag_forwards in (masked.steps, masked.steps + 1)  # one per Adam step (+ the one that found it done)
    assert result.steps > 0


def test_two_working_sizes_never_share_a_disk_cached_lora(tiny_model, tmp_path):
    """Issue 22: the on-disk LoRA key is built from the same settings as the in-memory one (max_side included), so a
    LoRA trained on the 64² working image is not reused for the 32² one — and it is reused for 64² again."""
    from dragkit.lora import LoraCache

    editor = DragEditor(tiny_model, lora_cache=LoraCache(tmp_path / "loras"))
    request = DragRequest(image(7), [(20, 20)], [(30, 24)], prompt="p")
    full = small("dragdiffusion", max_side=64)
    first = editor.edit(request, full)
    half = editor.edit(request, dataclasses.replace(full, max_side=32))
    again = editor.edit(request, full)
    assert not first.lora_cached and not half.lora_cached and again.lora_cached
    assert len(list((tmp_path / "loras").glob("*.safetensors"))) == 2
