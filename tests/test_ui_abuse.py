"""The web app under abuse, at the handler level (no browser): a huge upload, an import after a failed one, two tabs
editing at once, a tab closed mid-edit, a failing generation — each ends with a message in the page, the device is
freed and the next request is served. Also: the app's work folder is bounded and removed."""

import threading
import time
import types
import zipfile

import numpy as np
import pytest
from PIL import Image

from dragkit.config import DragDiffusionConfig
from dragkit.types import DragResult, EditCancelled, ProgressEvent

gr = pytest.importorskip("gradio", reason="the web app needs gradio")
from dragkit.ui import exchange, handlers, texts  # noqa: E402
from dragkit.ui import session as ss  # noqa: E402
from dragkit.ui.context import KEEP_RUN_DIRS, AppContext  # noqa: E402
from dragkit.ui.params import format_value, param_id  # noqa: E402


class SlowEditor:
    """Reports a step every few milliseconds until ``release`` is set (or the callback cancels it); counts how many
    edits run at the same time."""

    lora_cache = None

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()
        self.running = self.most_running = self.calls = 0
        self.cancelled = 0
        self.lock = threading.Lock()

    def edit(self, request, config, callback=None, seed=0, generation=None):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.started.set()
        try:
            step = 0
            while not self.release.wait(0.005):
                step += 1
                callback(ProgressEvent("optimization", step, 10**6, handles=list(request.handles), loss=1.0))
            return DragResult(request.image, list(request.targets), [list(request.handles)], {"total": 0.1}, step,
                              config=config)
        except EditCancelled:
            self.cancelled += 1
            raise
        finally:
            with self.lock:
                self.running -= 1

    def generate(self, config, callback=None):
        raise RuntimeError("out of memory\non the device")


def _ctx(editor, tmp_path):
    return AppContext.create(editor, {"dragdiffusion": DragDiffusionConfig(lora_steps=0)}, upload_max_side=128,
                             work_dir=str(tmp_path / "work"))


def _session(seed=0):
    image = Image.fromarray((np.random.default_rng(seed).random((32, 48, 3)) * 255).astype(np.uint8))
    return ss.add_point(ss.add_point(ss.set_image(ss.Session(), image), (10, 10)), (20, 12))


def _form(ctx, sess):
    form = {"session": sess, "method": "dragdiffusion", "prompt": "", "seed": 0, "gen_state": None, "last_edit": None}
    for m, ps in ctx.params.items():
        form.update({param_id(m, p.name): format_value(p.kind, p.value) for p in ps})
    return form


def _tab(name):
    return types.SimpleNamespace(session_hash=name)


def _run_in_thread(ctx, sess, tab):
    out = {}

    def run():
        out["updates"] = list(handlers.on_run(ctx, _form(ctx, sess), _tab(tab)))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_two_tabs_editing_at_once_take_turns_on_the_device(tmp_path):
    editor = SlowEditor()
    ctx = _ctx(editor, tmp_path)
    a, a_out = _run_in_thread(ctx, _session(0), "a")
    assert editor.started.wait(10)
    b, b_out = _run_in_thread(ctx, _session(1), "b")
    time.sleep(0.2)
    assert editor.calls == 1  # b waits for the device while a runs
    editor.release.set()
    a.join(10)
    b.join(10)
    assert editor.calls == 2 and editor.most_running == 1
    for out in (a_out, b_out):
        assert out["updates"][-1]["status"].startswith("**Done**")


def test_a_tab_closed_mid_edit_cancels_it_and_the_queue_moves_on(tmp_path):
    editor = SlowEditor()
    ctx = _ctx(editor, tmp_path)
    stream = handlers.on_run(ctx, _form(ctx, _session()), _tab("gone"))
    assert next(stream)["status"].startswith("**Running**")
    assert editor.started.wait(10)
    next(stream)  # a progress update, then the browser goes away: Gradio closes the stream
    stream.close()
    deadline = time.monotonic() + 10
    while editor.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert editor.cancelled == 1 and editor.running == 0
    assert ctx.device_lock.acquire(timeout=5)  # the device is free again
    ctx.device_lock.release()
    editor.release.set()
    assert list(handlers.on_run(ctx, _form(ctx, _session(1)), _tab("next")))[-1]["status"].startswith("**Done**")


def test_closing_a_tab_cancels_its_queued_edit(tmp_path):
    editor = SlowEditor()
    ctx = _ctx(editor, tmp_path)
    handlers.on_queued(ctx, _tab("t"))  # Run clicked: the edit waits in Gradio's queue
    handlers.on_unload(ctx, _tab("t"))  # the tab is closed before its turn
    assert list(handlers.on_run(ctx, _form(ctx, _session()), _tab("t"))) == [{"status": texts.CANCELLED}]
    assert editor.calls == 0


def test_a_failed_import_does_not_stick_to_the_next_one(tmp_path):
    ctx = _ctx(SlowEditor(), tmp_path)
    bad = tmp_path / "notes.txt"
    bad.write_text("not an edit")
    first = handlers.on_import(ctx, [str(bad)])
    assert first["status"].startswith("**Error:**") and first["import_files"] is None
    files = exchange.export_edit(tmp_path / "export", ss.build_request(_session(), "a cat"), DragDiffusionConfig())
    second = handlers.on_import(ctx, [str(files[1])])  # the app's own edit.zip, alone in the emptied box
    assert second["status"].startswith("Imported 1 drag(s).") and second["import_files"] is None


def test_an_import_with_folders_and_dot_dot_paths_stays_inside(tmp_path):
    ctx = _ctx(SlowEditor(), tmp_path)
    files = exchange.export_edit(tmp_path / "export", ss.build_request(_session(), "p"), DragDiffusionConfig())
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(files[1]) as src, zipfile.ZipFile(nested, "w") as dst:
        for info in src.infolist():
            dst.writestr(f"../../{info.filename}" if info.filename.endswith(".json") else f"a/b/{info.filename}",
                         src.read(info))
    up = handlers.on_import(ctx, [str(nested)])
    assert up["status"].startswith("Imported 1 drag(s).")
    assert not (tmp_path / "request.json").exists() and not (ctx.work.parent / "request.json").exists()


def test_a_huge_upload_is_downscaled_with_a_notice(tmp_path):
    ctx = _ctx(SlowEditor(), tmp_path)
    big = np.zeros((3000, 2000, 4), np.uint8)
    big[..., 3] = 255
    up = handlers.on_editor(ctx, {"background": big, "layers": []}, ss.Session())
    assert up["session"].image.size == (85, 128)
    assert "Image 85×128." in up["status"] and "downscaled from" not in up["status"]
    assert "The image is 2000×3000; it was downscaled to 85×128" in up["status"]


def test_a_failing_generation_is_one_line_and_the_app_goes_on(tmp_path):
    ctx = _ctx(SlowEditor(), tmp_path)
    form = {f"gen-{n}": format_value(p.kind, p.value) for n, p in ctx.gen_params.items()}
    form["gen-width"] = form["gen-height"] = 64
    updates = list(handlers.on_generate(ctx, form))
    assert updates[-1]["gen_status"] == "**Error:** the generation failed: RuntimeError: out of memory"
    assert ctx.device_lock.acquire(timeout=1)
    ctx.device_lock.release()


def test_the_work_folder_is_bounded_and_removed(tmp_path):
    ctx = _ctx(SlowEditor(), tmp_path)
    for _ in range(KEEP_RUN_DIRS + 5):
        ctx.fresh_dir("edit-")
    assert len(list(ctx.work.iterdir())) == KEEP_RUN_DIRS
    own = AppContext.create(SlowEditor(), upload_max_side=128)  # no work_dir: a temp folder of its own
    work = own.work
    own.fresh_dir("edit-")
    assert work.is_dir() and work.name.startswith("dragkit-ui-")
    own.close()
    assert not work.exists()


def test_the_page_script_knows_the_size_limit():
    from dragkit.ui.app import build_app

    demo = build_app(SlowEditor(), upload_max_side=300)
    try:
        assert "const maxSide = 300;" in demo.dragkit_js and "createImageBitmap" in demo.dragkit_js
    finally:
        demo.dragkit_context.close()
