"""The shipped shapes models load in every transformers the floors allow (README "Dependency floors"): transformers 5
saves a CLIP tokenizer as ``tokenizer.json`` alone and a ``CLIPTextModel`` without its ``text_model.`` key prefix;
transformers 4.x cannot read the first and silently initialises the second at random. The folders carry both forms."""

import pytest
from safetensors import safe_open

from dragkit.shapes.model import WEIGHTS_DIR, WEIGHTS_XL_DIR

FOLDERS = [(WEIGHTS_DIR, ("text_encoder",), ("tokenizer",)),
           (WEIGHTS_XL_DIR, ("text_encoder", "text_encoder_2"), ("tokenizer", "tokenizer_2"))]


@pytest.mark.parametrize("folder, encoders, tokenizers", FOLDERS, ids=["sd", "sdxl"])
def test_shipped_models_are_in_the_layout_transformers_4_and_5_both_read(folder, encoders, tokenizers):
    for name in tokenizers:
        assert (folder / name / "vocab.json").is_file() and (folder / name / "merges.txt").is_file()
    for name in encoders:
        with safe_open(str(folder / name / "model.safetensors"), "pt") as f:
            keys = list(f.keys())
        assert keys and all(key.startswith("text_model.") or key == "text_projection.weight" for key in keys), name
