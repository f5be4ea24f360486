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
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..tokenizer import VOCAB_SIZE, byte_tokenizer

IMAGE_SIZE = 64
WEIGHTS_DIR = Path(__file__).parent / "weights"
TEXT_DIM = 64
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


def default_model_path() -> str:
    """The shipped trained model (a diffusers folder), for ``--model``."""
    if not (WEIGHTS_DIR / "model_index.json").exists():
        from ..types import DragError

        raise DragError(f"the shapes model is missing from {WEIGHTS_DIR}; train it with `dragkit shapes train`")
    return str(WEIGHTS_DIR)


def save_pipeline_fp16(pipe, directory: str | Path) -> None:
    """Save as a diffusers folder with fp16 safetensors (loads in any dtype: diffusers casts on load)."""
    pipe.to(torch.float16).save_pretrained(str(directory), safe_serialization=True)
    pipe.to(torch.float32)
