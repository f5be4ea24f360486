"""Diffusers state dicts → one original-layout (CompVis / A1111 "ckpt") Stable Diffusion 1.x state dict.

Test helper: the tests build a single-file SD-1.5-layout checkpoint from a diffusers folder, because no such file is
available offline. The key correspondence is the one documented by diffusers' reverse converter
``scripts/convert_diffusers_to_original_stable_diffusion.py`` (UNet, VAE and CLIP text encoder parts), which is the
inverse of what ``diffusers.loaders.single_file_utils`` (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``) reads. Written anew here for the SD-1.x topology
topology by default (4 UNet/VAE blocks, 2 layers per block, CLIP-L-style text encoder; widths may be anything), and
for SDXL's (:func:`sdxl_pipeline_to_original`: 3 UNet blocks, ``label_emb`` for the ``text_time`` embedding, the
first text encoder under ``conditioner.embedders.0.transformer.``, the second in OpenCLIP's layout under
``conditioner.embedders.1.model.`` — the inverse of ``convert_open_clip_checkpoint``).

Layout of the result (one flat dict):

* ``model.diffusion_model.*`` — the UNet with ``input_blocks`` / ``middle_block`` / ``output_blocks`` names;
* ``first_stage_model.*`` — the VAE with ``down.i.block.j`` / ``mid.block_1`` / ``up.i.block.j`` names, its
  mid-block attention as 1×1 conv weights (``q``, ``k``, ``v``, ``proj_out``);
* ``cond_stage_model.transformer.*`` — the transformers ``CLIPTextModel`` keys (``text_model.…``) unchanged.
"""

from __future__ import annotations

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."

N_BLOCKS = 4  # SD-1.x: 4 down/up blocks in both UNet and VAE
UNET_RESNETS = 2  # per down block (an up block has one more)
VAE_RESNETS = 2


def _rename(key: str, prefixes: list[tuple[str, str]]) -> str:
    """Replace the first matching diffusers prefix (or infix) with its original-layout counterpart."""
    for new, old in prefixes:
        if old in key:
            return key.replace(old, new, 1)
    return key


def _unet_prefixes(n_blocks: int = N_BLOCKS, layers: int = UNET_RESNETS,
                   up_attention: tuple[bool, ...] = (False, True, True, True)) -> list[tuple[str, str]]:
    """(original, diffusers) block prefixes of the UNet (SD-1.x by default)."""
    step = layers + 1
    pairs = [
        ("label_emb.0.0.", "add_embedding.linear_1."),
        ("label_emb.0.2.", "add_embedding.linear_2."),
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
        ("middle_block.0.", "mid_block.resnets.0."),
        ("middle_block.1.", "mid_block.attentions.0."),
        ("middle_block.2.", "mid_block.resnets.1."),
    ]
    for i in range(n_blocks):
        for j in range(layers):  # input block (L+1)i+j+1 holds (resnet, attention)
            pairs.append((f"input_blocks.{step * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            pairs.append((f"input_blocks.{step * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        pairs.append((f"input_blocks.{step * i + step}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
        for j in range(layers + 1):  # output block (L+1)i+j holds (resnet, attention, upsampler)
            pairs.append((f"output_blocks.{step * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            pairs.append((f"output_blocks.{step * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        # the upsampler follows the last resnet, after its attention when the block has one
        upsampler = f"output_blocks.{step * i + layers}.{2 if up_attention[i] else 1}."
        pairs.append((upsampler, f"up_blocks.{i}.upsamplers.0."))
    return pairs


UNET_RESNET_PARTS = [  # (original, diffusers) inside a ResBlock
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("emb_layers.1.", "time_emb_proj."),
    ("skip_connection.", "conv_shortcut."),
]


def unet_to_original(state: dict[str, torch.Tensor], n_blocks: int = N_BLOCKS,
                     layers: int = UNET_RESNETS) -> dict[str, torch.Tensor]:
    """Diffusers ``UNet2DConditionModel`` state dict → ``model.diffusion_model.*`` keys. The transformer blocks'
    inner names (``proj_in``, ``transformer_blocks.0.attn1.to_q``, …) are the same in both layouts."""
    up_attention = tuple(any(k.startswith(f"up_blocks.{i}.attentions.") for k in state) for i in range(n_blocks))
    prefixes = _unet_prefixes(n_blocks, layers, up_attention)
    out = {}
    for key, value in state.items():
        new = key
        if ".resnets." in key:
            head, tail = key.rsplit(".resnets.", 1)
            index, part = tail.split(".", 1)
            new = f"{head}.resnets.{index}." + _rename(part, UNET_RESNET_PARTS)
        out[UNET_PREFIX + _rename(new, prefixes)] = value
    return out


def _vae_prefixes(layers: int = VAE_RESNETS) -> list[tuple[str, str]]:
    """(original, diffusers) block prefixes of the SD-1.x VAE; the decoder's up blocks are numbered in reverse."""
    pairs = []
    for i in range(N_BLOCKS):
        for j in range(layers):
            pairs.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        pairs.append((f"encoder.down.{i}.downsample.", f"encoder.down_blocks.{i}.downsamplers.0."))
        for j in range(layers + 1):
            pairs.append((f"decoder.up.{N_BLOCKS - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
        pairs.append((f"decoder.up.{N_BLOCKS - 1 - i}.upsample.", f"decoder.up_blocks.{i}.upsamplers.0."))
    for j in range(2):
        pairs.append((f"mid.block_{j + 1}.", f"mid_block.resnets.{j}."))
    pairs += [("norm_out.", "conv_norm_out."), ("mid.attn_1.", "mid_block.attentions.0.")]
    return pairs


VAE_ATTENTION_PARTS = [  # (original, diffusers) inside the mid-block attention
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
]


def vae_to_original(state: dict[str, torch.Tensor], layers: int = VAE_RESNETS) -> dict[str, torch.Tensor]:
    """Diffusers ``AutoencoderKL`` state dict → ``first_stage_model.*`` keys. The attention's linear weights become
    1×1 conv weights (out, in) → (out, in, 1, 1), as the original model stores them."""
    prefixes = _vae_prefixes(layers)
    out = {}
    for key, value in state.items():
        new = _rename(key, prefixes).replace("conv_shortcut.", "nin_shortcut.")
        if ".mid.attn_1." in new:
            head, part = new.split(".mid.attn_1.", 1)
            new = f"{head}.mid.attn_1." + _rename(part, VAE_ATTENTION_PARTS)
            if new.endswith(".weight") and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)
        out[VAE_PREFIX + new] = value
    return out


def text_encoder_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP text encoder (transformers ``CLIPTextModel``, keys ``text_model.…``) → ``cond_stage_model.transformer.*``.
    SD-1.x wraps the Hugging Face model itself, so the keys only gain the prefix."""
    return {TEXT_PREFIX + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}


def pipeline_to_original(unet: dict, vae: dict, text_encoder: dict) -> dict[str, torch.Tensor]:
    """The three converted state dicts as one checkpoint dict (contiguous tensors, ready for ``save_file``)."""
    merged = {**unet_to_original(unet), **vae_to_original(vae), **text_encoder_to_original(text_encoder)}
    return {k: v.contiguous() for k, v in merged.items()}


OPENCLIP_PREFIX = "conditioner.embedders.1.model."
OPENCLIP_PARTS = [  # (OpenCLIP, transformers) inside a residual block
    ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
    ("attn.out_proj.", "self_attn.out_proj."),
]


def open_clip_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CLIPTextModelWithProjection`` → OpenCLIP's layout (SDXL's second encoder): q/k/v fused into ``in_proj``,
    ``text_projection`` transposed, as diffusers' ``convert_open_clip_checkpoint`` reads it back."""
    out = {"positional_embedding": state["text_model.embeddings.position_embedding.weight"],
           "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
           "ln_final.weight": state["text_model.final_layer_norm.weight"],
           "ln_final.bias": state["text_model.final_layer_norm.bias"],
           "text_projection": state["text_projection.weight"].T}
    layers = sorted({int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers.")})
    for i in layers:
        head = f"text_model.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(
                [state[f"{head}self_attn.{x}_proj.{kind}"] for x in "qkv"])
        for key, value in state.items():
            if key.startswith(head) and ".self_attn.q_proj" not in key and ".self_attn.k_proj" not in key \
                    and ".self_attn.v_proj" not in key:
                out[f"transformer.resblocks.{i}." + _rename(key[len(head):], OPENCLIP_PARTS)] = value
    return {OPENCLIP_PREFIX + k: v for k, v in out.items()}


def sdxl_pipeline_to_original(unet: dict, vae: dict, text_encoder: dict, text_encoder_2: dict, unet_layers: int,
                              vae_layers: int) -> dict[str, torch.Tensor]:
    """An SDXL pipeline's state dicts as one original-layout (sgm) checkpoint dict."""
    text = {k.replace(TEXT_PREFIX, "conditioner.embedders.0.transformer.", 1): v
            for k, v in text_encoder_to_original(text_encoder).items()}
    merged = {**unet_to_original(unet, 3, unet_layers), **vae_to_original(vae, vae_layers), **text,
              **open_clip_to_original(text_encoder_2)}
    return {k: v.contiguous() for k, v in merged.items()}
