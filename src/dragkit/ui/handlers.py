"""The app's event handlers: plain functions of the shared :class:`AppContext`, the session state and the widgets'
values, returning updates keyed by the names of :class:`~dragkit.ui.layout.Layout` (bound to components in one place,
:func:`dragkit.ui.app.wire`). Inputs gathered from many widgets arrive as ``form``: values keyed by the same names.
Every failure becomes a message in the page; nothing here holds per-session or per-run state.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import gradio as gr
import numpy as np
from PIL import Image

from ..checks import check_generation
from ..config import GenerationConfig
from ..types import DragError, DragRequest, DragResult
from . import drawing, exchange, params as params_mod
from . import session as ss
from . import texts
from .context import AppContext
from .job import EditJob, Progress, failure_text

logger = logging.getLogger(__name__)

Updates = dict[str, Any]


def session_key(request: Optional[gr.Request]) -> str:
    """The browser session an event came from ("local" outside a server)."""
    return getattr(request, "session_hash", None) or "local"


def view(sess: ss.Session, handles: Optional[list] = None) -> Optional[Image.Image]:
    """The points view of ``sess`` (``handles``: where the handles are now, during and after an edit)."""
    return None if sess.image is None else drawing.render_view(sess.image, sess.points, sess.mask, handles=handles)


def editor_value(sess: ss.Session) -> Optional[dict]:
    """The input editor's value showing ``sess``'s image with its mask painted."""
    if sess.image is None:
        return None
    layers = []
    if sess.mask is not None:
        layer = np.zeros((*sess.mask.shape, 4), np.uint8)
        layer[sess.mask > 0] = (255, 255, 255, 190)
        layers.append(layer)
    return {"background": sess.image, "layers": layers, "composite": None}


def points_updates(sess: ss.Session, status: Optional[str] = None) -> Updates:
    """Session, view and status (the points status unless ``status`` is given)."""
    return {"session": sess, "view": view(sess), "status": texts.points_status(sess) if status is None else status}


# --- image, mask and points ------------------------------------------------------------------------------------------

def on_editor(ctx: AppContext, value: Optional[dict], sess: ss.Session) -> Updates:
    """An upload or a brush stroke in the input editor: a new image resets the session, a stroke sets the mask."""
    value = value or {}
    background = value.get("background")
    try:
        logger.debug("editor change: background %s, %d layer(s)", None if background is None else
                     np.asarray(background).shape, len(value.get("layers") or []))
        if background is None:  # cleared, a blob already consumed, or a file the browser could not decode
            return {} if sess.image is not None else {"session": sess, "view": None, "status": texts.NO_IMAGE}
        new_image = ss.fingerprint(background) != sess.fingerprint
        if new_image:
            sess = ss.set_image(ss.Session(), ss.upload_image(background), ctx.max_side)
            sess = dataclasses.replace(sess, fingerprint=ss.fingerprint(background))
        masked = ss.set_mask(sess, ss.mask_from_layers(value.get("layers") or [], sess.image.size))
        if not new_image and ss.same_mask(masked.mask, sess.mask):
            # An echo of what the session already holds (the editor's value set by an import or "Drag this image"
            # fires its change event late): leave the view and the status — e.g. "Done" — alone.
            return {}
        return points_updates(masked)
    except DragError as exc:
        return points_updates(sess, texts.error(exc))
    except Exception as exc:  # never let a bad upload take the server down
        logger.exception("image upload failed")
        return points_updates(sess, texts.error(DragError(f"cannot read the upload as an image "
                                                          f"({type(exc).__name__})")))


def on_clear_image(_sess: ss.Session) -> Updates:
    """The input editor was cleared: start over."""
    return points_updates(ss.Session())


def on_click(sess: ss.Session, evt: gr.SelectData) -> Updates:
    """A click on the points view adds a handle or its target."""
    try:
        if sess.image is None:
            raise DragError("upload an image first")
        scale = drawing.view_scale(sess.image.size)
        return points_updates(ss.add_point(sess, ss.click_to_pixel(evt.index, scale, sess.image.size)))
    except DragError as exc:
        return points_updates(sess, texts.error(exc))


def on_undo(sess: ss.Session) -> Updates:
    return points_updates(ss.undo_point(sess))


def on_clear(sess: ss.Session) -> Updates:
    return points_updates(ss.clear_points(sess))


def on_method(ctx: AppContext, name: str) -> Updates:
    """Show the selected method's parameters only."""
    return {params_mod.group_id(m): gr.update(visible=(m == name)) for m in ctx.methods}


# --- run, cancel, export ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EditInput:
    """One edit as the form asks for it."""

    session: ss.Session
    request: DragRequest
    config: Any
    seed: int
    generation: Any = None  # the Generation the image came from (sent from the Generate tab, not changed since)

    @property
    def key(self) -> tuple:
        """What makes two edits the same (to attach the last result to an export of the same edit)."""
        sess = self.session
        return (sess.fingerprint, sess.points, None if sess.mask is None else ss.fingerprint(sess.mask * 255),
                self.request.prompt, self.config, self.seed)

    @property
    def warnings(self) -> list[str]:
        return ss.mask_warnings(self.session)


def gather(ctx: AppContext, form: dict[str, Any]) -> EditInput:
    """The edit the form describes, or a DragError that says what is missing or wrong."""
    sess, name = form["session"], form["method"]
    if name not in ctx.params:
        raise DragError(f"unknown method {name!r}")
    request = ss.build_request(sess, form["prompt"])
    config = ctx.config_for(name, [form[params_mod.param_id(name, p.name)] for p in ctx.params[name]])
    seed = form["seed"]
    if seed is None or float(seed) != int(float(seed)):
        raise DragError("seed must be a whole number")
    gen = form.get("gen_state")
    generation = gen["generation"] if gen and sess.image is not None and gen["fingerprint"] == sess.fingerprint \
        else None
    return EditInput(sess, request, config, int(float(seed)), generation)


def on_queued(ctx: AppContext, request: gr.Request) -> Updates:
    """At the Run click, before the queue: a fresh cancel flag, so that Cancel also reaches a queued edit."""
    ctx.cancel_flags.arm(session_key(request))
    return {"status": texts.QUEUED}


def on_run(ctx: AppContext, form: dict[str, Any], request: gr.Request) -> Iterator[Updates]:
    """Run the edit: the status and the live handles while it runs, then the result, the before/after comparison,
    the trajectory and the downloads (or the one-line reason it did not finish)."""
    try:
        edit = gather(ctx, form)
    except DragError as exc:
        yield {"status": texts.error(exc)}
        return
    key = session_key(request)
    flag = ctx.cancel_flags.flag(key)
    if flag.is_set():  # cancelled while waiting in the queue
        ctx.cancel_flags.release(key, flag)
        yield {"status": texts.CANCELLED}
        return
    logger.debug("edit requested (session %s)", key)
    job = EditJob(ctx.editor, edit.request, edit.config, seed=edit.seed, generation=edit.generation, cancel=flag,
                  device_lock=ctx.device_lock).start()
    try:
        yield {"status": texts.starting(edit.warnings), "result_img": None, "compare": None, "trajectory": None}
        for snapshot in job.progress():
            yield progress_updates(edit, snapshot)
    finally:
        if not job.wait(0):  # the stream was closed early (the tab went away): stop the edit, free the device
            job.cancel()
        ctx.cancel_flags.release(key, flag)
    if job.error is not None:
        yield {"status": failure_text(job.error), "view": view(edit.session)}
    else:
        yield result_updates(ctx, edit, job.result)


def progress_updates(edit: EditInput, snapshot: Progress) -> Updates:
    """The status of a running edit, and the view with the handles where they are now (when they moved)."""
    updates = {"status": snapshot.text}
    if snapshot.handles is not None:
        updates["view"] = view(edit.session, snapshot.handles)
    return updates


def result_updates(ctx: AppContext, edit: EditInput, result: DragResult) -> Updates:
    """A finished edit: status, final handles, result, comparison, trajectory, downloads and the last-edit state."""
    files = exchange.export_edit(ctx.fresh_dir("edit-"), edit.request, result.config or edit.config, result)
    note = texts.lora_note(result, edit.config, generated=edit.generation is not None)
    return {"status": texts.done(result, note, edit.warnings), "view": view(edit.session, result.final_handles),
            "result_img": result.image, "compare": (edit.request.image, result.image),
            "trajectory": save_trajectory(ctx, edit, result), "downloads": [str(f) for f in files],
            "last_edit": {"key": edit.key, "result": dataclasses.replace(result, latent=None)}}


def save_trajectory(ctx: AppContext, edit: EditInput, result: DragResult) -> Optional[str]:
    """The handle trajectory (or the edit's own frames) as a GIF file; None when there is nothing to animate."""
    gif = drawing.trajectory_animation(edit.request.image, edit.session.points, result.trajectory,
                                       frames=result.frames)
    if not gif:
        return None
    path = ctx.fresh_dir("traj-") / "trajectory.gif"
    path.write_bytes(gif)
    return str(path)


def on_unload(ctx: AppContext, request: gr.Request) -> None:
    """The tab was closed or reloaded: cancel its edit, queued or running, so that the queue moves on."""
    found = ctx.cancel_flags.cancel(session_key(request))
    logger.debug("session %s closed; edit cancelled: %s", session_key(request), found)


def on_cancel(ctx: AppContext, sess: ss.Session, request: gr.Request) -> Updates:
    """Cancel this session's edit, queued or running (it stops at its next step and frees the device)."""
    found = ctx.cancel_flags.cancel(session_key(request))
    logger.debug("cancel (session %s): %s", session_key(request), found)
    return {"status": texts.CANCELLED if found else texts.NOTHING_TO_CANCEL, "view": view(sess)}


def on_export(ctx: AppContext, form: dict[str, Any]) -> Updates:
    """Export the edit the form describes, with the last result when it is of that very edit."""
    try:
        edit = gather(ctx, form)
        last = form.get("last_edit")
        result = last["result"] if last and last["key"] == edit.key else None
        files = exchange.export_edit(ctx.fresh_dir("export-"), edit.request, edit.config, result)
    except DragError as exc:
        return {"status": texts.error(exc)}
    return {"downloads": [str(f) for f in files], "status": texts.exported(result is not None)}


# --- import ----------------------------------------------------------------------------------------------------------

def on_import(ctx: AppContext, files: Any) -> Updates:
    """Replay an exported edit: image, mask, points and prompt, and the method and its parameters when recorded."""
    if not files:
        return {}
    # The box is emptied after every import, so that the next drop is read on its own (a failed file must not
    # stay in the box and be read again with every later import).
    try:
        req, extra = exchange.import_edit(files if isinstance(files, list) else [files], ctx.fresh_dir("import-"))
        sess = ss.from_request(req, ctx.max_side, extra)
    except DragError as exc:
        return {"status": texts.error(exc), "import_files": None}
    except Exception as exc:
        logger.exception("import failed")
        return {"status": texts.error(DragError(f"cannot import: {type(exc).__name__}")), "import_files": None}
    text = f"Imported {len(req.handles)} drag(s). " + texts.points_status(sess)
    return {**points_updates(sess, text), "editor_in": editor_value(sess), "prompt": req.prompt,
            "result_img": None, "downloads": None, "import_files": None, **imported_params(ctx, extra)}


def imported_params(ctx: AppContext, extra: dict) -> Updates:
    """The method and parameter widgets set to an imported edit's recorded method and config."""
    name = extra.get("method")
    if name not in ctx.params:
        return {}
    cfg = extra.get("config") or {}
    updates: Updates = {"method": name}
    for p in ctx.params[name]:
        if p.name in cfg:
            value = cfg[p.name]
            value = tuple(value) if p.kind == "tuple" and value is not None else value
            updates[params_mod.param_id(name, p.name)] = params_mod.format_value(p.kind, value)
    return updates


# --- generate --------------------------------------------------------------------------------------------------------

def on_generate(ctx: AppContext, form: dict[str, Any]) -> Iterator[Updates]:
    """Generate an image with the Generate tab's settings, keeping its latents for dragging."""
    names = [n for n in ctx.gen_params if params_mod.gen_id(n) in form]
    try:
        config = params_mod.config_from_values(GenerationConfig(), [ctx.gen_params[n] for n in names],
                                               [form[params_mod.gen_id(n)] for n in names])
    except DragError as exc:
        yield {"gen_status": texts.error(exc)}
        return
    yield {"gen_status": texts.GENERATING}
    try:
        with ctx.device_lock:
            if getattr(ctx.editor, "model", None) is not None:
                check_generation(ctx.editor.model, config)
            generation = ctx.editor.generate(config)
    except Exception as exc:  # DragError: its line; anything else: logged, and one line in the page
        yield {"gen_status": failure_text(exc, "generation")}
        return
    yield {"gen_status": texts.generated(generation.timings["total"], config), "gen_img": generation.image,
           "gen_state": {"fingerprint": ss.fingerprint(generation.image), "generation": generation}}


def on_send(ctx: AppContext, gen: Optional[dict]) -> Updates:
    """"Drag this image": the generated image becomes the Drag tab's session (dragged from its latents)."""
    if not gen:
        return {"gen_status": texts.error(DragError("generate an image first"))}
    image = gen["generation"].image
    if max(image.size) > ctx.max_side:
        return {"gen_status": texts.error(DragError(f"the image is larger than the app's --max-side {ctx.max_side}"))}
    sess = ss.set_image(ss.Session(), image, ctx.max_side)
    text = "Generated image: it is dragged from its saved latents. " + texts.points_status(sess)
    return {**points_updates(sess, text), "editor_in": editor_value(sess), "result_img": None,
            "tabs": gr.Tabs(selected="drag-tab")}
