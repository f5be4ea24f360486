"""Generated-image mode (DragDiffusion §4.3, appendix C) on the tiny offline model: generation and its saved record,
CFG features, the drag of a generated image (both methods, with and without guidance, every sampler), FreeU,
large and non-square sizes, and a user's style LoRA."""

import dataclasses

import numpy as np
import pytest
import torch

from dragkit import stages
from dragkit.config import DragDiffusionConfig, GenerationConfig, GoodDragConfig
from dragkit.editor import DragEditor
from dragkit.freeu import freeu
from dragkit.generation import load_generation, record_paths, save_generation
from dragkit.guidance import TextConditioning, cfg_features, cfg_output, cfg_weight
from dragkit.types import DragError, DragRequest

FAST_DD = DragDiffusionConfig(optimization_steps=3)
FAST_GD = GoodDragConfig(drag_denoise_steps=2, trackings_per_denoise=2)


def gen_config(**kw):
    return GenerationConfig(**{"prompt": "a cat", "seed": 3, "num_inference_steps": 10, "width": 64, "height": 48,
                               **kw})


@pytest.fixture(scope="module")
def editor(tiny_model):
    return DragEditor(tiny_model)


# --- CFG maths on random tensors ------------------------------------------------------------------------------------

def test_cfg_features_shape_and_weights():
    f_u, f_c = torch.randn(1, 5, 6, 7), torch.randn(1, 5, 6, 7)
    out = cfg_features(f_u, f_c, 7.5)
    assert out.shape == (1, 10, 6, 7)
    c = 7.5 / 14.0
    assert cfg_weight(7.5) == pytest.approx(c) and c == pytest.approx(0.5357, abs=1e-4)
    torch.testing.assert_close(out[:, :5], (1 - c) * f_u)
    torch.testing.assert_close(out[:, 5:], c * f_c)
    assert cfg_weight(1.0) == 1.0 and torch.count_nonzero(cfg_features(f_u, f_c, 1.0)[:, :5]) == 0
    torch.testing.assert_close(cfg_output(f_u, f_c, 7.5), f_u + 7.5 * (f_c - f_u))


def test_guided_batch_layout_is_pairs_of_source_and_edit():
    cond, uncond = torch.full((1, 3, 2), 1.0), torch.full((1, 3, 2), -1.0)
    text = TextConditioning(cond, uncond, 7.5)
    z = torch.stack([torch.full((4, 2, 2), 10.0), torch.full((4, 2, 2), 20.0)])  # [source, edited]
    batch, emb = text.latents(z), text.embeddings(2)
    # [uncond_src, uncond_edit, cond_src, cond_edit]: consecutive (source, edited) pairs for reference attention
    assert batch[:, 0, 0, 0].tolist() == [10, 20, 10, 20] and emb[:, 0, 0].tolist() == [-1, -1, 1, 1]
    raw = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 4, 2, 2)
    torch.testing.assert_close(text.output(raw)[:, 0, 0, 0], torch.tensor([0 + 7.5 * 2, 1 + 7.5 * 2]))
    assert not TextConditioning(cond, uncond, 1.0).guided and not TextConditioning(cond).guided


# --- generation and its record --------------------------------------------------------------------------------------

def test_generation_latents_are_saved_and_reloaded(editor, tmp_path):
    gen = editor.generate(gen_config(guidance_scale=7.5, negative_prompt="blurry"))
    assert gen.image.size == (64, 48) and gen.latents.shape == (11, 4, 6, 8)
    written = save_generation(gen, tmp_path / "gen.png")
    assert [p.name for p in written] == ["gen.png", "gen.generation.safetensors", "gen.generation.json"]
    back = load_generation(tmp_path / "gen.png")
    assert torch.equal(back.latents, gen.latents) and back.config == gen.config and back.timesteps == gen.timesteps
    assert back.model == editor.model.name and np.array_equal(np.asarray(back.image), np.asarray(gen.image))
    # the final latent decodes to the image; generation is deterministic in the seed
    again = editor.generate(gen_config(guidance_scale=7.5, negative_prompt="blurry"))
    assert torch.equal(again.latents, gen.latents)
    assert not torch.equal(editor.generate(gen_config(seed=4)).latents[0], gen.latents[0])


def test_record_errors_are_one_line(editor, tmp_path):
    from PIL import Image

    gen = editor.generate(gen_config())
    Image.new("RGB", (64, 48)).save(tmp_path / "plain.png")
    with pytest.raises(DragError, match="has no saved generation"):
        load_generation(tmp_path / "plain.png")
    save_generation(gen, tmp_path / "gen.png")
    Image.new("RGB", (64, 48), (9, 9, 9)).save(tmp_path / "gen.png")  # overwritten after generation
    with pytest.raises(DragError, match="changed after it was generated"):
        load_generation(tmp_path / "gen.png")
    record_paths(tmp_path / "gen.png")[1].write_text("{not json")
    with pytest.raises(DragError, match="not a readable dragkit generation record"):
        load_generation(tmp_path / "gen.png")
    with pytest.raises(DragError, match="not a multiple of 8"):
        editor.generate(gen_config(width=60))
    with pytest.raises(DragError, match="unknown scheduler"):
        gen_config(scheduler="euler")
    with pytest.raises(DragError, match="save generated images as .png"):
        save_generation(gen, tmp_path / "other.jpg")
    assert not (tmp_path / "other.jpg").exists() and not record_paths(tmp_path / "other.jpg")[0].exists()


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++2m", "dpm++2m-karras"])
def test_first_drag_forward_reproduces_the_generation(editor, scheduler):
    """z_{t*} is the saved latent; the drag's conditioning and one-step map are the generation's: for DDIM, the step
    from z_{t*} lands exactly on the saved next latent (the mask term's target). Multistep DPM++ is restarted at t*
    (first-order step on the solver's own timesteps), so it lands near, not on, the second-order saved latent."""
    gen = editor.generate(gen_config(guidance_scale=5.0, scheduler=scheduler))
    config = dataclasses.replace(DragDiffusionConfig(), num_inference_steps=10)
    request = DragRequest(gen.image, [(20, 20)], [(30, 20)])
    edit = stages.start_edit(editor.model, request, config, gen)
    assert edit.text.guided and edit.t_index == 3
    z = gen.latent_at(edit.t_index)
    eps = stages.unet_eps(editor.model, z, edit.t_star, edit.text)
    nxt = edit.step(eps, edit.t_index, z)
    saved = gen.latent_at(edit.t_index + 1)
    if scheduler == "ddim":
        torch.testing.assert_close(nxt, saved, atol=1e-5, rtol=0)
    else:
        assert (nxt - saved).abs().max() < 0.5 * saved.abs().max()
    torch.testing.assert_close(edit.step(eps, edit.t_index, z), nxt)  # a pure function: the template is untouched


@pytest.mark.parametrize("guidance", [1.0, 7.5])
@pytest.mark.parametrize("method", ["dragdiffusion", "gooddrag"])
def test_drag_a_generated_image_end_to_end(editor, guidance, method):
    gen = editor.generate(gen_config(guidance_scale=guidance))
    mask = np.zeros((48, 64), np.uint8)
    mask[8:40, 8:56] = 1
    request = DragRequest(gen.image, [(20, 24)], [(34, 26)], mask)
    events = []
    result = editor.edit(request, FAST_DD if method == "dragdiffusion" else FAST_GD, callback=events.append,
                         generation=gen)
    assert result.image.size == (64, 48) and result.latent.shape == (1, 4, 6, 8)
    stages_seen = {e.stage for e in events}
    assert "lora" not in stages_seen and "inversion" not in stages_seen  # no LoRA, no inversion
    assert {"optimization", "denoising"} <= stages_seen and result.steps > 0


def test_without_drag_the_generation_is_reproduced(editor):
    """Zero optimisation steps and no control: denoising z_{t*} with the generation's DDIM sampler and CFG returns
    the generation's final latent."""
    gen = editor.generate(gen_config(guidance_scale=7.5))
    request = DragRequest(gen.image, [(20, 24)], [(34, 26)])
    config = DragDiffusionConfig(optimization_steps=0, reference_attention=False)
    result = editor.edit(request, config, generation=gen)
    torch.testing.assert_close(result.latent, gen.latents[-1:], atol=1e-5, rtol=0)


def test_reference_attention_with_guidance_runs_a_batch_of_four(editor):
    gen = editor.generate(gen_config(guidance_scale=7.5))
    request = DragRequest(gen.image, [(20, 24)], [(34, 26)])
    config = dataclasses.replace(DragDiffusionConfig(), num_inference_steps=10)
    edit = stages.start_edit(editor.model, request, config, gen)
    z = gen.latent_at(edit.t_index)
    sizes = []
    hook = editor.model.unet.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        *_, pair = stages.denoising(editor.model, edit, torch.cat([z, z + 0.1 * torch.randn_like(z)]), edit.t_index,
                                    (2, 3))
    finally:
        hook.remove()
    assert set(sizes) == {4}
    # the source branch attends to itself only: it is denoised exactly as without control
    *_, plain = stages.denoising(editor.model, edit, z, edit.t_index)
    torch.testing.assert_close(pair[:1], plain, atol=1e-4, rtol=0)


# --- FreeU and sizes ------------------------------------------------------------------------------------------------

def test_freeu_changes_the_output_and_turns_off(editor, tmp_path):
    plain = editor.generate(gen_config())
    with_freeu = editor.generate(gen_config(freeu_b1=1.5, freeu_b2=1.6, freeu_s1=0.9, freeu_s2=0.2))
    assert not torch.equal(plain.latents[-1], with_freeu.latents[-1])
    assert torch.equal(editor.generate(gen_config()).latents, plain.latents)  # off again afterwards
    assert all(getattr(b, "b1", None) is None for b in editor.model.unet.up_blocks)
    with freeu(editor.model.unet, 1.0, 1.0, 1.0, 1.0) as active:
        assert not active
    # FreeU stays on for the drag of its generation, and gradients flow through it
    request = DragRequest(with_freeu.image, [(20, 24)], [(34, 26)])
    result = editor.edit(request, FAST_DD, generation=with_freeu)
    assert result.steps > 0 and all(getattr(b, "b1", None) is None for b in editor.model.unet.up_blocks)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(768, 512), (512, 1024)])
def test_large_and_non_square_sizes_keep_their_shapes(editor, size):
    w, h = size
    gen = editor.generate(gen_config(width=w, height=h, num_inference_steps=4))
    f = editor.model.vae_scale_factor
    assert gen.image.size == (w, h) and gen.latents.shape == (5, 4, h // f, w // f)
    request = DragRequest(gen.image, [(w * 0.4, h * 0.5)], [(w * 0.45, h * 0.5)])
    result = editor.edit(request, DragDiffusionConfig(optimization_steps=1), generation=gen)
    assert result.image.size == (w, h) and result.latent.shape == (1, 4, h // f, w // f)


# --- a user's style LoRA ------------------------------------------------------------------------------------------

def _write_style_lora(model_dir, path):
    """A tiny random LoRA for the tiny UNet in diffusers' LoRA file layout (what load_lora_weights reads)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(model_dir), subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    StableDiffusionPipeline.save_lora_weights(str(path.parent), unet_lora_layers=get_peft_model_state_dict(unet),
                                              weight_name=path.name)
    return path


def test_style_lora_applies_to_generation_and_drag_and_survives_the_identity_lora(tiny_model_dir, tmp_path):
    from dragkit.models import DiffusionModel

    style = _write_style_lora(tiny_model_dir, tmp_path / "style.safetensors")
    plain = DragEditor.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    styled = DragEditor.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32", style_lora=str(style))
    assert styled.model.style_lora["sha256"] and styled.model.style_lora["scale"] == 1.0
    a, b = plain.generate(gen_config()), styled.generate(gen_config())
    assert not torch.equal(a.latents[-1], b.latents[-1])  # the style LoRA is applied
    assert b.style_lora == styled.model.style_lora
    # a generated drag, then a real-image edit with an identity LoRA beside the style one: the style stays applied
    request = DragRequest(b.image, [(20, 24)], [(34, 26)])
    styled.edit(request, FAST_DD, generation=b)
    styled.edit(request, dataclasses.replace(FAST_DD, lora_steps=2, num_inference_steps=10))
    assert not any(p.requires_grad for p in styled.model.unet.parameters())
    torch.testing.assert_close(styled.generate(gen_config()).latents, b.latents)
    with pytest.raises(DragError, match="style LoRA not found"):
        DiffusionModel.from_pretrained(str(tiny_model_dir), device="cpu",
                                       style_lora=str(tmp_path / "nope.safetensors"))


def test_the_generation_record_is_one_transaction(editor, tmp_path):
    """Image, latents and JSON appear together or not at all: a failing last file takes the others back."""
    from dragkit.generation import record_paths, save_generation

    gen = editor.generate(gen_config(num_inference_steps=2))
    target = tmp_path / "gen.png"
    target.mkdir()  # the image cannot be put in place
    with pytest.raises(OSError):
        save_generation(gen, target)
    assert not any(p.exists() for p in record_paths(target)) and sorted(tmp_path.iterdir()) == [target]



def test_one_image_digest_and_old_records_still_verify():
    """Issue 22: one content hash of the pixels (dragkit.images.pixels_sha256) for prepared images and generation
    records — with the formula records have always used for ``image_sha256``, so records written before verify."""
    import hashlib

    from PIL import Image

    from dragkit import generation, prepared
    from dragkit.images import pixels_sha256

    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (24, 40, 3), dtype=np.uint8))
    arr = np.asarray(image)
    record_formula = hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()  # version 1's
    assert pixels_sha256(image) == record_formula
    assert generation.pixels_sha256 is prepared.image_digest is pixels_sha256
    assert pixels_sha256(image.convert("RGBA")) == record_formula  # alpha is not what dragkit edits
    assert pixels_sha256(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) != record_formula
