"""dragkit's ComfyUI node pack.

Install: link (or copy) this folder into ``ComfyUI/custom_nodes/`` — ``ln -s "$(python -c 'import dragkit.comfyui
as c, os; print(os.path.dirname(c.__file__))')" ComfyUI/custom_nodes/ComfyUI-dragkit`` — with dragkit installed in
ComfyUI's Python (``pip install dragkit``); the folder must not be named ``dragkit`` (ComfyUI imports it under its
folder's name, which would hide the dragkit package). A link into a source checkout also works without installing
dragkit (its ``src`` folder is put on ``sys.path``), as long as dragkit's dependencies are there.

ComfyUI reads ``NODE_CLASS_MAPPINGS``, ``NODE_DISPLAY_NAME_MAPPINGS`` and ``WEB_DIRECTORY`` (the points widget) from
here. Importing this package imports no ComfyUI module.
"""

import sys
from pathlib import Path

if __name__ == "dragkit":
    raise ImportError("name the node pack's folder in custom_nodes something other than 'dragkit' (e.g. "
                      "ComfyUI-dragkit): under that name it hides the dragkit package")
try:
    import dragkit  # noqa: F401
except ImportError:  # the folder linked into custom_nodes from a source checkout: src/dragkit/comfyui → src
    _src = Path(__file__).resolve().parents[2]
    if (_src / "dragkit" / "__init__.py").exists():
        sys.path.insert(0, str(_src))
    else:
        raise ImportError("the dragkit node pack needs dragkit in ComfyUI's Python: pip install dragkit") from None

from dragkit.comfyui.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
