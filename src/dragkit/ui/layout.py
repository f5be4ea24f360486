"""The page: Gradio components of the Drag and Generate tabs, built inside a ``gr.Blocks`` and gathered in a
:class:`Layout`, which also names them, so that the handlers (:mod:`.handlers`) speak names, not components."""

from __future__ import annotations

import dataclasses
import functools
import threading
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..config import METHODS
from ..sampling import SCHEDULERS
from . import params as params_mod
from . import session as ss
from . import texts

# Results are shown filling their box (small images upscaled, pixelated); the points view is upscaled server-side
# instead, because Gradio maps clicks to image pixels assuming the browser never enlarges an image.
CSS = "#result img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"

# A very large upload would freeze the tab for minutes: the canvas editor works (and sends its layers back) at full
# size before the server could downscale it. This page script, run once at load, intercepts a file chosen or dropped
# on the input editor and, when it is larger than the app's --upload-max-side, hands the editor a copy downscaled in
# the browser, with a note under the editor saying so (the server still checks and downscales what it receives).
UPLOAD_GUARD_JS = """
() => {
  const maxSide = MAX_SIDE;
  const inEditor = (el) => el instanceof Element && el.closest("#input-editor");
  const note = (text) => {
    const editor = document.getElementById("input-editor");
    if (!editor) return;
    let el = document.getElementById("dragkit-upload-note");
    if (!el) {
      el = document.createElement("div");
      el.id = "dragkit-upload-note";
      editor.insertAdjacentElement("afterend", el);
    }
    el.textContent = text;
    el.style.display = text ? "" : "none";
  };
  const shrink = async (file) => {
    note("");
    if (!file || !/^image\\//.test(file.type)) return file;
    let bmp;
    try { bmp = await createImageBitmap(file); } catch (e) { return file; }
    const w = bmp.width, h = bmp.height;
    if (Math.max(w, h) <= maxSide) { bmp.close(); return file; }
    const s = maxSide / Math.max(w, h);
    const cw = Math.max(1, Math.round(w * s)), ch = Math.max(1, Math.round(h * s));
    const canvas = new OffscreenCanvas(cw, ch);
    const g = canvas.getContext("2d");
    g.imageSmoothingQuality = "high";
    g.drawImage(bmp, 0, 0, cw, ch);
    bmp.close();
    const blob = await canvas.convertToBlob({type: "image/png"});
    note(`The image is ${w}×${h}: it was downscaled in the browser to ${cw}×${ch} (this app edits at most ` +
         `${maxSide} px per side), so that the page stays responsive.`);
    return new File([blob], file.name.replace(/\\.[^.]*$/, "") + ".png", {type: "image/png"});
  };
  const handOn = async (ev, files, redispatch) => {
    ev.preventDefault();
    ev.stopImmediatePropagation();
    const dt = new DataTransfer();
    dt.items.add(await shrink(files[0]));
    redispatch(dt);
  };
  document.addEventListener("change", (ev) => {
    const input = ev.target;
    if (ev.dragkitPassed || !(input instanceof HTMLInputElement) || input.type !== "file" || !inEditor(input)
        || !input.files || !input.files.length) return;
    handOn(ev, input.files, (dt) => {
      input.files = dt.files;
      const again = new Event("change", {bubbles: true});
      again.dragkitPassed = true;
      input.dispatchEvent(again);
    });
  }, true);
  document.addEventListener("drop", (ev) => {
    const target = ev.target;
    if (ev.dragkitPassed || !inEditor(target) || !ev.dataTransfer || !ev.dataTransfer.files.length) return;
    handOn(ev, ev.dataTransfer.files, (dt) => {
      const again = new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true});
      again.dragkitPassed = true;
      target.dispatchEvent(again);
    });
  }, true);
}
"""


def upload_guard_js(upload_max_side: int) -> str:
    """The page script of :data:`UPLOAD_GUARD_JS` for an app that takes uploads of at most ``upload_max_side`` px
    per side."""
    return UPLOAD_GUARD_JS.replace("MAX_SIDE", str(int(upload_max_side)))


INTRO = ("## dragkit — point-based image editing\n"
         "1 · upload an image and, optionally, paint the region that may change (brush; eraser removes) "
         "· 2 · click a **handle** (red) then its **target** (blue), as many pairs as you like "
         "· 3 · **Run**. Or make one in the **Generate** tab and drag it there.")
GENERATE_INTRO = ("Generate an image, then **Drag this image**: it is dragged from its own saved latents "
                  "(DragDiffusion's generated-image mode: no identity LoRA, no inversion, the same prompts, "
                  "guidance, sampler and FreeU).")
IMPORT_LABEL = ("Import an edit to replay (edit.zip / DragBench sample zip / request JSON with its image / "
                "original_image.png + meta_data.pkl)")
# The Generate tab's widgets, row by row (the last rows inside the FreeU accordion).
GEN_ROWS = (("prompt", "negative_prompt"), ("seed", "guidance_scale", "num_inference_steps", "scheduler", "width",
                                            "height"))
FREEU_ROW = ("freeu_b1", "freeu_b2", "freeu_s1", "freeu_s2")


@dataclass
class Layout:
    """Every component the handlers read or update. :meth:`named` maps names to them: the field names below, and
    the elem ids of the parameter groups and widgets (:func:`.params.group_id`, :func:`.params.param_id`,
    :func:`.params.gen_id`)."""

    session: gr.State  # ui.session.Session of this browser tab
    last_edit: gr.State  # {"key": …, "result": DragResult} of this session's last finished edit
    gen_state: gr.State  # {"fingerprint": …, "generation": Generation} of this session's last generation
    prepared: gr.State  # dragkit.prepared.PreparedImage of this session's image and prompt (LoRA, inversion), or None
    tabs: gr.Tabs
    editor_in: gr.ImageEditor
    view: gr.Image
    undo_btn: gr.Button
    clear_btn: gr.Button
    result_img: gr.Image
    status: gr.Markdown
    prep_status: gr.Markdown  # the background preparation's line ("Preparing · identity LoRA 23/80", "Ready · …")
    method: gr.Dropdown
    prompt: gr.Textbox
    seed: gr.Number
    groups: list  # one gr.Group of parameter widgets per method (only the selected method's is visible)
    params: dict  # method → its parameter widgets, in config field order
    run_btn: gr.Button
    cancel_btn: gr.Button
    live: gr.Checkbox  # Live: re-run the drag at every change of the point pairs (one-step methods only)
    compare: gr.ImageSlider
    trajectory: gr.Image
    export_btn: gr.Button
    downloads: gr.File
    import_files: gr.File
    gen_widgets: dict  # GenerationConfig field → widget
    gen_btn: gr.Button
    send_btn: gr.Button
    gen_status: gr.Markdown
    gen_img: gr.Image

    @property
    def param_widgets(self) -> list:
        """All methods' parameter widgets, method after method."""
        return [w for ws in self.params.values() for w in ws]

    @functools.cached_property
    def _by_name(self) -> dict[str, Any]:
        named = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if not isinstance(getattr(self, f.name), (list, dict))}
        for w in [*self.groups, *self.param_widgets, *self.gen_widgets.values()]:
            named[w.elem_id] = w
        return named

    def named(self, *names: str) -> list:
        """The components called ``names``."""
        return [self._by_name[n] for n in names]

    def values_by_name(self, data: dict) -> dict[str, Any]:
        """A Gradio ``{component: value}`` input dict keyed by names instead."""
        names = {id(c): n for n, c in self._by_name.items()}
        return {names[id(c)]: v for c, v in data.items()}

    def updates_by_component(self, updates: dict[str, Any]) -> dict:
        """A handler's ``{name: update}`` keyed by components, as Gradio wants it (``gr.skip()`` for no update: an
        empty dict is not one to Gradio)."""
        return {self._by_name[n]: v for n, v in updates.items()} or gr.skip()


def build(params: dict[str, list[params_mod.Param]], gen_params: dict[str, params_mod.Param], method: str,
          seed: int) -> Layout:
    """Create the page's components (call inside ``with gr.Blocks():``); ``method`` is selected at start."""
    states = dict(session=gr.State(ss.Session()), last_edit=gr.State(None), gen_state=gr.State(None),
                  prepared=gr.State(None))
    gr.Markdown(INTRO)
    with gr.Tabs(selected="drag-tab", elem_id="tabs") as tabs:
        with gr.Tab("Drag", id="drag-tab", elem_id="drag-tab"):
            drag = _drag_tab(params, method, seed)
        with gr.Tab("Generate", id="generate-tab", elem_id="generate-tab"):
            generate = _generate_tab(gen_params)
    ui = Layout(tabs=tabs, **states, **drag, **generate)
    serialize_blob_uploads(ui.editor_in)
    return ui


def _drag_tab(params: dict[str, list[params_mod.Param]], method: str, seed: int) -> dict[str, Any]:
    parts = _images_row()
    parts["status"] = gr.Markdown(texts.START, elem_id="status")
    parts["prep_status"] = gr.Markdown("", elem_id="prepare-status")
    with gr.Row():
        parts["method"] = gr.Dropdown(list(params), value=method, label="Method", elem_id="method")
        parts["prompt"] = gr.Textbox(label="Prompt (optional)", elem_id="prompt", scale=2)
        parts["seed"] = gr.Number(value=seed, precision=0, label="Seed", elem_id="seed")
    with gr.Accordion("Advanced parameters (paper defaults)", open=False):
        parts["groups"], parts["params"] = [], {}
        for m, ps in params.items():
            with gr.Group(visible=(m == method), elem_id=params_mod.group_id(m)) as group:
                parts["params"][m] = [param_widget(p, params_mod.param_id(m, p.name)) for p in ps]
            parts["groups"].append(group)
    with gr.Row():
        parts["run_btn"] = gr.Button("Run", variant="primary", elem_id="run-btn")
        parts["cancel_btn"] = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
        parts["live"] = gr.Checkbox(label=texts.LIVE_LABEL, elem_id="live", scale=2, **live_state(method))
    with gr.Row():
        parts["compare"] = gr.ImageSlider(label="Before / after", interactive=False, format="png", elem_id="compare")
        parts["trajectory"] = gr.Image(label="Handle trajectory", interactive=False, format="gif",
                                       elem_id="trajectory")
    return parts | _exchange_row()


def live_state(method: str) -> dict[str, Any]:
    """The Live checkbox's value, interactivity and hint for ``method``: on for a one-step method (its config's
    ``one_step``), off and disabled, with the reason, for an iterative one."""
    one_step = getattr(METHODS.get(method), "one_step", False)
    live_methods = [m for m, cls in METHODS.items() if cls.one_step]
    return dict(value=one_step, interactive=one_step, info=texts.live_hint(method, one_step, live_methods))


def _images_row() -> dict[str, Any]:
    """Input editor (image and brush mask), points view with its buttons, result."""
    with gr.Row(equal_height=False):
        with gr.Column():
            editor_in = gr.ImageEditor(
                label="Image and editable region", type="numpy", image_mode="RGBA", sources=["upload", "clipboard"],
                transforms=[], layers=False, format="png", elem_id="input-editor",
                brush=brush(),
                eraser=gr.Eraser(), placeholder="Drop an image here (any size; very large ones are downscaled)")
        with gr.Column():
            view = gr.Image(label="Points: click a handle, then its target", interactive=False, format="png",
                            elem_id="points-view", buttons=["fullscreen"])
            with gr.Row():
                undo_btn = gr.Button("Undo last point", elem_id="undo-btn", size="sm")
                clear_btn = gr.Button("Clear points", elem_id="clear-btn", size="sm")
        with gr.Column():
            result_img = gr.Image(label="Result (same size as the input)", interactive=False, format="png",
                                  elem_id="result", buttons=["download", "fullscreen"], height=320)
    return dict(editor_in=editor_in, view=view, undo_btn=undo_btn, clear_btn=clear_btn, result_img=result_img)


def brush(radius: int | str = "auto") -> gr.Brush:
    """The input editor's brush (white, fixed colour) of ``radius`` image pixels (:func:`.session.brush_radius` once
    an image is set)."""
    return gr.Brush(default_size=radius, colors=[("#ffffff", 0.75)], default_color=("#ffffff", 0.75),
                    color_mode="fixed")


def _exchange_row() -> dict[str, Any]:
    """Export (with its downloads) and import."""
    with gr.Row():
        with gr.Column():
            export_btn = gr.Button("Export edit (request JSON, edit.zip, DragBench sample)", elem_id="export-btn")
            downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
        with gr.Column():
            import_files = gr.File(label=IMPORT_LABEL, file_count="multiple", type="filepath",
                                   elem_id="import-files")
    return dict(export_btn=export_btn, downloads=downloads, import_files=import_files)


def _generate_tab(gen_params: dict[str, params_mod.Param]) -> dict[str, Any]:
    gr.Markdown(GENERATE_INTRO)
    widgets = {}
    for row in GEN_ROWS:
        with gr.Row():
            for name in row:
                extra = {"scale": 2} if row is GEN_ROWS[0] else {}
                widgets[name] = param_widget(gen_params[name], params_mod.gen_id(name), **extra)
    with gr.Accordion("FreeU (all 1.0 = off)", open=False), gr.Row():
        for name in FREEU_ROW:
            widgets[name] = param_widget(gen_params[name], params_mod.gen_id(name))
    with gr.Row():
        gen_btn = gr.Button("Generate", variant="primary", elem_id="gen-btn")
        send_btn = gr.Button("Drag this image", elem_id="gen-to-drag")
    gen_status = gr.Markdown("", elem_id="gen-status")
    gen_img = gr.Image(label="Generated image", interactive=False, format="png", elem_id="gen-image",
                       buttons=["download", "fullscreen"], height=360)
    return dict(gen_widgets=widgets, gen_btn=gen_btn, send_btn=send_btn, gen_status=gen_status, gen_img=gen_img)


def param_widget(p: params_mod.Param, elem_id: str, **extra: Any) -> gr.components.Component:
    """The widget of one config field (checkbox, number or text; the sampler as a dropdown), labelled with its name
    and its config help, the paper default added when the start value differs."""
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


def serialize_blob_uploads(editor: gr.ImageEditor) -> None:
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
