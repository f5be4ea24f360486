"""Reference-latent-control (DragDiffusion §3.4; MasaCtrl-style mutual self-attention) as a diffusers attention
processor, installed by layer name for the duration of a ``with`` block and removed afterwards.

The denoising batch is laid out in consecutive (source, edited) pairs — ``[src, edit]``, or with CFG
``[uncond_src, uncond_edit, cond_src, cond_edit]``. In a controlled self-attention layer the queries of both
elements of a pair attend to the keys and values of the *source* element; the source thus reconstructs the original
while the edited branch reads the original's appearance at the same step and layer.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch.nn.functional as F


class MutualSelfAttentionProcessor:
    """Self-attention where each (source, edited) pair attends to the source's K/V. Counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or hidden_states.ndim != 3:
            raise ValueError("MutualSelfAttentionProcessor only controls token-sequence self-attention")
        if hidden_states.shape[0] % 2:
            raise ValueError("reference attention needs a batch of (source, edited) pairs")
        self.calls += 1
        residual = hidden_states
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch, tokens, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        q, k, v = (x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2) for x in (q, k, v))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        k_src = k[0::2].repeat_interleave(2, dim=0)
        v_src = v[0::2].repeat_interleave(2, dim=0)
        out = F.scaled_dot_product_attention(q, k_src, v_src, scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, tokens, -1).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def controlled_layer_names(unet, blocks: Sequence[int]) -> list[str]:
    """Processor names of the self-attention (attn1) layers inside ``unet.up_blocks[b]`` for b in ``blocks``."""
    pattern = re.compile(r"^up_blocks\.(\d+)\..*\.attn1\.processor$")
    return [n for n in unet.attn_processors if (m := pattern.match(n)) and int(m.group(1)) in blocks]


def decoder_self_attention_names(unet) -> list[str]:
    """Processor names of every decoder self-attention layer (``up_blocks.*.…attn1``), SD-1.5 and SDXL alike."""
    return controlled_layer_names(unet, range(len(unet.up_blocks)))


@contextmanager
def installed_processors(unet, processors: dict) -> Iterator[None]:
    """``processors`` ({processor name: processor}) installed on ``unet`` for the ``with`` block, every other layer
    keeping its own; the original processors are restored on exit, also on exceptions."""
    original = unet.attn_processors
    unet.set_attn_processor({name: processors.get(name, p) for name, p in original.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(original)


@contextmanager
def reference_attention(unet, blocks: Sequence[int] = (2, 3)) -> Iterator[MutualSelfAttentionProcessor]:
    """Install mutual self-attention on the decoder self-attention of ``up_blocks[blocks]``; restore on exit."""
    controlled = controlled_layer_names(unet, blocks)
    if not controlled:
        raise ValueError(f"no self-attention layers found in up_blocks {tuple(blocks)}")
    processor = MutualSelfAttentionProcessor()
    with installed_processors(unet, dict.fromkeys(controlled, processor)):
        yield processor
