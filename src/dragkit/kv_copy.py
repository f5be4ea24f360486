"""FastDrag's consistency-preserving strategy (Zhao et al., NeurIPS 2024, §3.4): the keys and values of the decoder
self-attention, saved while the image is inverted, replace the layers' own while the warped latent is denoised — the
warped latent asks its questions (queries) of the original image's answers (keys, values) at the same timestep.

As the official code (golden README §10.5): the layers are the self-attention (``attn1``) of every transformer block
in the decoder (``up_blocks.*.attentions.*.transformer_blocks.*.attn1``: SD-1.5's 9, SDXL's 36); K and V are taken
after ``to_k`` / ``to_v``, before the head split (1×N×C); the inversion call at timestep t saves them under t (it
runs the UNet at the *destination* t on the latent one level below); in every denoising step at t each layer uses
the saved K and V of t, repeated over the batch, *instead of* its own (no concatenation, no mixing); queries come
from the current latent.

:func:`kv_copy` installs one :class:`KVCopyProcessor` per layer (by name, for one ``with`` block: the originals come
back on exit, also on exceptions) and a forward pre-hook on the UNet that reads each call's timestep. ``record``
fills a :data:`SavedKV`; ``replace`` reads one. Batches: a saved entry of batch b (1, or 2 = [uncond, cond] under
CFG) serves a call of batch B = b·n laid out as ``TextConditioning`` lays it out ([uncond]·n + [cond]·n): each saved
element is repeated n times in place.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal, Optional

import torch
import torch.nn.functional as F

from .reference_attention import decoder_self_attention_names, installed_processors

# t → {processor name (``….attn1.processor``): (K, V)}, each b×N×C in the UNet's dtype, on its device
SavedKV = dict[int, dict[str, tuple[torch.Tensor, torch.Tensor]]]


class KVControl:
    """The state of one ``with kv_copy(...)`` block: mode, the store, the timestep of the running UNet call."""

    def __init__(self, mode: Literal["record", "replace"], saved: SavedKV):
        if mode not in ("record", "replace"):
            raise ValueError(f"unknown K/V copy mode {mode!r}")
        self.mode, self.saved = mode, saved
        self.t: Optional[int] = None
        self.saves = self.replacements = 0

    def keys_values(self, name: str, attn, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V for layer ``name``: its own (saved under the current t) or the saved ones of the current t."""
        if self.mode == "record":
            k, v = attn.to_k(hidden_states), attn.to_v(hidden_states)
            self.saved.setdefault(self.t, {})[name] = (k.detach(), v.detach())
            self.saves += 1
            return k, v
        entry = self.saved.get(self.t)
        if entry is None or name not in entry:
            raise KeyError(f"no saved keys/values for {name} at timestep {self.t}")
        k, v = entry[name]
        n = hidden_states.shape[0] // k.shape[0]
        self.replacements += 1
        return (k.to(hidden_states.dtype).repeat_interleave(n, dim=0),
                v.to(hidden_states.dtype).repeat_interleave(n, dim=0))


class KVCopyProcessor:
    """Self-attention of one layer whose K and V come from :meth:`KVControl.keys_values` (diffusers'
    ``AttnProcessor2_0`` otherwise)."""

    def __init__(self, name: str, control: KVControl):
        self.name, self.control = name, control

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or hidden_states.ndim != 3:
            raise ValueError("KVCopyProcessor only handles token-sequence self-attention")
        residual = hidden_states
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        batch, tokens, _ = hidden_states.shape
        q = attn.to_q(hidden_states)
        k, v = self.control.keys_values(self.name, attn, hidden_states)
        head = k.shape[-1] // attn.heads
        q, k, v = (x.view(batch, -1, attn.heads, head).transpose(1, 2) for x in (q, k, v))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, tokens, attn.heads * head).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _timestep(args: tuple, kwargs: dict) -> int:
    t = args[1] if len(args) > 1 else kwargs["timestep"]
    return int(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else int(t)


@contextmanager
def kv_copy(unet, mode: Literal["record", "replace"], saved: SavedKV) -> Iterator[KVControl]:
    """For the ``with`` block: every decoder self-attention layer of ``unet`` saves its K/V into ``saved`` under the
    timestep of the UNet call (``record``), or uses those of ``saved`` at that timestep instead of its own
    (``replace``). Processors and the hook are removed on exit, also on exceptions."""
    control = KVControl(mode, saved)
    names = decoder_self_attention_names(unet)
    if not names:
        raise ValueError("this UNet has no decoder self-attention layers to copy keys/values of")

    def on_call(_module, args, kwargs):
        control.t = _timestep(args, kwargs)

    hook = unet.register_forward_pre_hook(on_call, with_kwargs=True)
    try:
        with installed_processors(unet, {name: KVCopyProcessor(name, control) for name in names}):
            yield control
    finally:
        hook.remove()


def layer_name(processor_name: str) -> str:
    """``up_blocks.1.….attn1.processor`` → ``up_blocks.1.….attn1`` (the module name, as the golden fixture keys)."""
    return processor_name.removesuffix(".processor")
