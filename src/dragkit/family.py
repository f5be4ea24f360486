"""Model families (SD-1.5, SDXL): the one place where they differ besides conditioning
(:meth:`dragkit.models.DiffusionModel.conditioning`) — which decoder block gives the supervision features and which
decoder self-attention reads the source branch. (The default canvas is the model's own, as diffusers pipelines take
it: ``unet.config.sample_size`` × the VAE factor — 512 for SD-1.5, 1024 for SDXL.) A method config leaves
``feature_block`` / ``reference_attention_blocks`` at ``None`` ("the family's"), and :func:`resolve` fills them in
before an edit, so the config on the result (and in ``--json``) holds the values that ran.

Why these layers. The roles are those of SD-1.5's, chosen by the reference code on a 512² image (64² latent):

    SD-1.5 decoder   up_blocks[0]  UpBlock2D        1280 ch, runs at 1/64, output 1/32 of the image
                     up_blocks[1]  CrossAttnUpBlock 1280 ch, runs at 1/32, output 1/16
                     up_blocks[2]  CrossAttnUpBlock  640 ch, runs at 1/16, output 1/8  ← features (reference "3")
                     up_blocks[3]  CrossAttnUpBlock  320 ch, runs at 1/8,  output 1/8
    SDXL decoder     up_blocks[0]  CrossAttnUpBlock 1280 ch (10-layer transformers), runs at 1/32, output 1/16
                     up_blocks[1]  CrossAttnUpBlock  640 ch (2-layer transformers), runs at 1/16, output 1/8  ← features
                     up_blocks[2]  UpBlock2D         320 ch, runs at 1/8, no attention

* Features: SD-1.5's up_blocks[2] is the 640-channel cross-attention block that runs at 1/16 and upsamples to the
  latent resolution (1/8). SDXL's up_blocks[1] is the same on every count — 640 channels, cross-attention, runs at
  1/16, output at 1/8 — so at 1024² it gives a 128² map, the same 1/8 of the image as SD-1.5's 64² at 512².
* Reference attention: SD-1.5 controls the self-attention of its last two attention stages (up_blocks 2 and 3,
  6 of the decoder's 9 transformer blocks: the reference's MasaCtrl start layer 10 of 16). SDXL's decoder has
  attention in two stages only, up_blocks 0 and 1 (36 transformer blocks); its last two attention stages are
  (0, 1). (MasaCtrl's own SDXL setting starts at layer 44 of 70, i.e. inside up_blocks[0] — close to the same.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str  # "sd" or "sdxl"
    feature_block: int  # decoder block whose output is F
    reference_attention_blocks: tuple[int, ...]  # decoder blocks whose self-attention reads the source K/V


SD = Family("sd", feature_block=2, reference_attention_blocks=(2, 3))
SDXL = Family("sdxl", feature_block=1, reference_attention_blocks=(0, 1))


def family_of(unet) -> Family:
    """SDXL when the UNet takes SDXL's additional "text_time" embeddings (pooled text + size ids), else SD."""
    return SDXL if getattr(unet.config, "addition_embed_type", None) == "text_time" else SD


def resolve(config, family: Family, default_size: int = 512):
    """``config`` (a method or generation config) with every model-dependent field left at None set: the family's
    layer choices, a generation's width / height to the model's ``default_size``, an edit's working-size cap
    ``max_side`` to twice that."""
    values = {"feature_block": family.feature_block, "reference_attention_blocks": family.reference_attention_blocks,
              "width": default_size, "height": default_size, "max_side": 2 * default_size}
    changes = {name: value for name, value in values.items()
               if hasattr(config, name) and getattr(config, name) is None}
    return dataclasses.replace(config, **changes) if changes else config
