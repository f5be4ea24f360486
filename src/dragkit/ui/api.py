"""The web app's API for scripts (named Gradio endpoints; the page's own events are private).

``/drag``: image, optional mask, points ``{"handles": [[x, y], …], "targets": [[x, y], …]}`` (pixels of the image),
prompt, method, settings (config fields → values, e.g. ``{"optimization_steps": 40}``) and seed; returns the edited
image and the result record — the JSON of ``dragkit edit --json`` (request, method, config, final handles, trajectory,
timings, steps) plus ``notices``: the library's warnings about this edit (no mask, points outside it, working size).

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    image, record = client.predict(handle_file("scene.png"), handle_file("scene.mask.png"),
                                   {"handles": [[15, 16]], "targets": [[10, 33]]}, "yellow disc, stripes background",
                                   "dragdiffusion", {"optimization_steps": 40}, 0, api_name="/drag")

``/methods``: the methods and each one's settings with the values this server starts from.

The edit runs on the app's device queue (one at a time with the page's edits) on the loaded model. Plain functions
of the :class:`AppContext`; :func:`dragkit.ui.app.wire_api` binds them to Gradio.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
from PIL import Image

from ..checks import edit_notices
from ..config import apply_overrides, config_to_dict
from ..io import edit_record
from ..types import DragError, DragRequest
from .context import AppContext


def settings_assignments(settings: Any) -> list[str]:
    """A settings dict as the ``FIELD=VALUE`` strings of ``--set`` (lists joined by commas, None = "none")."""
    if settings in (None, "", {}):
        return []
    if isinstance(settings, str):
        try:
            settings = json.loads(settings)
        except ValueError:
            raise DragError("settings must be a JSON object of config fields, e.g. {\"optimization_steps\": 40}") \
                from None
    if not isinstance(settings, dict):
        raise DragError("settings must be an object of config fields, e.g. {\"optimization_steps\": 40}")

    def text(v: Any) -> str:
        if v is None:
            return "none"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return ",".join(text(x) for x in v)
        return str(v)

    return [f"{k}={text(v)}" for k, v in settings.items()]


def parse_points(points: Any) -> tuple[list, list]:
    """(handles, targets) of ``{"handles": [[x, y], …], "targets": [[x, y], …]}`` (a JSON string is read too)."""
    if isinstance(points, str):
        try:
            points = json.loads(points)
        except ValueError:
            points = None
    if not isinstance(points, dict) or not {"handles", "targets"} <= set(points):
        raise DragError('points must be {"handles": [[x, y], ...], "targets": [[x, y], ...]}')
    return list(points["handles"] or []), list(points["targets"] or [])


def drag_request(image: Optional[Image.Image], mask: Optional[Image.Image], points: Any,
                 prompt: Optional[str]) -> DragRequest:
    if image is None:
        raise DragError("no image: send the image to drag")
    handles, targets = parse_points(points)
    mask_arr = None if mask is None else np.asarray(mask)
    return DragRequest(image, handles, targets, mask_arr, prompt or "")


def drag(ctx: AppContext, image: Optional[Image.Image], mask: Optional[Image.Image], points: Any,
         prompt: Optional[str] = "", method: Optional[str] = None, settings: Any = None,
         seed: Optional[float] = 0) -> tuple[Image.Image, dict]:
    """One edit (the endpoint ``/drag``): (edited image, result record with ``notices``); a :class:`DragError` when
    the input is wrong."""
    method = method or ctx.methods[0]
    if method not in ctx.defaults:
        raise DragError(f"unknown method {method!r}; one of: {', '.join(ctx.methods)}")
    request = drag_request(image, mask, points, prompt)
    config = apply_overrides(ctx.defaults[method], settings_assignments(settings))
    seed = int(seed or 0)
    notices = edit_notices(ctx.editor.model, request, config)  # the start configs have their max_side resolved
    with ctx.device_lock:  # one edit at a time on the model (the page's edits take it too)
        result = ctx.editor.edit(request, config, seed=seed)
    record = edit_record(request, "image.png", None if request.mask is None else "mask.png", result.config or config,
                         result)
    record["notices"] = notices
    return result.image, record


def methods(ctx: AppContext) -> dict:
    """The methods (endpoint ``/methods``) and each one's settings as this server starts them."""
    return {m: config_to_dict(ctx.defaults[m]) for m in ctx.methods}
