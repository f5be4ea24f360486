"""FreeU (Si et al., CVPR 2024) for generated images, through diffusers' own ``enable_freeu`` / ``disable_freeu``.

The decoder's first two stages scale half of their backbone channels by b1, b2 and the low frequencies of their
skip connections by s1, s2. All four at 1.0 is the identity (the reference UI's default, "off"). It is switched on
only inside :func:`freeu`, for a generation and for the drag of that generation (the reference registers it for
both, so the dragged trajectory is produced by the same network as the generated one), and always switched off
afterwards: the shared UNet is left as loaded.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

OFF = (1.0, 1.0, 1.0, 1.0)


@contextmanager
def freeu(unet, b1: float = 1.0, b2: float = 1.0, s1: float = 1.0, s2: float = 1.0) -> Iterator[bool]:
    """FreeU with (b1, b2, s1, s2) on ``unet`` while the block runs; yields whether it is on (not all 1.0)."""
    active = (b1, b2, s1, s2) != OFF
    if active:
        unet.enable_freeu(s1=s1, s2=s2, b1=b1, b2=b2)
    try:
        yield active
    finally:
        if active:
            unet.disable_freeu()
