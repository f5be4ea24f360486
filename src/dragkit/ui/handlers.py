"""The app's event handlers: plain functions of the shared :class:`AppContext`, the session state and the widgets'
values, returning updates keyed by the names of :class:`~dragkit.ui.layout.Layout` (bound to components in one place,
:func:`dragkit.ui.app.wire`). Inputs gathered from many widgets arrive as ``form``: values keyed by the same names.
Every failure becomes a message in the page; nothing here holds per-session or per-run state.

Preparation (the identity LoRA and the inversion, done in the background so that Run only drags): every change the
preparation depends on — the image, the prompt, the seed, the method and its LoRA and inversion settings — calls
:func:`on_prepare_queued` at once (it records the session's wanted preparation, which cancels a stale one) and then
queues :func:`on_prepare` on the device, like a Run. The resulting :class:`~dragkit.prepared.PreparedImage` lives in
the session's ``prepared`` state; Run passes it to the editor when it is of the same image and prompt (a Run clicked
during a preparation waits in the device queue behind it, then finds it done), and a Run without one starts a fresh
one that the edit fills, so the next Run on that image is warm either way. A new image drops it.

Live re-edits (one-step methods, whose warm re-edit is a warp and a few denoising steps): with Live on, every change
of the points (a target click, an undo or a clear that leaves pairs) calls :func:`on_live_queued` at once (it records
the edit the points now describe as the session's wanted live edit, superseding one still waiting) and queues
:func:`on_live_run` on the device, which runs that edit like a Run unless newer points have superseded it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import gradio as gr
import numpy as np
from PIL import Image

from .. import checks
from ..checks import check_generation
from ..config import GenerationConfig
from ..errors import first_line
from ..prepared import PreparedImage, image_digest
from ..types import DragError, DragRequest, DragResult, EditCancelled
from . import drawing, exchange, layout, params as params_mod
from . import session as ss
from . import texts
from .context import AppContext
from .job import EditRun, PrepareRun, Progress, failure_text

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
            sess = ss.set_image(ss.Session(), ss.upload_image(background), ctx.upload_max_side)
            sess = dataclasses.replace(sess, fingerprint=ss.fingerprint(background))
        masked = ss.set_mask(sess, ss.mask_from_layers(value.get("layers") or [], sess.image.size))
        if not new_image and ss.same_mask(masked.mask, sess.mask):
            # An echo of what the session already holds (the editor's value set by an import or "Drag this image"
            # fires its change event late): leave the view and the status — e.g. "Done" — alone.
            return {}
        # a new image also drops the previous one's prepared image (its LoRA and latents) at once, and gets a brush
        # of its size
        if new_image:
            return points_updates(masked) | {"prepared": None, "editor_in": gr.update(brush=layout.brush(
                ss.brush_radius(np.asarray(background).shape[1::-1])))}
        return points_updates(masked)
    except DragError as exc:
        return points_updates(sess, texts.error(exc))
    except Exception as exc:  # never let a bad upload take the server down
        logger.exception("image upload failed")
        return points_updates(sess, texts.error(DragError(f"cannot read the upload as an image "
                                                          f"({type(exc).__name__})")))


def on_clear_image(_sess: ss.Session) -> Updates:
    """The input editor was cleared: start over (and drop the prepared image)."""
    return points_updates(ss.Session()) | {"prepared": None}


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
    """Show the selected method's parameters only; Live on for a one-step method, off and disabled (saying why) for
    an iterative one."""
    return {**{params_mod.group_id(m): gr.update(visible=(m == name)) for m in ctx.methods},
            "live": gr.update(**layout.live_state(name))}


# --- run, cancel, export ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EditInput:
    """One edit as the form asks for it."""

    session: ss.Session
    request: DragRequest
    config: Any
    seed: int
    generation: Any = None  # the Generation the image came from (sent from the Generate tab, not changed since)
    notices: tuple[str, ...] = ()  # the library's notices of this edit (no mask, points outside it, working size)

    @property
    def key(self) -> tuple:
        """What makes two edits the same (to attach the last result to an export of the same edit)."""
        sess = self.session
        return (sess.fingerprint, sess.points, None if sess.mask is None else ss.fingerprint(sess.mask * 255),
                self.request.prompt, self.config, self.seed)

    @property
    def warnings(self) -> list[str]:
        return list(self.notices)


def gather(ctx: AppContext, form: dict[str, Any]) -> EditInput:
    """The edit the form describes, or a DragError that says what is missing or wrong."""
    sess = form["session"]
    if form["method"] not in ctx.params:
        raise DragError(f"unknown method {form['method']!r}")
    request = ss.build_request(sess, form["prompt"])
    config, generation = method_config(ctx, form), generation_of(form)
    return EditInput(sess, request, config, parse_seed(form["seed"]), generation,
                     tuple(edit_notices(ctx, request, config, generation)))


def edit_notices(ctx: AppContext, request: DragRequest, config: Any, generation: Any = None) -> list[str]:
    """The library's notices of an edit (:func:`dragkit.checks.edit_notices`), worded for this page."""
    model = getattr(ctx.editor, "model", None)
    if model is not None:
        notices = checks.edit_notices(model, request, config, generation)
    else:  # an editor without a loaded model (tests): the mask's notices only
        notices = checks.mask_notices(request.mask, request.handles, request.targets, generation is not None)
    return [texts.NO_MASK if n == checks.NO_MASK_NOTICE else n for n in notices]


def method_config(ctx: AppContext, form: dict[str, Any]) -> Any:
    """The selected method's config with the form's parameter values (DragError if one is invalid)."""
    name = form["method"]
    if name not in ctx.params:
        raise DragError(f"unknown method {name!r}")
    return ctx.config_for(name, [form[params_mod.param_id(name, p.name)] for p in ctx.params[name]])


def parse_seed(seed: Any) -> int:
    """The seed widget's value as an int (DragError unless it is a whole number)."""
    try:
        if seed is None or float(seed) != int(float(seed)):
            raise ValueError(seed)
    except (TypeError, ValueError, OverflowError):
        raise DragError("seed must be a whole number") from None
    return int(float(seed))


def generation_of(form: dict[str, Any]) -> Any:
    """The Generation the session's image came from (sent from the Generate tab, not changed since), else None."""
    sess, gen = form["session"], form.get("gen_state")
    return gen["generation"] if gen and sess.image is not None and gen["fingerprint"] == sess.fingerprint else None


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
    yield from run_edit(ctx, edit, form.get("prepared"), request)


def run_edit(ctx: AppContext, edit: EditInput, current: Optional[PreparedImage], request: Optional[gr.Request],
             live: bool = False) -> Iterator[Updates]:
    """Run ``edit`` (reusing and filling the session's ``current`` prepared image) and stream its updates: Run's, or
    a ``live`` re-edit's, which keep the result in view until the new one replaces it and leave the points view (and
    the written files: Export writes them) alone."""
    key = session_key(request)
    flag = ctx.cancel_flags.flag(key)
    if flag.is_set():  # cancelled while waiting in the queue
        ctx.cancel_flags.release(key, flag)
        yield {"status": texts.CANCELLED}
        return
    logger.debug("%s requested (session %s)", "live edit" if live else "edit", key)
    prepared = prepared_for(ctx, edit, current)
    job = EditRun(ctx.editor, edit.request, edit.config, seed=edit.seed, generation=edit.generation,
                  prepared=prepared, cancel=flag, device_lock=ctx.device_lock).start()
    try:
        yield {"status": texts.starting(edit.warnings)} | (
            {} if live else {"result_img": None, "compare": None, "trajectory": None})
        for snapshot in job.progress():
            yield {"status": snapshot.text} if live else progress_updates(edit, snapshot)
    finally:
        if not job.wait(0):  # the stream was closed early (the tab went away): stop the edit, free the device
            job.cancel()
        ctx.cancel_flags.release(key, flag)
    # what this edit computed stays for the next one, even when it failed or was cancelled after the inversion
    kept: Updates = {}
    if prepared is not None:
        if prepared is not current:
            kept["prepared"] = prepared
        if prepared.holds(edit.config, edit.seed):
            kept["prep_status"] = texts.ready(edit.config)
    if job.error is not None:
        yield {"status": failure_text(job.error), **({} if live else {"view": view(edit.session)}), **kept}
    elif live:
        yield live_result_updates(edit, job.result) | kept
    else:
        yield result_updates(ctx, edit, job.result) | kept


def prepared_for(ctx: AppContext, edit: EditInput, current: Optional[PreparedImage]) -> Optional[PreparedImage]:
    """The prepared image the edit reuses and fills: the session's ``current`` one when it is of the edit's image and
    prompt, else a fresh one (kept after the edit, so that the next Run is warm); None for a generated image (dragged
    from its latents) or an editor without preparation."""
    if edit.generation is not None or not ctx.can_prepare:
        return None
    if current is not None:
        try:
            current.check(ctx.editor.model, edit.request)
            return current
        except DragError:
            pass
    return PreparedImage.of(ctx.editor.model, edit.request.image, edit.request.prompt)


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


def live_result_updates(edit: EditInput, result: DragResult) -> Updates:
    """A finished live re-edit: status, result and comparison in place, the last-edit state (Export includes the
    result); the previous downloads and trajectory go, being of another edit."""
    note = texts.lora_note(result, edit.config, generated=edit.generation is not None)
    return {"status": texts.live_done(result, note, edit.warnings), "result_img": result.image,
            "compare": (edit.request.image, result.image), "trajectory": None, "downloads": None,
            "last_edit": {"key": edit.key, "result": dataclasses.replace(result, latent=None)}}


# --- live re-edits (one-step methods: the drag re-runs at every change of the point pairs) ---------------------------

def live_on(ctx: AppContext, form: dict[str, Any]) -> bool:
    """Whether the form asks for live re-edits: Live ticked and the method one-step (its config's ``one_step``)."""
    config = ctx.defaults.get(form.get("method"))
    return bool(form.get("live")) and bool(getattr(config, "one_step", False))


def on_live_queued(ctx: AppContext, form: dict[str, Any], request: gr.Request) -> Updates:
    """After a change of the points, before the queue: with Live on and complete pairs, make the edit they describe
    the session's wanted live edit (superseding one still waiting); otherwise want none. A mistake in the form is one
    line, as for Run."""
    key = session_key(request)
    sess = form["session"]
    if not live_on(ctx, form) or not sess.points or len(sess.points) % 2:
        ctx.live_edits.want(key, None)
        return {}
    try:
        edit = gather(ctx, form)
    except DragError as exc:
        ctx.live_edits.want(key, None)
        return {"status": texts.error(exc)}
    ctx.live_edits.want(key, edit.key)
    return {}


def on_live_run(ctx: AppContext, form: dict[str, Any], request: gr.Request) -> Iterator[Updates]:
    """The live re-edit queued after a change of the points (on the device, like a Run): runs when its edit is still
    the session's wanted live edit and no other run has taken it; otherwise (superseded by newer points, or Live
    off) does nothing."""
    try:
        edit = gather(ctx, form)
    except Exception:  # on_live_queued has said why, or nothing was wanted
        edit = None
    if edit is None or not ctx.live_edits.claim(session_key(request), edit.key):
        # no update (a Gradio generator that yields nothing at all clears its outputs in the page)
        yield {}
        return
    yield from run_edit(ctx, edit, form.get("prepared"), request, live=True)


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
    """The tab was closed or reloaded: cancel its edit and its preparation, queued or running, so that the queue
    moves on."""
    found = ctx.cancel_flags.cancel(session_key(request))
    ctx.preparations.forget(session_key(request))
    ctx.live_edits.forget(session_key(request))
    logger.debug("session %s closed; edit cancelled: %s", session_key(request), found)


def on_cancel(ctx: AppContext, sess: ss.Session, request: gr.Request) -> Updates:
    """Cancel this session's edit and its preparation, queued or running (each stops at its next step and frees the
    device), and a live edit still waiting."""
    key = session_key(request)
    edit = ctx.cancel_flags.cancel(key)
    preparation = ctx.preparations.cancel(key)
    live = ctx.live_edits.cancel(key)
    logger.debug("cancel (session %s): edit %s, preparation %s, waiting live edit %s", key, edit, preparation, live)
    return {"status": texts.CANCELLED if edit or preparation or live else texts.NOTHING_TO_CANCEL, "view": view(sess)}


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


# --- preparation (the identity LoRA and the inversion, in the background) ---------------------------------------------

@dataclass(frozen=True)
class PrepareInput:
    """One preparation as the form asks for it: the session's image, the prompt, the method config and the seed."""

    image: Image.Image
    prompt: str
    config: Any
    seed: int
    digest: str  # the image's content hash (dragkit.prepared.image_digest)

    @property
    def key(self) -> tuple:
        """What makes two preparations the same: the image's content, the prompt and the settings it depends on."""
        return self.digest, self.prompt, PreparedImage.inversion_key(self.config, self.seed)

    def same_image(self, prepared: Optional[PreparedImage]) -> bool:
        """Whether ``prepared`` is of this image and prompt (then it is added to, not replaced)."""
        return prepared is not None and (prepared.digest, prepared.prompt) == (self.digest, self.prompt)

    def done(self, prepared: Optional[PreparedImage]) -> bool:
        """Whether ``prepared`` already holds this preparation."""
        return self.same_image(prepared) and prepared.holds(self.config, self.seed)


def gather_preparation(ctx: AppContext, form: dict[str, Any]) -> Optional[PrepareInput]:
    """The preparation the form's image needs; None when there is none to do (no image, a generated image, an
    editor that cannot prepare); a DragError when a setting is invalid."""
    sess = form["session"]
    if sess.image is None or not ctx.can_prepare or generation_of(form) is not None:
        return None
    config = method_config(ctx, form)
    return PrepareInput(sess.image, form.get("prompt") or "", config, parse_seed(form["seed"]),
                        image_digest(sess.image))


def on_prepare_queued(ctx: AppContext, form: dict[str, Any], request: gr.Request) -> Updates:
    """At a change the preparation depends on, before the queue: record the session's wanted preparation (which
    cancels a stale one, queued or running) and say what happens next; nothing when it is unchanged."""
    key = session_key(request)
    try:
        prep = gather_preparation(ctx, form)
    except DragError as exc:
        ctx.preparations.want(key, None)
        return {"prep_status": f"Not prepared: {first_line(exc)}"}
    except Exception as exc:  # a malformed form must not take the server down
        logger.exception("preparation request failed")
        ctx.preparations.want(key, None)
        return {"prep_status": texts.error(RuntimeError(f"cannot prepare: {type(exc).__name__}"))}
    if prep is None:
        ctx.preparations.want(key, None)
        return {"prep_status": ""}
    if not ctx.preparations.want(key, prep.key):
        return {}
    if prep.done(form.get("prepared")):
        ctx.preparations.finish(key, prep.key)
        return {"prep_status": texts.ready(prep.config)}
    return {"prep_status": texts.PREPARE_QUEUED}


def on_prepare(ctx: AppContext, form: dict[str, Any], request: gr.Request) -> Iterator[Updates]:
    """Prepare the session's image on the device (queued like a Run): the identity LoRA and the inversion for the
    form's settings, added to the session's prepared image of the same image and prompt (or replacing one of another
    image). Streams the preparation line; ends with "Ready", "cancelled" or a one-line error. Does nothing when a
    newer preparation is wanted (it is queued behind this one) or this one is already done."""
    key = session_key(request)
    current = form.get("prepared")
    try:
        prep = gather_preparation(ctx, form)
    except Exception:  # on_prepare_queued has said why
        return
    if prep is None:
        if current is not None:  # no image, or a generated one: nothing to keep
            yield {"prepared": None}
        return
    flag = ctx.preparations.claim(key, prep.key)
    if flag is None:
        return
    if prep.done(current):
        ctx.preparations.finish(key, prep.key)
        yield {"prep_status": texts.ready(prep.config)}
        return
    into = current if prep.same_image(current) else None
    drop = {"prepared": None} if current is not None and into is None else {}  # another image's or prompt's
    if flag.is_set():  # cancelled while queued
        yield {"prep_status": texts.PREPARE_CANCELLED, **drop}
        return
    logger.debug("preparation starts (session %s)", key)
    job = PrepareRun(ctx.editor, prep.image, prep.prompt, prep.config, seed=prep.seed, into=into, cancel=flag,
                     device_lock=ctx.device_lock).start()
    try:
        yield {"prep_status": texts.PREPARE_QUEUED, **drop}
        for snapshot in job.progress():
            yield {"prep_status": texts.preparing(snapshot.event)}
    finally:
        if not job.wait(0):  # the stream was closed early (the tab went away): stop, free the device
            job.cancel()
        ctx.preparations.finish(key, prep.key)
    stale = not ctx.preparations.wanted(key, prep.key)  # a newer one owns the line
    if job.error is None:
        yield {"prepared": job.result, **({} if stale else {"prep_status": texts.ready(prep.config)})}
    elif not stale:
        yield {"prep_status": texts.PREPARE_CANCELLED if isinstance(job.error, EditCancelled)
               else texts.prepare_failed(failure_text(job.error, "preparation"))}


# --- import ----------------------------------------------------------------------------------------------------------

def on_import(ctx: AppContext, files: Any) -> Updates:
    """Replay an exported edit: image, mask, points and prompt, and the method and its parameters when recorded."""
    if not files:
        return {}
    # The box is emptied after every import, so that the next drop is read on its own (a failed file must not
    # stay in the box and be read again with every later import).
    try:
        req, extra = exchange.import_edit(files if isinstance(files, list) else [files], ctx.fresh_dir("import-"))
        sess = ss.from_request(req, ctx.upload_max_side, extra)
    except DragError as exc:
        return {"status": texts.error(exc), "import_files": None}
    except Exception as exc:
        logger.exception("import failed")
        return {"status": texts.error(DragError(f"cannot import: {type(exc).__name__}")), "import_files": None}
    text = f"Imported {len(req.handles)} drag(s). " + texts.points_status(sess)
    return {**points_updates(sess, text), "editor_in": editor_value(sess), "prompt": req.prompt, "prepared": None,
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
    if max(image.size) > ctx.upload_max_side:
        return {"gen_status": texts.error(
            DragError(f"the image is larger than the app's --upload-max-side {ctx.upload_max_side}"))}
    sess = ss.set_image(ss.Session(), image, ctx.upload_max_side)
    text = "Generated image: it is dragged from its saved latents. " + texts.points_status(sess)
    return {**points_updates(sess, text), "editor_in": editor_value(sess), "result_img": None, "prepared": None,
            "tabs": gr.Tabs(selected="drag-tab")}
