"""The shapes model: Stable Diffusion's architecture at toy scale, for 64×64 scenes.

- VAE: ``AutoencoderKL`` with three blocks (32, 64, 64 channels) → VAE factor 4, 4 latent channels (16×16 latents);
  its ``scaling_factor`` is measured after training (1 / std of the latents), as SD 1.5's scaling factor was.
- UNet: ``UNet2DConditionModel`` with SD 1.5's block layout (cross-attention in the first three down and last three
  up blocks), widths (32, 64, 96, 96), one layer per block, cross-attention on a 64-wide text encoder.
- Text: a 2-layer ``CLIPTextModel`` trained jointly with the UNet, on the byte-level CLIP tokenizer of
  :mod:`dragkit.tokenizer` (prompts are scene captions such as "red disc, blue square, gradient background").
- Scheduler: SD 1.5's DDIM settings (scaled-linear betas 0.00085–0.012, 1000 steps, ε-prediction).

The trained weights ship with the package (``dragkit/shapes/weights``, fp16 safetensors, a diffusers folder);
``python -m dragkit.shapes.train`` (or ``dragkit shapes train``) reproduces them.

**The XL toy** (``--arch sdxl``, shipped in ``dragkit/shapes/weights_xl``) is SDXL's architecture at the same scale:

- UNet with SDXL's three-level layout — ``DownBlock2D`` (no attention) then two ``CrossAttnDownBlock2D``; up
  ``CrossAttnUpBlock2D`` ×2 then ``UpBlock2D`` — widths (48, 96, 128), transformer depth (1, 1, 2), linear
  projections, and SDXL's ``text_time`` additional embeddings (pooled text + six size ids, 16 dims each);
- two text encoders on the same tokenizer: a ``CLIPTextModel`` and a ``CLIPTextModelWithProjection`` (3 layers,
  32 wide each); the UNet reads both penultimate hidden states concatenated (64), the pooled embedding comes from
  the second (32); dropped captions are zero embeddings (SDXL's ``force_zeros_for_empty_prompt``);
- the SD toy's trained VAE (SDXL's VAE has SD's architecture too; it was retrained, ours is shared) and scheduler.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..tokenizer import VOCAB_SIZE, byte_tokenizer, byte_tokenizer_files

IMAGE_SIZE = 64
WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_XL_DIR = Path(__file__).parent / "weights_xl"
TEXT_DIM = 64
XL_TEXT_DIM = 32  # each of the XL toy's two text encoders (the UNet reads 2 × 32 = 64)
XL_TIME_DIM = 16  # SDXL's addition_time_embed_dim at toy scale
VAE_CHANNELS = (32, 64, 64)  # one downsampling per block after the first → VAE factor 2^(3−1) = 4


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=VAE_CHANNELS, layers_per_block=1,
        norm_num_groups=16, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        sample_size=IMAGE_SIZE, scaling_factor=1.0,
    )


def build_unet():
    from diffusers import UNet2DConditionModel

    vae_factor = 2 ** (len(VAE_CHANNELS) - 1)
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // vae_factor, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 96, 96), norm_num_groups=16, cross_attention_dim=TEXT_DIM, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513))


def build_unet_xl():
    from diffusers import UNet2DConditionModel

    vae_factor = 2 ** (len(VAE_CHANNELS) - 1)
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // vae_factor, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(48, 96, 128), norm_num_groups=16, cross_attention_dim=2 * XL_TEXT_DIM,
        attention_head_dim=4, transformer_layers_per_block=(1, 1, 2), use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=XL_TIME_DIM,
        projection_class_embeddings_input_dim=6 * XL_TIME_DIM + XL_TEXT_DIM,
    )


def build_text_encoders_xl():
    """(CLIPTextModel, CLIPTextModelWithProjection): SDXL's pair at toy scale."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def config(**kw):
        return CLIPTextConfig(vocab_size=VOCAB_SIZE, hidden_size=XL_TEXT_DIM, intermediate_size=2 * XL_TEXT_DIM,
                              num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=77,
                              bos_token_id=512, eos_token_id=513, pad_token_id=513, **kw)

    return CLIPTextModel(config()), CLIPTextModelWithProjection(config(projection_dim=XL_TEXT_DIM))


def xl_conditioning(text_encoders, ids, drop, size: int = IMAGE_SIZE) -> dict:
    """UNet keyword arguments for token ``ids`` (as diffusers' SDXL pipeline builds them: penultimate hidden states of
    both encoders concatenated, pooled embedding of the second, size ids (size, size, 0, 0, size, size)); captions
    where ``drop`` is set get zero embeddings (the unconditional branch of ``force_zeros_for_empty_prompt``)."""
    hidden, pooled = [], None
    for encoder in text_encoders:
        out = encoder(ids, output_hidden_states=True)
        if out[0].ndim == 2:
            pooled = out[0]
        hidden.append(out.hidden_states[-2])
    keep = (~drop).to(pooled.dtype)
    hidden = torch.cat(hidden, dim=-1) * keep.view(-1, 1, 1)
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=pooled.dtype).expand(len(ids), -1)
    return {"encoder_hidden_states": hidden,
            "added_cond_kwargs": {"text_embeds": pooled * keep.view(-1, 1), "time_ids": time_ids}}


def build_tokenizer():
    return byte_tokenizer()


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)


def assemble_pipeline(vae, unet, text_encoder, tokenizer=None, scheduler=None):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer or build_tokenizer(), unet=unet,
        scheduler=scheduler or build_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def assemble_pipeline_xl(vae, unet, text_encoders, tokenizer=None, scheduler=None):
    from diffusers import StableDiffusionXLPipeline

    tokenizer = tokenizer or build_tokenizer()
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoders[0], text_encoder_2=text_encoders[1], tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler or build_scheduler(), force_zeros_for_empty_prompt=True,
        add_watermarker=False)


def default_model_path(xl: bool = False) -> str:
    """The shipped trained model (a diffusers folder), for ``--model``: the SD toy, or with ``xl`` the XL toy."""
    folder = WEIGHTS_XL_DIR if xl else WEIGHTS_DIR
    if not (folder / "model_index.json").exists():
        from ..types import DragError

        how = "dragkit shapes train --arch sdxl --vae-from " + str(WEIGHTS_DIR) if xl else "dragkit shapes train"
        raise DragError(f"the shapes model is missing from {folder}; train it with `{how} --export {folder} ...`")
    return str(folder)


def save_pipeline_fp16(pipe, directory: str | Path) -> None:
    """Save as a diffusers folder with fp16 safetensors (loads in any dtype: diffusers casts on load)."""
    pipe.to(torch.float16).save_pretrained(str(directory), safe_serialization=True)
    pipe.to(torch.float32)
    # transformers 5 saves the tokenizer as tokenizer.json alone, which transformers 4.x's CLIPTokenizer cannot read:
    # add its vocab.json / merges.txt pair so the folder loads with either (README "Dependency floors")
    for name in ("tokenizer", "tokenizer_2"):
        if (Path(directory) / name).is_dir():
            byte_tokenizer_files(Path(directory) / name)
    for name in ("text_encoder", "text_encoder_2"):
        if (Path(directory) / name / "model.safetensors").is_file():
            legacy_text_encoder_keys(Path(directory) / name / "model.safetensors")


def legacy_text_encoder_keys(file: str | Path) -> None:
    """Rewrite a ``CLIPTextModel``'s safetensors in the ``text_model.``-prefixed key layout. transformers 5 saves it
    without the prefix, and transformers 4.x loads such a file as all-missing weights — a randomly initialised text
    encoder, with a warning only; the prefixed layout (that of every SD-1.5 / SDXL checkpoint) loads in both."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(file), "pt") as f:
        metadata = f.metadata()
        state = {key: f.get_tensor(key) for key in f.keys()}
    if any(key.startswith("text_model.") for key in state):
        return
    save_file({"text_model." + key: value for key, value in state.items()}, str(file), metadata=metadata)
