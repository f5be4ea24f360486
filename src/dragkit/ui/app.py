"""The Gradio web app: a thin layer over :class:`dragkit.DragEditor`.

The page is built by :mod:`.layout`; what its events do is in :mod:`.handlers` (plain functions returning updates
by name); an edit runs as a :class:`~dragkit.ui.job.EditRun` in a worker thread. This module binds them together
(:func:`wire`, the one place where events meet handlers) and serves the result.

Everything a user edits lives in per-session ``gr.State`` (:class:`~dragkit.ui.session.Session`, the last edit and
the last generation, the prepared image); the only shared objects are in :class:`~dragkit.ui.handlers.AppContext`:
the loaded editor, a lock that keeps one edit at a time on the device (the run, prepare and generate events are also
queued with ``concurrency_limit=1`` in one group, so a Run clicked during a preparation waits for it and then finds
the image prepared), the cancel flags of the sessions' edits and their wanted preparations.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Optional

import gradio as gr

from ..errors import first_line
from ..prepared import INVERSION_FIELDS
from ..types import DragError
from . import api, handlers, layout
from . import params as params_mod
from . import session as ss
from .context import AppContext
from .layout import CSS, Layout

# The page's own events are private (not on the API page, not callable by gradio_client): a script uses the
# named endpoints of wire_api.
PRIVATE = {"api_visibility": "private"}
HIDDEN = {"show_progress": "hidden", **PRIVATE}
DEVICE = {"concurrency_limit": 1, "concurrency_id": "device", "show_progress": "minimal", **PRIVATE}
BACKGROUND = {**DEVICE, "show_progress": "hidden"}  # the preparation: on the device, shown in its own line
GRADIO_CACHE = (3600, 86400)  # every hour, delete Gradio's cached files older than a day


def build_app(editor, defaults: Optional[dict[str, Any]] = None, method: Optional[str] = None,
              upload_max_side: int = ss.DEFAULT_UPLOAD_MAX_SIDE, seed: int = 0,
              work_dir: Optional[str] = None) -> gr.Blocks:
    """The Blocks app over ``editor`` (loaded once by the caller). ``defaults`` maps method → config shown at start
    (paper defaults unless overridden); ``method`` is the one selected at start."""
    ctx = AppContext.create(editor, defaults, upload_max_side, work_dir)
    method = method if method in ctx.methods else ctx.methods[0]
    # Gradio keeps its own copies of uploads and results (in $GRADIO_TEMP_DIR): a day's worth at most, and none
    # after the server stops; dragkit's work folder goes when the server's process ends (AppContext).
    with gr.Blocks(title="dragkit — drag editing", delete_cache=GRADIO_CACHE) as demo:
        wire(layout.build(ctx.params, ctx.gen_params, method, seed), ctx)
        wire_api(ctx, method)
        demo.unload(unload_handler(ctx))
    demo.queue(default_concurrency_limit=8)
    demo.dragkit_context = ctx
    demo.dragkit_js = layout.upload_guard_js(upload_max_side)
    return demo


def serve(demo, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True):
    """Launch ``demo`` (bound to ``host``; ``block=False`` returns at once, for tests and notebooks)."""
    return demo.launch(server_name=host, server_port=port, share=share, ssr_mode=False, show_error=True, css=CSS,
                       js=getattr(demo, "dragkit_js", None), prevent_thread_lock=not block, quiet=not block,
                       max_file_size="200mb")


def wire(ui: Layout, ctx: AppContext) -> None:
    """Bind every event of the page to its handler (inside the Blocks that holds ``ui``)."""
    def on(fn: Callable) -> Callable:
        return bind(fn, ctx, ui)

    points = ui.named("session", "view", "status")
    form = {*ui.named("session", "last_edit", "gen_state", "prepared", "method", "prompt", "seed"), *ui.param_widgets}

    # The background preparation (identity LoRA, inversion) of the session's image, after every change it depends
    # on: the wanted preparation is recorded at once (a stale one is cancelled), then it queues on the device.
    # "always_last": a change made while the previous preparation still runs (or waits) is not dropped by the page,
    # it follows it (which the change has just cancelled, when it made it stale).
    wanted = dict(fn=on(handlers.on_prepare_queued), inputs=form, outputs=ui.named("prep_status"), queue=False,
                  trigger_mode="always_last", **HIDDEN)
    prepare = dict(fn=on(handlers.on_prepare), inputs=form, outputs=ui.named("prep_status", "prepared"),
                   trigger_mode="always_last", **BACKGROUND)

    def then_prepare(event: Any) -> None:
        event.then(**wanted).then(**prepare)

    new_image = [*points, ui.prepared]
    edited = [*new_image, ui.editor_in]  # the editor itself: a new image gets a brush of its size
    then_prepare(ui.editor_in.change(on(handlers.on_editor), [ui.editor_in, ui.session], edited,
                                     trigger_mode="always_last", **HIDDEN))
    # The upload event carries the uploaded file itself; change events (brush strokes) carry canvas blobs.
    then_prepare(ui.editor_in.upload(on(handlers.on_editor), [ui.editor_in, ui.session], edited, **HIDDEN))
    then_prepare(ui.editor_in.clear(on(handlers.on_clear_image), [ui.session], new_image, **HIDDEN))
    # Live (one-step methods): every change of the points records the edit they describe at once (superseding a
    # live edit still waiting), then queues it on the device; "always_last": the page keeps at most one waiting
    # behind the running one, sent with the latest values when its turn comes.
    live_form = {*form, ui.live}
    live_queued = dict(fn=on(handlers.on_live_queued), inputs=live_form, outputs=[ui.status], queue=False,
                       trigger_mode="always_last", **HIDDEN)
    live_run = dict(fn=on(handlers.on_live_run), inputs=live_form,
                    outputs=ui.named("status", "result_img", "compare", "trajectory", "downloads", "last_edit",
                                     "prepared", "prep_status"), trigger_mode="always_last",
                    **{**DEVICE, "show_progress": "hidden"})

    def then_live(event: Any) -> None:
        event.then(**live_queued).then(**live_run)

    then_live(ui.view.select(on(handlers.on_click), [ui.session], points, **HIDDEN))
    then_live(ui.undo_btn.click(on(handlers.on_undo), [ui.session], points, **HIDDEN))
    then_live(ui.clear_btn.click(on(handlers.on_clear), [ui.session], points, **HIDDEN))
    ui.method.change(on(handlers.on_method), [ui.method], [*ui.groups, ui.live], **HIDDEN)
    # typed values prepare once they are entered (blur / Enter), not at every keystroke; the settings the preparation
    # depends on are the prepared image's inversion key's (changing one prepares again)
    typed = [ui.prompt, ui.seed, *(w for m, ws in ui.params.items() for w in ws
                                   if w.elem_id in {params_mod.param_id(m, f) for f in INVERSION_FIELDS})]
    gr.on([ui.method.change, *(e for w in typed for e in (w.blur, w.submit))], **wanted).then(**prepare)
    # Cancel works through a per-session flag that the edit checks at every step (and before it starts), so the
    # edit ends cleanly and frees the device; Gradio's `cancels=` would only detach the stream. It stops the
    # session's preparation too.
    ui.run_btn.click(on(handlers.on_queued), None, [ui.status], queue=False, **HIDDEN).then(
        on(handlers.on_run), form,
        ui.named("status", "view", "result_img", "compare", "trajectory", "downloads", "last_edit", "prepared",
                 "prep_status"), **DEVICE)
    ui.cancel_btn.click(on(handlers.on_cancel), [ui.session], ui.named("status", "view"), queue=False, **HIDDEN)
    ui.export_btn.click(on(handlers.on_export), form, ui.named("downloads", "status"), **PRIVATE)
    then_prepare(ui.import_files.upload(
        on(handlers.on_import), [ui.import_files],
        [*ui.named("session", "editor_in", "view", "status", "method", "prompt", "prepared", "result_img",
                   "downloads", "import_files"), *ui.param_widgets], **PRIVATE))
    ui.gen_btn.click(on(handlers.on_generate), {*ui.gen_widgets.values()},
                     ui.named("gen_status", "gen_img", "gen_state"), **DEVICE)
    then_prepare(ui.send_btn.click(
        on(handlers.on_send), [ui.gen_state],
        ui.named("session", "editor_in", "view", "status", "result_img", "prepared", "tabs", "gen_status"),
        **HIDDEN))


def wire_api(ctx: AppContext, method: str) -> None:
    """The named endpoints for scripts (:mod:`.api`): ``/drag`` and ``/methods``, on hidden components that give
    them typed, labelled parameters; a mistake in the input is one line (a ``gr.Error``)."""
    with gr.Group(visible=False):
        inputs = [gr.Image(type="pil", image_mode="RGB", label="image"),
                  gr.Image(type="pil", label="mask (white or opaque = may change; none = the whole image)"),
                  gr.JSON(label='points {"handles": [[x, y], ...], "targets": [[x, y], ...]}'),
                  gr.Textbox(label="prompt"),
                  gr.Dropdown(ctx.methods, value=method, label="method"),
                  gr.JSON(label="settings {config field: value}"),
                  gr.Number(value=0, precision=0, label="seed")]
        outputs = [gr.Image(type="pil", format="png", label="edited image"), gr.JSON(label="result record")]
        methods_out = gr.JSON(label="methods and their settings")
        drag_btn, methods_btn = gr.Button(visible=False), gr.Button(visible=False)

    def drag(image, mask, points, prompt, method, settings, seed):
        """Drag-edit an image: points {"handles": [[x, y], ...], "targets": [[x, y], ...]} in pixels of the image;
        settings: config fields (see /methods). Returns the edited image and the result record (with notices)."""
        try:
            return api.drag(ctx, image, mask, points, prompt, method, settings, seed)
        except DragError as exc:
            raise gr.Error(first_line(exc)) from None

    def methods():
        """The drag methods and each one's settings (config fields) as this server starts them."""
        return api.methods(ctx)

    drag_btn.click(drag, inputs, outputs, api_name="drag", concurrency_limit=1, concurrency_id="device")
    methods_btn.click(methods, None, methods_out, api_name="methods", queue=False)


def unload_handler(ctx: AppContext) -> Callable:
    """The page's unload event (a tab closed or reloaded): :func:`handlers.on_unload` for that session."""
    def unload(request: gr.Request) -> None:
        handlers.on_unload(ctx, request)

    return unload


def bind(fn: Callable, ctx: AppContext, ui: Layout) -> Callable:
    """Handler ``fn`` as a Gradio event function: ``ctx`` passed first when ``fn`` takes it, a ``form`` parameter
    given the input dict keyed by names, the returned (or yielded) updates keyed by components. The name, the
    signature and the type hints (which mark the ``gr.Request`` / ``gr.SelectData`` parameters) are kept."""
    sig = inspect.signature(fn)
    takes_ctx = next(iter(sig.parameters)) == "ctx"
    params = list(sig.parameters.values())[int(takes_ctx):]
    forms = {i for i, p in enumerate(params) if p.name == "form"}

    def call(args: tuple) -> Any:
        args = tuple(ui.values_by_name(a) if i in forms else a for i, a in enumerate(args))
        return fn(ctx, *args) if takes_ctx else fn(*args)

    if inspect.isgeneratorfunction(fn):
        def bound(*args):
            for updates in call(args):
                yield ui.updates_by_component(updates)
    else:
        def bound(*args):
            return ui.updates_by_component(call(args))
    bound.__name__ = bound.__qualname__ = fn.__name__
    bound.__doc__ = fn.__doc__
    bound.__signature__ = sig.replace(parameters=params)
    bound.__annotations__ = {k: v for k, v in typing.get_type_hints(fn).items() if k in {p.name for p in params}}
    return bound
