"""Seeds of an evaluation, derived from *what* is evaluated, never from the order it is evaluated in.

The official evaluation seeds once per folder, so a sample's DIFT noise depends on every sample listed before it:
adding, removing or renaming one sample changes the others' numbers. Here each random draw of a metric is seeded by
a stable hash of (metric, sample id, repeat): SHA-256 — not Python's ``hash``, which changes between processes — of
``"<kind>\\0<sample id>\\0<repeat>"``, first 8 bytes big-endian, modulo 2³¹ (valid for torch, numpy and ``random``).
"""

from __future__ import annotations

import hashlib

SEED_RULE = "sha256('<kind>\\0<sample id>\\0<repeat>')[:8] (big-endian) mod 2**31"


def sample_seed(kind: str, sample_id: str, repeat: int = 0) -> int:
    """The seed of draw ``repeat`` of metric ``kind`` ("dift", "judge", …) on sample ``sample_id``."""
    digest = hashlib.sha256(f"{kind}\0{sample_id}\0{int(repeat)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 2 ** 31
