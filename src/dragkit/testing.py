"""Tiny, randomly initialised Stable-Diffusion-topology models built offline, for tests, demos and CPU benchmarks.

Same block layout as SD 1.5 (4 down / 4 up blocks, cross-attention in the first three down and last three up blocks,
16 transformer blocks) with tiny widths, the byte-level CLIP tokenizer of :mod:`dragkit.tokenizer` and a 2-layer CLIP
text encoder. Saved as a regular diffusers folder, so everything (CLI, UI, benchmark) loads it through the real loading
code.

:func:`build_tiny_sdxl_pipeline` is the same for SDXL's topology: three down / three up blocks (no attention in the
first down and the last up block), transformer depth (1, 1, 2), ``text_time`` additional embeddings, two text encoders
(the second with a projection: the pooled embedding), Euler's scheduler config and SDXL's VAE scaling factor 0.13025
with ``force_upcast``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .tokenizer import VOCAB_SIZE, byte_tokenizer


def build_tiny_pipeline(seed: int = 0, width: int = 16, text_dim: int = 16, sample_size: int = 16):
    """A random StableDiffusionPipeline with SD-1.5 topology and tiny widths (~0.3 M UNet parameters)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(width, width, 2 * width, 2 * width), norm_num_groups=8, cross_attention_dim=text_dim,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=text_dim, intermediate_size=2 * text_dim, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513))
    tokenizer = byte_tokenizer()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build_tiny_sdxl_pipeline(seed: int = 0, width: int = 16, text_dim: int = 16, sample_size: int = 16):
    """A random StableDiffusionXLPipeline with SDXL topology and tiny widths. The second text encoder is wider than
    the first (``text_dim`` + 8), as bigG is wider than CLIP-L: diffusers' single-file loader tells them apart by
    width."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    time_dim, text_dim_2 = 8, text_dim + 8
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(width, 2 * width, 2 * width), norm_num_groups=8, cross_attention_dim=text_dim + text_dim_2,
        attention_head_dim=2, transformer_layers_per_block=(1, 1, 2), use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + text_dim_2,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.13025, force_upcast=True,
    )

    def text_config(dim, **kw):
        return CLIPTextConfig(vocab_size=VOCAB_SIZE, hidden_size=dim, intermediate_size=2 * dim,
                              num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                              bos_token_id=512, eos_token_id=513, pad_token_id=513, **kw)

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(text_config(text_dim)),
        text_encoder_2=CLIPTextModelWithProjection(text_config(text_dim_2, projection_dim=text_dim_2)),
        tokenizer=byte_tokenizer(),
        tokenizer_2=byte_tokenizer(), unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
        add_watermarker=False)


def save_tiny_sdxl_model(directory: str | Path, seed: int = 0, **kwargs) -> Path:
    """Build :func:`build_tiny_sdxl_pipeline` and save it as a diffusers folder (safetensors). Returns the folder."""
    directory = Path(directory)
    build_tiny_sdxl_pipeline(seed, **kwargs).save_pretrained(str(directory), safe_serialization=True)
    return directory


def save_tiny_model(directory: str | Path, seed: int = 0, **kwargs) -> Path:
    """Build :func:`build_tiny_pipeline` and save it as a diffusers folder (safetensors). Returns the folder."""
    directory = Path(directory)
    build_tiny_pipeline(seed, **kwargs).save_pretrained(str(directory), safe_serialization=True)
    return directory


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
