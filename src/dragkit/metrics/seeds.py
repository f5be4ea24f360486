"""Seeds of an evaluation, derived from *what* is evaluated, never from the order it is evaluated in.

The official evaluation seeds once per folder, so a sample's DIFT noise depends on every sample listed before it:
adding, removing or renaming one sample changes the others' numbers. Here each random draw of a metric is seeded by
a stable hash of (kind, sample id, repeat): SHA-256 — not Python's ``hash``, which changes between processes — of
``"<kind>\\0<sample id>\\0<repeat>"``, first 8 bytes big-endian, modulo 2³¹ (valid for torch, numpy and ``random``).

**DIFT (Mean Distance, m-MD) draws two noises per sample and repeat**: kind ``"dift-original"`` for the original
image and ``"dift-edited"`` for the edited one (:func:`dift_seeds`). They are independent, as in the official
evaluator (one generator seeded per folder draws the original's noise, then the edited image's). One shared seed would
give both images the *same* noise: an unchanged region then has identical features in both, each handle matches its
own pixel, and MD is biased toward "did not move" (issue 24; an identity edit scored exactly the no-move distance).
The edited image's seed depends on the sample only, not on the run, so every method's edit of a sample is featurized
with the same noise (paired comparisons), and the original's features are computed once for all runs.
"""

from __future__ import annotations

import hashlib

DIFT_ORIGINAL, DIFT_EDITED = "dift-original", "dift-edited"

SEED_RULE = ("sha256('<kind>\\0<sample id>\\0<repeat>')[:8] (big-endian) mod 2**31; DIFT noise: kind "
             f"'{DIFT_ORIGINAL}' for the original image, '{DIFT_EDITED}' for the edited one (independent draws, "
             "as the official evaluator)")


def sample_seed(kind: str, sample_id: str, repeat: int = 0) -> int:
    """The seed of draw ``repeat`` of ``kind`` ("dift-original", "dift-edited", "judge", …) on sample
    ``sample_id``."""
    digest = hashlib.sha256(f"{kind}\0{sample_id}\0{int(repeat)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 2 ** 31


def dift_seeds(sample_id: str, repeat: int = 0) -> tuple[int, int]:
    """(original, edited): the seeds of the DIFT noise of sample ``sample_id``'s original and edited image in repeat
    ``repeat`` — two different hashes (equal only by a 2⁻³¹ chance), so the two images do not share a noise draw."""
    return sample_seed(DIFT_ORIGINAL, sample_id, repeat), sample_seed(DIFT_EDITED, sample_id, repeat)
