"""dragkit: point-based ("drag") image editing with diffusion models — DragDiffusion and GoodDrag.

Public names are imported lazily so that ``import dragkit.cli`` stays light until a model is needed.
"""

from importlib import import_module

_EXPORTS = {
    "DEFAULT_MODEL": ".hub",
    "DiffusionModel": ".models",
    "ModelLoadError": ".models",
    "DragDiffusionConfig": ".config",
    "GoodDragConfig": ".config",
    "GenerationConfig": ".config",
    "Generation": ".generation",
    "DragEditor": ".editor",
    "DragError": ".types",
    "DragRequest": ".types",
    "DragResult": ".types",
    "EditCancelled": ".types",
    "ProgressEvent": ".types",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'dragkit' has no attribute {name!r}")
