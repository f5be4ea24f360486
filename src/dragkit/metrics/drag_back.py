"""Drag-Back (after DragLoRA): drag, then drag back — run the same method a second time on the **edited** image with
handles and targets swapped (same editable region, prompt, config and seed) — and compare the round trip with the
original. A method that really moved the content can move it back; one that smeared or redrew it cannot, whatever
its Mean Distance says. Score: 1 − LPIPS(original, dragged back) (↑, 1 = a perfect round trip).

It needs the editor (a second edit per sample: as costly as the run itself); :func:`drag_back` does the edit,
:func:`drag_back_fidelity` the comparison.
"""

from __future__ import annotations

from ..types import DragRequest


def reverse_request(request: DragRequest, edited) -> DragRequest:
    """The way back: ``edited`` as the input, each target as a handle and its handle as the target."""
    return DragRequest(edited, list(request.targets), list(request.handles), request.mask, request.prompt)


def drag_back(editor, config, request: DragRequest, edited, *, seed: int = 0, callback=None):
    """The image after dragging ``edited`` (the result of ``request``) back with ``editor.edit(…, config, seed)``."""
    return editor.edit(reverse_request(request, edited), config, callback=callback, seed=seed).image


def drag_back_fidelity(lpips, original, back) -> float:
    """1 − LPIPS between the original and its dragged-back image (:func:`.lpips.image_fidelity`)."""
    from .lpips import image_fidelity

    return image_fidelity(lpips, original, back)
