"""Drag-editing metrics, one small module each.

- :mod:`.dai` — Dragging Accuracy Index (GoodDrag, Eq. 10), pure numpy.
- :mod:`.mean_distance` — Mean Distance (DragDiffusion): DIFT correspondence of each handle in the edited image.
- :mod:`.lpips` — Image Fidelity = 1 − LPIPS (AlexNet), without torchvision.
- :mod:`.gscore` — a GScore-like judge over any OpenAI-compatible chat-completions endpoint.
- :mod:`.drag_back` — Drag-Back (DragLoRA): drag, then drag back with handles and targets swapped; compare.
- :mod:`.seeds` — per-sample seeds from a stable hash of the sample id (never the listing order).

Later metrics built on these: m-MD (:func:`.mean_distance.point_distances` with ``region``: the match searched only
inside the editable region, DragLoRA) and background fidelity (:func:`.lpips.background_fidelity`, ReD Bench).
"""
