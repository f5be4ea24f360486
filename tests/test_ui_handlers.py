"""The web app's event handlers (:mod:`dragkit.ui.handlers`) called directly, without a browser or a server: a fake
editor stands in for :class:`dragkit.DragEditor`; updates are keyed by the names of :class:`dragkit.ui.layout.Layout`."""

import inspect
import typing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragkit.config import DragDiffusionConfig
from dragkit.types import DragResult, ProgressEvent
from dragkit.ui import session as ss
from dragkit.ui import texts
from dragkit.ui.params import format_value, param_id

gr = pytest.importorskip("gradio", reason="the web app needs gradio")
from dragkit.ui import handlers  # noqa: E402  (needs gradio)
from dragkit.ui.context import AppContext  # noqa: E402


class FakeEditor:
    """Reports a LoRA (cached or trained) and one optimisation step, then returns the input image."""

    lora_cache = None

    def __init__(self, lora_cached=False, error=None):
        self.lora_cached, self.error, self.calls = lora_cached, error, 0

    def edit(self, request, config, callback=None, seed=0, generation=None):
        self.calls += 1
        n = config.lora_steps
        if self.lora_cached:
            callback(ProgressEvent("lora", n, n, cached=True))
        else:
            for step in range(1, n + 1):
                callback(ProgressEvent("lora", step, n, loss=0.1))
        callback(ProgressEvent("optimization", 1, 1, handles=list(request.targets), loss=0.5))
        if self.error is not None:
            raise self.error
        return DragResult(request.image, list(request.targets), [list(request.handles), list(request.targets)],
                          {"total": 1.25}, 1, config=config, lora_cached=self.lora_cached)


@pytest.fixture
def ctx(tmp_path):
    def make(editor):
        return AppContext.create(editor, {"dragdiffusion": DragDiffusionConfig(lora_steps=2, optimization_steps=1)},
                                 upload_max_side=256, work_dir=str(tmp_path / "work"))
    return make


def _session():
    image = Image.fromarray((np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8))
    return ss.add_point(ss.add_point(ss.set_image(ss.Session(), image), (10, 10)), (20, 12))


def _form(ctx, sess, **values):
    form = {"session": sess, "method": "dragdiffusion", "prompt": "", "seed": 0, "gen_state": None,
            "last_edit": None}
    for m, ps in ctx.params.items():
        form.update({param_id(m, p.name): format_value(p.kind, p.value) for p in ps})
    return form | values


def test_run_reports_progress_then_the_result(ctx):
    app = ctx(FakeEditor())
    updates = list(handlers.on_run(app, _form(app, _session()), None))
    assert updates[0]["status"].startswith("**Running** · starting") and updates[0]["result_img"] is None
    # the fake edit is quick, so its events arrive together: the last one is always shown, with the live handles
    assert updates[-2] == {"status": "**Running** · **drag (latent optimisation)** — step 1/1 · loss 0.5",
                           "view": updates[-2]["view"]} and updates[-2]["view"].size == (480, 320)
    done = updates[-1]
    assert done["status"].startswith("**Done** in 1.2 s (identity LoRA trained; 1 drag steps)")
    assert "Final handles: (20, 12)." in done["status"]
    assert done["result_img"].size == (48, 32) and done["view"].size == (480, 320)
    assert [Path(f).name for f in done["downloads"]] == ["edited.png", "request.json", "edit.zip",
                                                         "dragbench_sample.zip"]
    assert Path(done["trajectory"]).read_bytes()[:3] == b"GIF"
    assert done["last_edit"]["result"].latent is None
    # exporting the same edit includes that result; a changed prompt is another edit
    form = _form(app, _session(), last_edit=done["last_edit"])
    assert handlers.on_export(app, form)["status"] == "Exported (with the result)."
    assert handlers.on_export(app, form | {"prompt": "x"})["status"] == "Exported (not run yet: no result included)."


def test_run_says_when_the_identity_lora_came_from_the_cache(ctx):
    app = ctx(FakeEditor(lora_cached=True))
    updates = list(handlers.on_run(app, _form(app, _session()), None))
    assert updates[-2]["status"].endswith("loss 0.5 · identity LoRA reused from cache")
    assert "(identity LoRA reused from cache; 1 drag steps)" in updates[-1]["status"]
    app = ctx(FakeEditor())
    no_lora = list(handlers.on_run(app, _form(app, _session(), **{param_id("dragdiffusion", "lora_steps"): 0}),
                                   None))
    assert "(no identity LoRA;" in no_lora[-1]["status"]


def test_run_errors_are_one_line_messages(ctx):
    app = ctx(FakeEditor(error=RuntimeError("device lost\ndetails")))
    updates = list(handlers.on_run(app, _form(app, _session()), None))
    assert updates[-1]["status"] == "**Error:** the edit failed: RuntimeError: device lost"
    assert updates[-1]["view"].size == (480, 320)
    no_points = ss.clear_points(_session())
    assert list(handlers.on_run(app, _form(app, no_points), None))[0]["status"].startswith("**Error:** no points")
    assert list(handlers.on_run(app, _form(app, _session(), seed=1.5), None)) == [
        {"status": "**Error:** seed must be a whole number"}]
    assert handlers.on_export(app, _form(app, _session(), method="nope"))["status"] == \
        "**Error:** unknown method 'nope'"


def test_cancel_reaches_a_queued_edit(ctx):
    editor = FakeEditor()
    app = ctx(editor)
    sess = _session()
    assert handlers.on_cancel(app, sess, None)["status"] == texts.NOTHING_TO_CANCEL
    assert handlers.on_queued(app, None) == {"status": texts.QUEUED}
    assert handlers.on_cancel(app, sess, None)["status"] == texts.CANCELLED
    assert list(handlers.on_run(app, _form(app, sess), None)) == [{"status": texts.CANCELLED}]
    assert editor.calls == 0
    assert handlers.on_cancel(app, sess, None)["status"] == texts.NOTHING_TO_CANCEL  # the flag was released


def test_points_handlers_and_editor_echo(ctx):
    app = ctx(FakeEditor())
    image = np.full((32, 48, 4), 200, np.uint8)
    up = handlers.on_editor(app, {"background": image, "layers": []}, ss.Session())
    assert up["status"].startswith("Image 48×32. 0 drags.") and up["session"].image.size == (48, 32)
    assert handlers.on_editor(app, {"background": image, "layers": []}, up["session"]) == {}  # an echo
    assert handlers.on_editor(app, None, ss.Session())["status"] == texts.NO_IMAGE
    assert handlers.on_editor(app, None, up["session"]) == {}
    assert up["editor_in"]["brush"].default_size == 1  # a brush of the image's size (1/32 of its shorter side)
    assert handlers.on_undo(_session())["status"].endswith("Click the target of handle 1. Editable region: "
                                                           "whole image (paint the part that may move with the "
                                                           "brush, or the background may change too).")
    assert handlers.on_clear(_session())["session"].points == ()
    assert handlers.on_clear_image(_session()) == {"session": ss.Session(), "view": None, "status": texts.START,
                                                   "prepared": None}
    from dragkit.config import METHODS

    shown = handlers.on_method(app, "gooddrag")
    assert {k: v for k, v in shown.items() if k != "live"} == {
        f"params-{m}": gr.update(visible=m == "gooddrag") for m in METHODS}  # one parameter group per method


def test_import_sets_the_method_and_its_parameters(ctx, tmp_path):
    from dragkit.ui import exchange

    app = ctx(FakeEditor())
    req = ss.build_request(_session(), "a cat")
    files = exchange.export_edit(tmp_path / "out", req, DragDiffusionConfig(optimization_steps=7))
    up = handlers.on_import(app, [str(files[0])])
    assert up["status"].startswith("**Error:")  # a lone JSON without its image
    up = handlers.on_import(app, str(files[-2]))  # edit.zip
    assert up["status"].startswith("Imported 1 drag(s). Image 48×32.") and up["prompt"] == "a cat"
    assert up["method"] == "dragdiffusion" and up[param_id("dragdiffusion", "optimization_steps")] == 7
    assert up["editor_in"]["background"].size == (48, 32) and up["result_img"] is None
    assert handlers.on_import(app, None) == {}


@pytest.fixture
def page(ctx):
    """The app context and its page's layout."""
    from dragkit.ui import layout

    app = ctx(FakeEditor())
    with gr.Blocks():
        return app, layout.build(app.params, app.gen_params, "dragdiffusion", 0)


def test_bound_handlers_keep_gradio_special_parameters(page):
    from dragkit.ui.app import bind

    app, ui = page
    cancel = bind(handlers.on_cancel, app, ui)
    assert cancel.__name__ == "on_cancel" and list(inspect.signature(cancel).parameters) == ["sess", "request"]
    assert typing.get_type_hints(cancel)["request"] is gr.Request
    click = bind(handlers.on_click, app, ui)
    assert typing.get_type_hints(click)["evt"] is gr.SelectData
    assert inspect.isgeneratorfunction(bind(handlers.on_run, app, ui))
    updates = cancel(_session(), None)  # keyed by components for Gradio
    assert set(updates) == {ui.status, ui.view} and updates[ui.status] == texts.NOTHING_TO_CANCEL


def test_no_update_is_a_skip_for_gradio(page):
    app, ui = page
    assert ui.updates_by_component({}) == gr.skip()
    assert ui.updates_by_component({"status": "x", "params-gooddrag": 1}) == {ui.status: "x", ui.groups[1]: 1}
    assert ui.values_by_name({ui.seed: 3, ui.params["gooddrag"][0]: True}) == {
        "seed": 3, param_id("gooddrag", app.params["gooddrag"][0].name): True}


# --- Live: one-step methods re-run the drag at every change of the point pairs ---------------------------------------

class RecordingEditor(FakeEditor):
    """The fake editor, remembering the points of every edit it ran."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.points = []

    def edit(self, request, config, **kw):
        self.points.append((list(request.handles), list(request.targets)))
        return super().edit(request, config, **kw)


def _click(sess, x, y):
    scale = handlers.drawing.view_scale(sess.image.size)
    evt = type("Select", (), {"index": (x * scale, y * scale)})()
    return handlers.on_click(sess, evt)["session"]


def _live_form(app, sess, **values):
    return _form(app, sess, method="soliddrag", live=True, prepared=None) | values


def test_live_is_on_for_one_step_methods_and_off_with_a_reason_for_iterative_ones(page):
    from dragkit.config import METHODS

    app, ui = page  # started on dragdiffusion
    assert ui.live.value is False and ui.live.interactive is False and "one-step method" in ui.live.info
    live = {m: handlers.on_method(app, m)["live"] for m in METHODS}
    assert {m: (u["value"], u["interactive"]) for m, u in live.items()} == {
        "dragdiffusion": (False, False), "gooddrag": (False, False), "fastdrag": (True, True),
        "soliddrag": (True, True)}
    assert live["gooddrag"]["info"] == ("off: gooddrag optimises the drag step by step (about a minute per edit on a "
                                        "GPU); Live needs a one-step method (fastdrag, soliddrag)")
    # an iterative method never runs live, even when the page says Live
    editor = RecordingEditor()
    app = AppContext.create(editor, upload_max_side=256, work_dir=str(app.work))
    form = _live_form(app, _session(), method="dragdiffusion")
    assert handlers.on_live_queued(app, form, None) == {}
    assert list(handlers.on_live_run(app, form, None)) == [{}] and editor.calls == 0


def test_a_target_click_with_live_on_queues_exactly_one_run(ctx):
    editor = RecordingEditor()
    app = ctx(editor)
    sess = _click(ss.clear_points(_session()), 10, 10)  # a handle alone: nothing to run
    assert handlers.on_live_queued(app, _live_form(app, sess), None) == {}
    assert list(handlers.on_live_run(app, _live_form(app, sess), None)) == [{}]
    sess = _click(sess, 20, 12)  # its target
    form = _live_form(app, sess)
    assert handlers.on_live_queued(app, form, None) == {}
    updates = list(handlers.on_live_run(app, form, None))
    assert list(handlers.on_live_run(app, form, None)) == [{}]  # the same points again: already run
    assert editor.points == [([(10, 10)], [(20, 12)])]
    done = updates[-1]
    assert done["status"].startswith("**Live re-edit** in 1.25 s (no identity LoRA). Final handles: (20, 12).")
    assert done["result_img"].size == (48, 32) and done["last_edit"]["key"] == handlers.gather(app, form).key
    assert done["downloads"] is None and done["trajectory"] is None
    assert all("view" not in u for u in updates)  # the points view keeps the clicks
    assert "result_img" not in updates[0]  # the previous result stays in view until this one replaces it
    # Live off: nothing runs
    off = _live_form(app, ss.undo_point(sess), live=False)
    handlers.on_live_queued(app, off, None)
    assert list(handlers.on_live_run(app, off, None)) == [{}] and editor.calls == 1


def test_a_burst_of_clicks_leaves_one_pending_run_with_the_latest_points(ctx):
    editor = RecordingEditor()
    app = ctx(editor)
    sess = _click(ss.clear_points(_session()), 10, 10)
    forms = []  # each click's event: the points handler, then Live's queued step; its run waits on the device
    for target in [(20, 12), (24, 14), (30, 16)]:
        sess = _click(ss.undo_point(sess) if len(sess.points) == 2 else sess, *target)
        forms.append(_live_form(app, sess))
        handlers.on_live_queued(app, forms[-1], None)
    sess = _click(sess, 40, 20)  # a handle without its target: the last pair's run still counts
    handlers.on_live_queued(app, _live_form(app, sess), None)
    # the runs reach the device in order, each with the values of its click: only the wanted one runs...
    assert [list(handlers.on_live_run(app, f, None)) for f in forms] == [[{}], [{}], [{}]]
    assert editor.calls == 0  # ...and the unpaired handle has superseded them all
    sess = _click(sess, 44, 20)
    forms = [_live_form(app, ss.undo_point(ss.undo_point(sess))), _live_form(app, sess)]
    for form in forms:
        handlers.on_live_queued(app, form, None)
    # the page sends a waiting run with the latest values: the first run takes the latest points, the second finds
    # them taken
    assert len(list(handlers.on_live_run(app, forms[1], None))) > 1
    assert list(handlers.on_live_run(app, forms[1], None)) == [{}]
    assert list(handlers.on_live_run(app, forms[0], None)) == [{}]
    assert editor.points == [([(10, 10), (40, 20)], [(30, 16), (44, 20)])]


def test_live_errors_and_cancel_behave_as_for_run(ctx):
    editor = RecordingEditor()
    app = ctx(editor)
    assert handlers.on_live_queued(app, _live_form(app, _session(), seed=1.5), None) == {
        "status": "**Error:** seed must be a whole number"}
    assert list(handlers.on_live_run(app, _live_form(app, _session(), seed=1.5), None)) == [{}]
    # a point outside the painted region: the notice, as for Run
    mask = np.zeros((32, 48), np.uint8)
    mask[:, 15:] = 1
    sess = ss.set_mask(_session(), mask)
    handlers.on_live_queued(app, _live_form(app, sess), None)
    done = list(handlers.on_live_run(app, _live_form(app, sess), None))[-1]
    assert done["status"].startswith("**Live re-edit**") and "handle 1 (10, 10) lies outside" in done["status"]
    # Cancel drops a live edit still waiting, and says so
    handlers.on_live_queued(app, _live_form(app, _session()), None)
    assert handlers.on_cancel(app, _session(), None)["status"] == texts.CANCELLED
    assert list(handlers.on_live_run(app, _live_form(app, _session()), None)) == [{}] and editor.calls == 1
    assert handlers.on_cancel(app, _session(), None)["status"] == texts.NOTHING_TO_CANCEL
    failing = ctx(RecordingEditor(error=RuntimeError("device lost")))
    handlers.on_live_queued(failing, _live_form(failing, _session()), None)
    assert list(handlers.on_live_run(failing, _live_form(failing, _session()), None))[-1]["status"] == \
        "**Error:** the edit failed: RuntimeError: device lost"
