"""The Gradio web app: a thin layer over :class:`dragkit.DragEditor`.

Everything a user edits lives in per-session ``gr.State`` (:class:`~dragkit.ui.session.Session` and the last edit);
the only shared objects are the loaded editor, a lock that keeps one edit at a time on the device (the run event is
also queued with ``concurrency_limit=1``) and the cancel flags of running edits, keyed by session.
"""

import dataclasses
import functools
import logging
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import gradio as gr
import numpy as np
from PIL import Image

from ..config import GenerationConfig
from ..editor import default_config, method_names
from ..sampling import SCHEDULERS
from ..types import DragError, EditCancelled, ProgressEvent
from . import drawing, exchange, params as params_mod
from . import session as ss

logger = logging.getLogger(__name__)

STAGES = {"lora": "identity LoRA", "inversion": "DDIM inversion", "optimization": "drag (latent optimisation)",
          "denoising": "denoising"}
PREVIEW_EVERY_S = 0.25  # at most this often a live preview is sent to the browser
# Results are shown filling their box (small images upscaled, pixelated); the points view is upscaled server-side
# instead, because Gradio maps clicks to image pixels assuming the browser never enlarges an image.
CSS = "#result img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"


NO_IMAGE = ("No image yet. If you uploaded a file, it could not be read as an image: use PNG, JPEG, WebP, BMP or "
            "TIFF.")


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"**Error:** {text}"


def _points_status(sess: ss.Session) -> str:
    if sess.image is None:
        return "Upload an image to start."
    w, h = sess.image.size
    pairs = len(sess.points) // 2
    parts = [f"Image {w}×{h}.", f"{pairs} drag{'s' if pairs != 1 else ''}."]
    if sess.expecting == "target":
        parts.append(f"Click the target of handle {pairs + 1}.")
    else:
        parts.append("Click a handle point." if not pairs else "Click another handle, or Run.")
    parts.append("Editable region: painted." if sess.mask is not None else "Editable region: whole image.")
    text = " ".join(parts)
    warn = ss.mask_warnings(sess)
    if warn:
        text += "\n\n**Warning:** " + "; ".join(warn) + " — it is held fixed; paint over it or erase the mask."
    if sess.notice:
        text += "\n\n**Note:** " + sess.notice
    return text


def _view(sess: ss.Session) -> Optional[Image.Image]:
    return None if sess.image is None else drawing.render_view(sess.image, sess.points, sess.mask)


def _editor_value(sess: ss.Session) -> Optional[dict]:
    if sess.image is None:
        return None
    layers = []
    if sess.mask is not None:
        layer = np.zeros((*sess.mask.shape, 4), np.uint8)
        layer[sess.mask > 0] = (255, 255, 255, 190)
        layers.append(layer)
    return {"background": sess.image, "layers": layers, "composite": None}


def _flatten(background: Any) -> Image.Image:
    arr = np.asarray(background)
    if arr.ndim == 2:
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if arr.shape[2] == 4:  # transparent uploads are shown, and edited, on white
        rgba = Image.fromarray(arr.astype(np.uint8), "RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return Image.fromarray(arr[..., :3].astype(np.uint8))


def _progress_text(ev: ProgressEvent, lora_cached: bool) -> str:
    text = f"**Running** · **{STAGES.get(ev.stage, ev.stage)}** — step {ev.step}/{ev.total}"
    if ev.loss is not None:
        text += f" · loss {ev.loss:.4g}"
    if lora_cached:
        text += " · identity LoRA reused from cache"
    return text


def _serialize_blob_uploads(editor: "gr.ImageEditor") -> None:
    """Work around a race in Gradio's ImageEditor: the browser sends background, composite and layers of one edit
    concurrently to ``accept_blobs``, which reads-then-writes a shared dict per edit id from worker threads, so one
    part (often the background) can be lost. Serialising the calls makes every part arrive."""
    original = editor.accept_blobs
    lock = threading.Lock()

    @functools.wraps(original)
    def accept_blobs(data):
        with lock:
            return original(data)

    accept_blobs._is_server_fn = True
    editor.accept_blobs = accept_blobs


def _param_widget(p: params_mod.Param, elem_id: str, **extra):
    """The widget of one config field (checkbox, number or text; the sampler as a dropdown), labelled with its name
    and its config comment, the paper default added when the start value differs."""
    info = p.help
    if p.value != p.paper_default:
        info = f"{info} (paper default: {params_mod.format_value(p.kind, p.paper_default)})"
    kw = dict(label=p.name, info=info or None, elem_id=elem_id, **extra)
    value = params_mod.format_value(p.kind, p.value)
    if p.kind == "bool":
        return gr.Checkbox(value=value, **kw)
    if p.kind == "int":
        return gr.Number(value=value, precision=0, **kw)
    if p.kind == "float":
        return gr.Number(value=value, **kw)
    if p.name == "scheduler":
        return gr.Dropdown(list(SCHEDULERS), value=value, **kw)
    return gr.Textbox(value=value, **kw)


def build_app(editor, defaults: Optional[dict[str, Any]] = None, method: Optional[str] = None,
              max_side: int = ss.DEFAULT_MAX_SIDE, seed: int = 0, work_dir: Optional[str] = None):
    """The Blocks app over ``editor`` (loaded once by the caller). ``defaults`` maps method → config shown at start
    (paper defaults unless overridden); ``method`` is the one selected at start."""
    methods = method_names()
    defaults = dict(defaults or {})
    for m in methods:
        defaults.setdefault(m, default_config(m))
    method = method if method in methods else methods[0]
    work = Path(work_dir or tempfile.mkdtemp(prefix="dragkit-ui-"))
    work.mkdir(parents=True, exist_ok=True)
    params = {m: params_mod.method_params(m, defaults[m]) for m in methods}
    gen_params = {p.name: p for p in params_mod.method_params("generate", GenerationConfig())}
    device_lock = threading.Lock()  # one edit at a time on the model, even after a cancelled stream detaches
    cancel_flags: dict[str, threading.Event] = {}

    def fresh_dir(prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=work))

    def config_for(method_name: str, values: list[Any]):
        return params_mod.config_from_values(defaults[method_name], params[method_name], values)

    with gr.Blocks(title="dragkit — drag editing") as demo:
        session = gr.State(ss.Session())
        last_edit = gr.State(None)  # {"key": ..., "result": DragResult} of this session's last finished edit
        gen_state = gr.State(None)  # {"fingerprint": ..., "generation": Generation} of this session's last generation
        gr.Markdown("## dragkit — point-based image editing\n"
                    "1 · upload an image and, optionally, paint the region that may change (brush; eraser removes) "
                    "· 2 · click a **handle** (red) then its **target** (blue), as many pairs as you like "
                    "· 3 · **Run**. Or make one in the **Generate** tab and drag it there.")
        with gr.Tabs(selected="drag-tab", elem_id="tabs") as tabs:
            with gr.Tab("Drag", id="drag-tab", elem_id="drag-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column():
                        editor_in = gr.ImageEditor(
                            label="Image and editable region", type="numpy", image_mode="RGBA",
                            sources=["upload", "clipboard"],
                            transforms=[], layers=False, format="png", elem_id="input-editor",
                            brush=gr.Brush(colors=[("#ffffff", 0.75)], default_color=("#ffffff", 0.75),
                                           color_mode="fixed"),
                            eraser=gr.Eraser(),
                            placeholder="Drop an image here (any size; very large ones are downscaled)")
                    with gr.Column():
                        view = gr.Image(label="Points: click a handle, then its target", interactive=False,
                                        format="png", elem_id="points-view", buttons=["fullscreen"])
                        with gr.Row():
                            undo_btn = gr.Button("Undo last point", elem_id="undo-btn", size="sm")
                            clear_btn = gr.Button("Clear points", elem_id="clear-btn", size="sm")
                    with gr.Column():
                        result_img = gr.Image(label="Result (same size as the input)", interactive=False,
                                              format="png", elem_id="result", buttons=["download", "fullscreen"],
                                              height=320)
                status = gr.Markdown("Upload an image to start.", elem_id="status")
                with gr.Row():
                    method_dd = gr.Dropdown(methods, value=method, label="Method", elem_id="method")
                    prompt_tb = gr.Textbox(label="Prompt (optional)", elem_id="prompt", scale=2)
                    seed_nb = gr.Number(value=seed, precision=0, label="Seed", elem_id="seed")
                with gr.Accordion("Advanced parameters (paper defaults)", open=False):
                    groups, widgets = [], {}
                    for m in methods:
                        with gr.Group(visible=(m == method)) as grp:
                            widgets[m] = []
                            for p in params[m]:
                                widgets[m].append(_param_widget(p, f"param-{m}-{p.name}"))
                        groups.append(grp)
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
                with gr.Row():
                    compare = gr.ImageSlider(label="Before / after", interactive=False, format="png",
                                             elem_id="compare")
                    trajectory = gr.Image(label="Handle trajectory", interactive=False, format="gif",
                                          elem_id="trajectory")
                with gr.Row():
                    with gr.Column():
                        export_btn = gr.Button("Export edit (request JSON, edit.zip, DragBench sample)",
                                               elem_id="export-btn")
                        downloads = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                            elem_id="downloads")
                    with gr.Column():
                        import_files = gr.File(label="Import an edit to replay (edit.zip / DragBench sample zip / "
                                                     "request JSON with its image / original_image.png + "
                                                     "meta_data.pkl)",
                                               file_count="multiple", type="filepath", elem_id="import-files")
            with gr.Tab("Generate", id="generate-tab", elem_id="generate-tab"):
                gr.Markdown("Generate an image, then **Drag this image**: it is dragged from its own saved latents "
                            "(DragDiffusion's generated-image mode: no identity LoRA, no inversion, the same prompts, "
                            "guidance, sampler and FreeU).")
                gen_widgets = {}
                with gr.Row():
                    for name in ("prompt", "negative_prompt"):
                        gen_widgets[name] = _param_widget(gen_params[name], f"gen-{name}", scale=2)
                with gr.Row():
                    for name in ("seed", "guidance_scale", "num_inference_steps", "scheduler", "width", "height"):
                        gen_widgets[name] = _param_widget(gen_params[name], f"gen-{name}")
                with gr.Accordion("FreeU (all 1.0 = off)", open=False), gr.Row():
                    for name in ("freeu_b1", "freeu_b2", "freeu_s1", "freeu_s2"):
                        gen_widgets[name] = _param_widget(gen_params[name], f"gen-{name}")
                with gr.Row():
                    gen_btn = gr.Button("Generate", variant="primary", elem_id="gen-btn")
                    send_btn = gr.Button("Drag this image", elem_id="gen-to-drag")
                gen_status = gr.Markdown("", elem_id="gen-status")
                gen_img = gr.Image(label="Generated image", interactive=False, format="png", elem_id="gen-image",
                                   buttons=["download", "fullscreen"], height=360)
        all_widgets = [w for m in methods for w in widgets[m]]
        _serialize_blob_uploads(editor_in)

        # --- handlers: thin, every failure becomes a message in the page ---------------------------------------

        def on_editor(value, sess: ss.Session):
            try:
                background = (value or {}).get("background")
                logger.debug("editor change: background %s, %d layer(s)", None if background is None else
                             np.asarray(background).shape, len((value or {}).get("layers") or []))
                if background is None:  # cleared, a blob already consumed, or a file the browser could not decode
                    if sess.image is None:
                        return sess, None, NO_IMAGE
                    return sess, gr.update(), gr.update()
                new_image = ss.fingerprint(background) != sess.fingerprint
                if new_image:
                    sess = ss.set_image(ss.Session(), _flatten(background), max_side)
                    sess = dataclasses.replace(sess, fingerprint=ss.fingerprint(background))
                masked = ss.set_mask(sess, ss.mask_from_layers((value or {}).get("layers") or [], sess.image.size))
                if not new_image and ss.same_mask(masked.mask, sess.mask):
                    # An echo of what the session already holds (the editor's value set by an import or "Drag this
                    # image" fires its change event late): leave the view and the status — e.g. "Done" — alone.
                    return sess, gr.update(), gr.update()
                return masked, _view(masked), _points_status(masked)
            except DragError as exc:
                return sess, _view(sess), _error(exc)
            except Exception as exc:  # never let a bad upload take the server down
                logger.exception("image upload failed")
                message = f"cannot read the upload as an image ({type(exc).__name__})"
                return sess, _view(sess), _error(DragError(message))

        def on_clear_image(_sess: ss.Session):
            return ss.Session(), None, "Upload an image to start."

        def on_click(sess: ss.Session, evt: gr.SelectData):
            try:
                if sess.image is None:
                    raise DragError("upload an image first")
                scale = drawing.view_scale(sess.image.size)
                sess = ss.add_point(sess, ss.click_to_pixel(evt.index, scale, sess.image.size))
                return sess, _view(sess), _points_status(sess)
            except DragError as exc:
                return sess, _view(sess), _error(exc)

        def on_undo(sess: ss.Session):
            sess = ss.undo_point(sess)
            return sess, _view(sess), _points_status(sess)

        def on_clear(sess: ss.Session):
            sess = ss.clear_points(sess)
            return sess, _view(sess), _points_status(sess)

        def on_method(name):
            return [gr.update(visible=(m == name)) for m in methods]

        def gather(data: dict):
            sess, name = data[session], data[method_dd]
            if name not in params:
                raise DragError(f"unknown method {name!r}")
            request = ss.build_request(sess, data[prompt_tb])
            config = config_for(name, [data[w] for w in widgets[name]])
            seed_value = data[seed_nb]
            if seed_value is None or float(seed_value) != int(float(seed_value)):
                raise DragError("seed must be a whole number")
            return sess, request, config, int(float(seed_value))

        def edit_key(sess, request, config, seed_value):
            return (sess.fingerprint, sess.points, None if sess.mask is None else ss.fingerprint(sess.mask * 255),
                    request.prompt, config, seed_value)

        def on_run(data: dict, request: gr.Request):
            try:
                sess, req, config, seed_value = gather(data)
            except DragError as exc:
                yield {status: _error(exc)}
                return
            warn = ss.mask_warnings(sess)
            generation = _generation_of(sess, data[gen_state])
            hash_ = getattr(request, "session_hash", None) or "local"
            flag = cancel_flags.setdefault(hash_, threading.Event())  # made at the click by on_queued
            if flag.is_set():  # cancelled while waiting in the queue
                cancel_flags.pop(hash_, None)
                yield {status: "Cancelled."}
                return
            events: queue.Queue = queue.Queue()

            def callback(ev: ProgressEvent) -> None:
                if flag.is_set():
                    raise EditCancelled()
                events.put(ev)

            box: dict[str, Any] = {}

            def work():
                try:
                    with device_lock:
                        if flag.is_set():
                            raise EditCancelled()
                        box["result"] = editor.edit(req, config, callback=callback, seed=seed_value,
                                                    generation=generation)
                except BaseException as exc:  # reported to the page below
                    box["error"] = exc
                finally:
                    events.put(None)

            logger.debug("edit starts (session %s)", hash_)
            threading.Thread(target=work, name="dragkit-edit", daemon=True).start()
            note = "\n\n**Warning:** " + "; ".join(warn) if warn else ""
            yield {status: "**Running** · starting…" + note, result_img: None, compare: None, trajectory: None}
            lora_seen, last_sent, done = False, 0.0, False
            while not done:
                ev = events.get()
                batch = [ev]
                while True:
                    try:
                        batch.append(events.get_nowait())
                    except queue.Empty:
                        break
                if None in batch:
                    done = True
                batch = [e for e in batch if e is not None]
                if not batch:
                    continue
                lora_seen = lora_seen or any(e.stage == "lora" for e in batch)
                ev = batch[-1]
                now = time.monotonic()
                if now - last_sent < PREVIEW_EVERY_S and not done:
                    continue
                last_sent = now
                cached = (config.lora_steps > 0 and not lora_seen and editor.lora_cache is not None
                          and generation is None)
                update = {status: _progress_text(ev, cached)}
                handles = next((e.handles for e in reversed(batch) if e.handles is not None), None)
                if handles is not None:
                    update[view] = drawing.render_view(sess.image, sess.points, sess.mask, handles=handles)
                yield update
            if cancel_flags.get(hash_) is flag:
                del cancel_flags[hash_]
            logger.debug("edit ends (session %s): %s", hash_, type(box.get("error", box.get("result"))).__name__)
            if "error" in box:
                exc = box["error"]
                if isinstance(exc, EditCancelled):
                    yield {status: "Cancelled.", view: _view(sess)}
                elif isinstance(exc, DragError):
                    yield {status: _error(exc), view: _view(sess)}
                else:
                    logger.error("edit failed", exc_info=exc)
                    yield {status: _error(RuntimeError(f"the edit failed: {type(exc).__name__}: {exc}")),
                           view: _view(sess)}
                return
            result = box["result"]
            files = exchange.export_edit(fresh_dir("edit-"), req, config, result)
            gif = drawing.trajectory_animation(req.image, sess.points, result.trajectory,
                                               frames=getattr(result, "frames", None))
            gif_path = None
            if gif:
                gif_path = fresh_dir("traj-") / "trajectory.gif"
                gif_path.write_bytes(gif)
            lora_note = "identity LoRA reused from cache" if (config.lora_steps > 0 and not lora_seen) else (
                "identity LoRA trained" if config.lora_steps > 0 else "no identity LoRA")
            if generation is not None:
                lora_note = "generated image: dragged from its saved latents, no identity LoRA, no inversion"
            t = result.timings
            text = (f"**Done** in {t.get('total', 0):.1f} s ({lora_note}; {result.steps} drag steps). "
                    "Final handles: " + ", ".join(f"({x:.0f}, {y:.0f})" for x, y in result.final_handles) + ".")
            if warn:
                text += "\n\n**Warning:** " + "; ".join(warn)
            final_view = drawing.render_view(sess.image, sess.points, sess.mask, handles=result.final_handles)
            yield {status: text, view: final_view, result_img: result.image, compare: (req.image, result.image),
                   trajectory: str(gif_path) if gif_path else None, downloads: [str(f) for f in files],
                   last_edit: {"key": edit_key(sess, req, config, seed_value),
                               "result": dataclasses.replace(result, latent=None)}}

        def _generation_of(sess: ss.Session, gen: Optional[dict]):
            """The generation this session's image came from (sent from the Generate tab, not changed since)."""
            return gen["generation"] if gen and sess.image is not None and gen["fingerprint"] == sess.fingerprint \
                else None

        def on_generate(data: dict):
            names = list(gen_widgets)
            try:
                config = params_mod.config_from_values(GenerationConfig(), [gen_params[n] for n in names],
                                                       [data[gen_widgets[n]] for n in names])
            except DragError as exc:
                yield {gen_status: _error(exc)}
                return
            yield {gen_status: "**Generating** · waiting for the device…"}
            try:
                with device_lock:
                    generation = editor.generate(config)
            except DragError as exc:
                yield {gen_status: _error(exc)}
                return
            yield {gen_status: f"**Done** in {generation.timings['total']:.1f} s ({config.width}×{config.height}, "
                               f"{config.scheduler}, seed {config.seed}). **Drag this image** to edit it.",
                   gen_img: generation.image,
                   gen_state: {"fingerprint": ss.fingerprint(generation.image), "generation": generation}}

        def on_send(gen: Optional[dict]):
            if not gen:
                return {gen_status: _error(DragError("generate an image first"))}
            image = gen["generation"].image
            if max(image.size) > max_side:
                return {gen_status: _error(DragError(f"the image is larger than the app's --max-side {max_side}"))}
            sess = ss.set_image(ss.Session(), image, max_side)
            text = "Generated image: it is dragged from its saved latents. " + _points_status(sess)
            return {session: sess, editor_in: _editor_value(sess), view: _view(sess), status: text,
                    result_img: None, tabs: gr.Tabs(selected="drag-tab")}

        def on_queued(request: gr.Request):
            """At the click, before the queue: a fresh cancel flag, so that Cancel also reaches a queued edit."""
            cancel_flags[getattr(request, "session_hash", None) or "local"] = threading.Event()
            return "**Queued** · waiting for the device…"

        def on_cancel(sess: ss.Session, request: gr.Request):
            flag = cancel_flags.get(getattr(request, "session_hash", None) or "local")
            logger.debug("cancel (session %s): %s", getattr(request, "session_hash", None), flag is not None)
            if flag is None:
                return "Nothing to cancel.", _view(sess)
            flag.set()
            return "Cancelled.", _view(sess)

        def on_export(data: dict):
            try:
                sess, req, config, seed_value = gather(data)
                last = data[last_edit]
                result = last["result"] if last and last["key"] == edit_key(sess, req, config, seed_value) else None
                files = exchange.export_edit(fresh_dir("export-"), req, config, result)
                note = " (with the result)" if result is not None else " (not run yet: no result included)"
                return {downloads: [str(f) for f in files], status: "Exported" + note + "."}
            except DragError as exc:
                return {status: _error(exc)}

        def on_import(files):
            none = [gr.update()] * (4 + len(all_widgets))
            if not files:
                return [gr.update(), gr.update(), gr.update(), gr.update(), *none]
            try:
                paths = files if isinstance(files, list) else [files]
                req, extra = exchange.import_edit(paths, fresh_dir("import-"))
                sess = ss.from_request(req, max_side, extra)
            except DragError as exc:
                return [gr.update(), gr.update(), gr.update(), _error(exc), *none]
            except Exception as exc:
                logger.exception("import failed")
                return [gr.update(), gr.update(), gr.update(), _error(DragError(f"cannot import: {exc}")), *none]
            updates = [gr.update()] * len(all_widgets)
            name = extra.get("method")
            method_update = gr.update()
            if name in params:
                method_update = gr.update(value=name)
                cfg = extra.get("config") or {}
                offset = sum(len(widgets[m]) for m in methods[:methods.index(name)])
                for i, p in enumerate(params[name]):
                    if p.name in cfg:
                        value = tuple(cfg[p.name]) if p.kind == "tuple" else cfg[p.name]
                        updates[offset + i] = gr.update(value=params_mod.format_value(p.kind, value))
            text = f"Imported {len(req.handles)} drag(s). " + _points_status(sess)
            return [sess, _editor_value(sess), _view(sess), text, method_update, gr.update(value=req.prompt),
                    None, None, *updates]

        # --- wiring -------------------------------------------------------------------------------------------------
        editor_in.change(on_editor, [editor_in, session], [session, view, status], trigger_mode="always_last",
                         show_progress="hidden")
        # The upload event carries the uploaded file itself; change events (brush strokes) carry canvas blobs.
        editor_in.upload(on_editor, [editor_in, session], [session, view, status], show_progress="hidden")
        editor_in.clear(on_clear_image, [session], [session, view, status], show_progress="hidden")
        view.select(on_click, [session], [session, view, status], show_progress="hidden")
        undo_btn.click(on_undo, [session], [session, view, status], show_progress="hidden")
        clear_btn.click(on_clear, [session], [session, view, status], show_progress="hidden")
        method_dd.change(on_method, [method_dd], groups, show_progress="hidden")
        run_inputs = {session, last_edit, gen_state, method_dd, prompt_tb, seed_nb, *all_widgets}
        # Cancel works through a per-session flag that the edit checks at every step (and before it starts), so
        # the edit ends cleanly and frees the device; Gradio's `cancels=` would only detach the stream.
        run_btn.click(on_queued, None, [status], queue=False, show_progress="hidden").then(
            on_run, run_inputs, [status, view, result_img, compare, trajectory, downloads, last_edit],
            concurrency_limit=1, concurrency_id="device", show_progress="minimal")
        cancel_btn.click(on_cancel, [session], [status, view], queue=False, show_progress="hidden")
        export_btn.click(on_export, run_inputs, [downloads, status])
        import_files.upload(on_import, [import_files],
                            [session, editor_in, view, status, method_dd, prompt_tb, result_img, downloads,
                             *all_widgets])
        gen_btn.click(on_generate, {*gen_widgets.values()}, [gen_status, gen_img, gen_state],
                      concurrency_limit=1, concurrency_id="device", show_progress="minimal")
        send_btn.click(on_send, [gen_state], [session, editor_in, view, status, result_img, tabs, gen_status],
                       show_progress="hidden")
    demo.queue(default_concurrency_limit=8)
    return demo


def serve(demo, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True):
    """Launch ``demo`` (bound to ``host``; ``block=False`` returns at once, for tests and notebooks)."""
    return demo.launch(server_name=host, server_port=port, share=share, ssr_mode=False, show_error=True, css=CSS,
                       prevent_thread_lock=not block, quiet=not block, max_file_size="200mb")
