"""Drag-editing metrics, one small module each.

- :mod:`.dai` — Dragging Accuracy Index (GoodDrag, Eq. 10), pure numpy.
- :mod:`.mean_distance` — Mean Distance (DragDiffusion): DIFT correspondence of each handle in the edited image.
- :mod:`.lpips` — Image Fidelity = 1 − LPIPS (AlexNet), without torchvision.
- :mod:`.gscore` — a GScore-like judge over any OpenAI-compatible chat-completions endpoint.
"""
