"""The byte-level CLIP tokenizer of the tiny and toy models: every byte is a token, no merges (vocabulary 514 =
256 bytes + 256 end-of-word forms + start / end of text). Written as the ``vocab.json`` / ``merges.txt`` pair that
``transformers.CLIPTokenizer`` reads; used by :mod:`dragkit.testing` and :mod:`dragkit.shapes.model`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

VOCAB_SIZE = 514


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable-unicode table (the standard byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_tokenizer_files(directory: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the byte-level tokenizer into ``directory``; returns it."""
    directory = Path(directory)
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": i + len(symbols) for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return directory


def byte_tokenizer():
    """A ``CLIPTokenizer`` over the byte-level vocabulary (77 tokens, padded with the end-of-text token)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        byte_tokenizer_files(tmp)
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"),
                             pad_token="<|endoftext|>", model_max_length=77)
