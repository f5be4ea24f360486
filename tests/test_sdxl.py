"""SDXL on a tiny random SDXL-topology model built offline: the family is detected from the model, the conditioning
is what diffusers' own SDXL pipeline builds, and both methods drag real and generated images end to end."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from dragkit import stages
from dragkit.config import DragDiffusionConfig, GenerationConfig, GoodDragConfig
from dragkit.editor import DragEditor
from dragkit.family import SD, SDXL
from dragkit.models import DiffusionModel, detect_family
from dragkit.types import DragRequest

FAST_DD = DragDiffusionConfig(lora_steps=2, optimization_steps=3, num_inference_steps=10)
FAST_GD = GoodDragConfig(lora_steps=2, drag_denoise_steps=2, trackings_per_denoise=2, num_inference_steps=10)


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    from dragkit.testing import save_tiny_sdxl_model

    return save_tiny_sdxl_model(tmp_path_factory.mktemp("sdxl") / "model")


@pytest.fixture(scope="module")
def sdxl(sdxl_dir):
    return DiffusionModel.from_pretrained(str(sdxl_dir), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def pipe(sdxl_dir):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(str(sdxl_dir), local_files_only=True)


def photo(w=64, h=48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_family_is_detected_from_the_model(sdxl, sdxl_dir, tiny_model, tiny_model_dir):
    assert detect_family(str(sdxl_dir)) == "sdxl" and detect_family(str(tiny_model_dir)) == "sd"
    assert sdxl.family == SDXL and tiny_model.family == SD
    assert sdxl.text_encoder_2 is not None and sdxl.force_zeros_for_empty_prompt
    assert sdxl.vae.config.scaling_factor == 0.13025 and sdxl.default_size == 128


@pytest.mark.parametrize("negative", ["", "blurry, low quality"])
def test_conditioning_is_what_the_diffusers_sdxl_pipeline_builds(sdxl, pipe, negative):
    h, w = 48, 64
    text = sdxl.conditioning("a red disc", (h, w), negative, 7.5)
    embeds, neg_embeds, pooled, neg_pooled = pipe.encode_prompt(
        "a red disc", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
        negative_prompt=negative or None)
    torch.testing.assert_close(text.cond, embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(text.pooled, pooled, atol=1e-6, rtol=0)
    torch.testing.assert_close(text.uncond, neg_embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(text.uncond_pooled, neg_pooled, atol=1e-6, rtol=0)
    if not negative:  # force_zeros_for_empty_prompt: the negative branch is zeros, not the encoding of ""
        assert not text.uncond.any() and not text.uncond_pooled.any()
    time_ids = pipe._get_add_time_ids((h, w), (0, 0), (h, w), dtype=embeds.dtype,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    torch.testing.assert_close(text.time_ids, time_ids, atol=0, rtol=0)
    # the pipeline's guided UNet call: [negative, positive] for the hidden states, pooled embeddings and size ids
    kwargs = text.unet_kwargs(1)
    torch.testing.assert_close(kwargs["encoder_hidden_states"], torch.cat([neg_embeds, embeds]), atol=1e-6, rtol=0)
    added = kwargs["added_cond_kwargs"]
    torch.testing.assert_close(added["text_embeds"], torch.cat([neg_pooled, pooled]), atol=1e-6, rtol=0)
    torch.testing.assert_close(added["time_ids"], torch.cat([time_ids, time_ids]), atol=0, rtol=0)


def test_real_image_conditioning_is_unguided_with_the_working_size(sdxl):
    text = sdxl.conditioning("a cat", (40, 56))
    assert not text.guided and text.time_ids.tolist() == [[40, 56, 0, 0, 40, 56]]
    kwargs = text.unet_kwargs(3)
    assert kwargs["encoder_hidden_states"].shape == (3, 77, 16 + 24)  # both encoders' hidden states
    assert kwargs["added_cond_kwargs"]["text_embeds"].shape == (3, 24)  # the second's pooled embedding
    assert kwargs["added_cond_kwargs"]["time_ids"].shape == (3, 6)


@pytest.mark.parametrize("config", [FAST_DD, FAST_GD], ids=["dragdiffusion", "gooddrag"])
def test_real_image_drag_end_to_end(sdxl, config):
    request = DragRequest(photo(61, 45), [(20, 20)], [(34, 24)], prompt="a red disc")
    result = DragEditor(sdxl).edit(request, config)
    assert result.image.size == (61, 45) and len(result.final_handles) == 1 and result.steps > 0
    assert (result.config.feature_block, result.config.reference_attention_blocks) == (1, (0, 1))


@pytest.mark.parametrize("scheduler", ["ddim"])  # DPM++ is restarted at t* (sampling.py): close, not exact
def test_undragged_generated_edit_reproduces_the_generation(sdxl, scheduler):
    editor = DragEditor(sdxl)
    gen = editor.generate(GenerationConfig(prompt="a red disc", negative_prompt="", num_inference_steps=10,
                                           guidance_scale=5.0, scheduler=scheduler, width=64, height=48))
    assert gen.image.size == (64, 48) and gen.latents.shape == (11, 4, 6, 8)
    config = DragDiffusionConfig(optimization_steps=0, reference_attention=False)
    result = editor.edit(DragRequest(gen.image, [(20, 20)], [(30, 22)]), config, generation=gen)
    torch.testing.assert_close(result.latent, gen.latents[-1:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("config", [FAST_DD, FAST_GD], ids=["dragdiffusion", "gooddrag"])
def test_generated_image_drag_end_to_end(sdxl, config):
    editor = DragEditor(sdxl)
    gen = editor.generate(GenerationConfig(prompt="a red disc", num_inference_steps=10, width=64, height=48))
    result = editor.edit(DragRequest(gen.image, [(20, 20)], [(34, 24)]), config, generation=gen)
    assert result.image.size == (64, 48) and result.config.lora_steps == 0


def test_default_canvas_is_the_models(sdxl):
    gen = DragEditor(sdxl).generate(GenerationConfig(prompt="x", num_inference_steps=2, guidance_scale=1.0))
    assert gen.image.size == (128, 128) and (gen.config.width, gen.config.height) == (128, 128)


def test_fp16_keeps_the_vae_in_fp32_when_its_config_says_force_upcast(sdxl_dir):
    model = DiffusionModel.from_pretrained(str(sdxl_dir), device="cpu", dtype="fp16")
    assert model.unet.dtype == torch.float16 and model.vae.dtype == torch.float32
    assert model.image_to_tensor(photo()).dtype == torch.float32


def test_the_feature_map_is_the_latent_resolution(sdxl):
    """SDXL's up_blocks[1] plays SD-1.5's up_blocks[2] role: its output is at the latent resolution (1/8)."""
    request = DragRequest(photo(64, 48), [(20, 20)], [(30, 22)])
    config = dataclasses.replace(FAST_DD, feature_block=1)
    edit = stages.start_edit(sdxl, request, config)
    from dragkit.features import capture_features

    with torch.no_grad(), capture_features(sdxl.unet, 1) as cap:
        stages.unet_eps(sdxl, torch.zeros(1, 4, 6, 8), 500, edit.text)
        assert cap.pop().shape[-2:] == (6, 8)


def test_single_file_sdxl_checkpoint_in_the_original_layout_loads_with_identical_weights(sdxl_dir, sdxl, tmp_path):
    """An SDXL finetune as one original-layout (sgm) .safetensors file — OpenCLIP-layout second encoder — loads
    through ``--model FILE --model-config DIR``: detected as SDXL, every weight equal to the folder's."""
    from safetensors.torch import load_file, save_file

    from sd_original_layout import sdxl_pipeline_to_original

    parts = {name: load_file(str(sdxl_dir / name / file)) for name, file in (
        ("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"), ("text_encoder_2", "model.safetensors"))}
    state = sdxl_pipeline_to_original(parts["unet"], parts["vae"], parts["text_encoder"], parts["text_encoder_2"],
                                      unet_layers=1, vae_layers=1)
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in state
    assert "model.diffusion_model.label_emb.0.0.weight" in state
    file = tmp_path / "sdxl-finetune.safetensors"
    save_file(state, str(file))
    assert detect_family(str(file)) == "sdxl"
    loaded = DiffusionModel.from_pretrained(str(file), config=str(sdxl_dir), device="cpu", dtype="fp32")
    assert loaded.family == SDXL
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want, got = getattr(sdxl, name).state_dict(), getattr(loaded, name).state_dict()
        assert set(got) >= set(want), name
        for key, value in want.items():
            assert torch.equal(got[key], value), f"{name}.{key}"


def test_the_web_app_adapts_to_an_sdxl_model(sdxl, tmp_path):
    """No extra step in `dragkit ui`: the layer defaults and the Generate tab's size follow the loaded model."""
    pytest.importorskip("gradio")
    from dragkit.ui.context import AppContext

    ctx = AppContext.create(DragEditor(sdxl), work_dir=str(tmp_path))
    for method in ctx.methods:
        assert (ctx.defaults[method].feature_block, ctx.defaults[method].reference_attention_blocks) == (1, (0, 1))
    assert ctx.gen_params["width"].value == ctx.gen_params["height"].value == sdxl.default_size == 128


def test_the_shipped_xl_toy_is_an_sdxl_model():
    """`--model shapes-xl`: the XL toy shipped beside the SD toy loads as SDXL, at its 64² canvas."""
    from dragkit.cli.common import resolve_model

    model = DiffusionModel.from_pretrained(resolve_model("shapes-xl"), device="cpu", dtype="fp32")
    assert model.family == SDXL and model.default_size == 64 and model.force_zeros_for_empty_prompt
    assert [type(b).__name__ for b in model.unet.up_blocks] == ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                                               "UpBlock2D"]
