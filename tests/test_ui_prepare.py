"""The web app prepares an image in the background (issue 16, interactive speed): as soon as an image is set, the
identity LoRA and the inversion run on the device, cancellable, with their progress in the preparation line; Run then
only drags, reusing the session's prepared image, and a re-edit with new points is warm too.

Handler level (no browser, no server), with the tiny random model: a :class:`Tab` plays one browser tab, calling the
handlers in the order Gradio's events do and keeping what they return, as Gradio's session state would."""

import dataclasses
import gc
import threading
import time
import types
import weakref

import numpy as np
import pytest
from PIL import Image

from dragkit.config import DragDiffusionConfig, GoodDragConfig
from dragkit.editor import DragEditor
from dragkit.prepared import INVERSION_FIELDS, PreparedImage

gr = pytest.importorskip("gradio", reason="the web app needs gradio")
from dragkit.ui import handlers, texts  # noqa: E402
from dragkit.ui import session as ss  # noqa: E402
from dragkit.ui.context import AppContext  # noqa: E402
from dragkit.ui.job import Preparations  # noqa: E402
from dragkit.ui.params import format_value, param_id  # noqa: E402

TIMEOUT = 60  # seconds; every wait is bounded, so a bug fails the test instead of hanging it
CONFIG = DragDiffusionConfig(lora_steps=3, num_inference_steps=10, optimization_steps=2)
READY = "**Ready** · identity LoRA and inversion prepared: Run only drags."
LORA_STEPS = param_id("dragdiffusion", "lora_steps")


@pytest.fixture(scope="module")
def editor(tiny_model):
    return DragEditor(tiny_model)


@pytest.fixture
def make_app(tmp_path):
    def make(editor):
        return AppContext.create(editor, {"dragdiffusion": CONFIG}, upload_max_side=128,
                                 work_dir=str(tmp_path / "work"))
    return make


def picture(seed=0, size=(64, 48)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)


class Tab:
    """One browser tab: the widgets' values and the session's state, updated with what the handlers return."""

    def __init__(self, app, name="tab"):
        self.app, self.request = app, types.SimpleNamespace(session_hash=name)
        self.values = {"session": ss.Session(), "method": "dragdiffusion", "prompt": "", "seed": 0,
                       "gen_state": None, "last_edit": None, "prepared": None, "prep_status": ""}
        for m, ps in app.params.items():
            self.values.update({param_id(m, p.name): format_value(p.kind, p.value) for p in ps})

    def apply(self, updates):
        self.values.update(updates)
        return updates

    @property
    def form(self):
        return dict(self.values)

    def set_image(self, array):
        """The upload event's handler (on_editor), without the preparation that follows it."""
        return self.apply(handlers.on_editor(self.app, {"background": array, "layers": []}, self.values["session"]))

    def wanted(self):
        """The preparation chain's first step (at once, before the queue)."""
        return self.apply(handlers.on_prepare_queued(self.app, self.form, self.request))

    def prepare(self):
        """The preparation chain's queued step, streamed to the end."""
        return [self.apply(u) for u in handlers.on_prepare(self.app, self.form, self.request)]

    def upload(self, array):
        self.set_image(array)
        return self.wanted(), self.prepare()

    def points(self, *points):
        sess = ss.clear_points(self.values["session"])
        for p in points:
            sess = ss.add_point(sess, p)
        self.values["session"] = sess

    def run(self):
        self.apply(handlers.on_queued(self.app, self.request))
        return [self.apply(u) for u in handlers.on_run(self.app, self.form, self.request)]

    def cancel(self):
        return self.apply(handlers.on_cancel(self.app, self.values["session"], self.request))


def stream_in_thread(gen):
    """Consume a handler's update stream in a thread; returns (thread, updates list filled as they come)."""
    updates = []
    thread = threading.Thread(target=lambda: updates.extend(u for u in gen), daemon=True)
    thread.start()
    return thread, updates


def wait_for(predicate, what):
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_an_upload_prepares_the_image_and_run_only_drags_like_a_cold_edit(editor, make_app):
    tab = Tab(make_app(editor))
    queued, stream = tab.upload(picture())
    assert queued == {"prep_status": texts.PREPARE_QUEUED}
    lines = [u["prep_status"] for u in stream if "prep_status" in u]
    assert any(line.startswith("**Preparing** · identity LoRA ") for line in lines), lines
    assert lines[-1] == READY
    prepared = tab.values["prepared"]
    assert isinstance(prepared, PreparedImage) and len(prepared.loras) == 1 and len(prepared.latents) == 1

    tab.points((20, 20), (30, 24))
    updates = tab.run()
    running = [u["status"] for u in updates[1:-1]]
    assert all("reused" in line for line in running), running  # no LoRA or inversion step while Run runs
    done = updates[-1]
    assert "(identity LoRA and inversion reused; 2 drag steps)" in done["status"], done["status"]
    assert "prepared" not in done and tab.values["prepared"] is prepared  # filled in place, not replaced
    assert done["prep_status"] == READY

    # the same edit from scratch, as the editor alone does it
    warm = done["last_edit"]["result"]
    request = ss.build_request(tab.values["session"], "")
    cold = editor.edit(request, warm.config, seed=0)
    assert not cold.lora_cached and not cold.inversion_cached
    assert warm.final_handles == cold.final_handles
    assert np.abs(np.asarray(done["result_img"], np.int16) - np.asarray(cold.image, np.int16)).max() <= 1

    # a re-edit with new points is warm as well
    tab.points((40, 30), (44, 24))
    again = tab.run()[-1]
    assert "(identity LoRA and inversion reused;" in again["status"]
    assert len(prepared.loras) == 1 and len(prepared.latents) == 1


def test_the_same_preparation_is_not_done_twice_and_new_settings_add_to_it(editor, make_app):
    tab = Tab(make_app(editor))
    tab.upload(picture(1))
    prepared = tab.values["prepared"]
    # a brush stroke (or an echo) changes nothing the preparation depends on
    assert tab.wanted() == {}
    assert tab.prepare() == [{"prep_status": READY}]
    # another inversion strength: the LoRA stays, one more inverted latent is added to the same prepared image
    tab.values[param_id("dragdiffusion", "inversion_strength")] = 0.5
    assert tab.wanted() == {"prep_status": texts.PREPARE_QUEUED}
    assert tab.prepare()[-1] == {"prepared": prepared, "prep_status": READY}
    assert len(prepared.latents) == 2 and len(prepared.loras) == 1
    # back to the first setting: already prepared, said at once
    tab.values[param_id("dragdiffusion", "inversion_strength")] = CONFIG.inversion_strength
    assert tab.wanted() == {"prep_status": READY}
    assert tab.prepare() == [{"prep_status": READY}]
    # another prompt is another prepared image
    tab.values["prompt"] = "a cat"
    tab.wanted()
    stream = tab.prepare()
    assert stream[0]["prepared"] is None  # the other prompt's is dropped before the LoRA is trained again
    assert tab.values["prepared"] is not prepared and tab.values["prepared"].prompt == "a cat"


def test_cancel_stops_a_preparation_and_run_still_works(editor, make_app):
    app = make_app(editor)
    tab = Tab(app)
    tab.values[LORA_STEPS] = 100_000  # far too long to finish here
    tab.set_image(picture(2))
    assert tab.wanted() == {"prep_status": texts.PREPARE_QUEUED}
    thread, updates = stream_in_thread(handlers.on_prepare(app, tab.form, tab.request))
    wait_for(lambda: any("identity LoRA" in u.get("prep_status", "") for u in updates), "the LoRA's progress")
    assert tab.cancel()["status"] == texts.CANCELLED
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert updates[-1] == {"prep_status": texts.PREPARE_CANCELLED}
    assert not any("prepared" in u for u in updates)
    assert app.device_lock.acquire(timeout=5)  # the device is free again
    app.device_lock.release()
    assert tab.cancel()["status"] == texts.NOTHING_TO_CANCEL
    # a brush stroke does not restart what the user cancelled
    assert tab.wanted() == {}
    assert tab.prepare() == [{"prep_status": texts.PREPARE_CANCELLED}]

    # Run does the preparation itself and keeps it: the next Run is warm
    tab.values[LORA_STEPS] = 3
    tab.points((20, 20), (30, 24))
    first = tab.run()[-1]
    assert "(identity LoRA trained;" in first["status"] and first["prep_status"] == READY
    assert isinstance(first["prepared"], PreparedImage)
    assert "(identity LoRA and inversion reused;" in tab.run()[-1]["status"]


def test_a_new_image_cancels_the_stale_preparation_and_drops_the_old_prepared_image(editor, make_app):
    app = make_app(editor)
    tab = Tab(app)
    tab.upload(picture(3))
    old = weakref.ref(tab.values["prepared"])
    # a slow preparation of the same image (other LoRA steps), then a new image while it runs
    tab.values[LORA_STEPS] = 100_000
    tab.wanted()
    thread, updates = stream_in_thread(handlers.on_prepare(app, tab.form, tab.request))
    wait_for(lambda: any("identity LoRA" in u.get("prep_status", "") for u in updates), "the LoRA's progress")
    tab.values[LORA_STEPS] = 3
    assert tab.set_image(picture(4))["prepared"] is None  # dropped at once
    assert tab.wanted() == {"prep_status": texts.PREPARE_QUEUED}  # the stale one is cancelled...
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    # ...and says nothing more: the line belongs to the new image's preparation
    assert not any("prepared" in u or u.get("prep_status") in (READY, texts.PREPARE_CANCELLED) for u in updates[1:])
    assert tab.prepare()[-1]["prep_status"] == READY
    new = tab.values["prepared"]
    assert new.digest != PreparedImage.of(editor.model, Image.fromarray(picture(3)), "").digest
    gc.collect()
    assert old() is None  # nothing holds the first image's LoRA and latents any more

    # clearing the image drops it too, and there is nothing to prepare
    tab.apply(handlers.on_clear_image(tab.values["session"]))
    assert tab.values["prepared"] is None
    assert tab.wanted() == {"prep_status": ""} and tab.prepare() == []


class FailingPrepare:
    """The real editor, whose preparation fails."""

    def __init__(self, editor):
        self.editor, self.model, self.lora_cache = editor, editor.model, None

    def prepare(self, *args, **kwargs):
        raise RuntimeError("out of memory\non the device")

    def edit(self, *args, **kwargs):
        return self.editor.edit(*args, **kwargs)


def test_a_failed_preparation_does_not_break_run(editor, make_app):
    tab = Tab(make_app(FailingPrepare(editor)))
    _, stream = tab.upload(picture(5))
    assert stream[-1] == {"prep_status": "**Error:** the preparation failed: RuntimeError: out of memory — Run still "
                                         "works: it does the preparation itself."}
    assert tab.values["prepared"] is None
    tab.points((20, 20), (30, 24))
    first = tab.run()[-1]
    assert first["status"].startswith("**Done**") and "(identity LoRA trained;" in first["status"]
    assert "(identity LoRA and inversion reused;" in tab.run()[-1]["status"]


def test_bad_settings_and_generated_images_are_not_prepared(editor, make_app):
    app = make_app(editor)
    tab = Tab(app)
    tab.set_image(picture(6))
    for key, value, message in [("seed", 1.5, "seed must be a whole number"),
                                ("seed", "x", "seed must be a whole number"),
                                ("method", "nope", "unknown method 'nope'"),
                                (param_id("dragdiffusion", "inversion_strength"), 0.01,
                                 "inversion_strength x num_inference_steps rounds to 0 inverted steps")]:
        bad = Tab(app, "bad")
        bad.values.update(session=tab.values["session"], **{key: value})
        assert bad.wanted() == {"prep_status": f"Not prepared: {message}"}, key
        assert bad.prepare() == []
    # an image sent from the Generate tab is dragged from its latents: nothing to prepare
    tab.values["gen_state"] = {"fingerprint": tab.values["session"].fingerprint, "generation": object()}
    assert tab.wanted() == {"prep_status": ""} and tab.prepare() == []
    assert tab.values["prepared"] is None


def test_the_preparation_shares_the_device_queue_with_run():
    """Run clicked during a preparation waits for it in Gradio's queue (one device group, one at a time), then reads
    the session's prepared image; typed settings prepare once entered; no preparation for editors that cannot."""
    from dragkit.ui.app import build_app

    class NoPrepare:
        lora_cache = None

    demo = build_app(NoPrepare())
    try:
        fns = {}
        for fn in demo.fns.values():
            fns.setdefault(fn.name, []).append(fn)
        run, = fns["on_run"]
        assert all(f.concurrency_id == run.concurrency_id == "device" and f.concurrency_limit == 1
                   for f in fns["on_prepare"])
        assert all(not f.queue for f in fns["on_prepare_queued"])
        # a change during a preparation follows it (the page would drop it with "once")
        assert {f.trigger_mode for f in fns["on_prepare"] + fns["on_prepare_queued"]} == {"always_last"}
        # after upload, change, clear, import and send, and one for the typed settings and the method
        assert len(fns["on_prepare"]) == len(fns["on_prepare_queued"]) == 6
        assert not demo.dragkit_context.can_prepare
    finally:
        demo.dragkit_context.close()


def test_two_working_sizes_never_share_a_lora_through_the_apps_disk_cache(tiny_model, tmp_path):
    """Issue 22, through the web app (whose disk LoRA cache is on by default): one picture prepared in three fresh
    sessions at working sizes 64, 32 and 64 (``max_side``) trains two LoRAs; only the third session reuses one from
    the disk, and it is the one trained at its size."""
    from dragkit.lora import LoraCache

    cache = tmp_path / "loras"
    app = AppContext.create(DragEditor(tiny_model, lora_cache=LoraCache(cache)), {"dragdiffusion": CONFIG},
                            upload_max_side=128, work_dir=str(tmp_path / "work"))
    reused = []
    for i, side in enumerate((64, 32, 64)):
        tab = Tab(app, name=f"tab{i}")
        tab.values[param_id("dragdiffusion", "max_side")] = side
        _, stream = tab.upload(picture(5))
        lines = [u["prep_status"] for u in stream if "prep_status" in u]
        assert lines[-1] == READY, lines
        from_disk = "**Preparing** · identity LoRA reused from cache" in lines
        trained = any(line.startswith("**Preparing** · identity LoRA ") and "reused" not in line for line in lines)
        assert from_disk != trained, lines
        (key,) = tab.values["prepared"].loras
        assert key[0] == side  # the working size the LoRA belongs to (its key starts with max_side)
        reused.append(from_disk)
        assert len(list(cache.glob("*.safetensors"))) == (1 if i == 0 else 2)
    assert reused == [False, False, True]


@pytest.mark.parametrize("config", [DragDiffusionConfig(), GoodDragConfig()])
def test_prepare_fields_are_exactly_what_the_preparation_depends_on(config):
    depends = set()
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None and field.name == "max_side":  # a family default left at None: any size changes it
            value = 512
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        changed = value / 2 if isinstance(value, float) else value * 2 if value else 1  # within every range
        other = dataclasses.replace(config, **{field.name: changed})
        if PreparedImage.inversion_key(other, 0) != PreparedImage.inversion_key(config, 0):
            depends.add(field.name)
    assert depends == set(INVERSION_FIELDS)


def test_preparations_per_session():
    preps = Preparations()
    assert preps.want("a", "k1") and not preps.want("a", "k1")  # the same key again: nothing new
    first = preps.claim("a", "k1")
    assert first is not None and preps.claim("b", "k9") is None  # nothing wanted in b
    assert preps.want("a", "k2") and first.is_set()  # a new key cancels the stale one
    assert preps.claim("a", "k1") is None and not preps.wanted("a", "k1")  # stale
    second = preps.claim("a", "k2")
    assert preps.cancel("a") and second.is_set() and not preps.cancel("a")
    assert preps.want("a", "k3")
    preps.finish("a", "k3")
    assert not preps.cancel("a")  # ended: nothing to cancel
    preps.want("b", "k9")
    third = preps.claim("b", "k9")
    preps.forget("b")  # the tab has gone: its preparation stops, and one still queued does not start
    assert third.is_set() and not preps.wanted("b", "k9") and preps.claim("b", "k9") is None
    assert not preps.want("a", None) and not preps.wanted("a", "k3")


def test_live_re_edits_of_a_prepared_image_with_a_one_step_method(editor, make_app):
    """Live (a one-step method): completing a pair re-runs the drag on the prepared image (its inversion and attention
    K/V reused), the result updated in place, without Run."""
    tab = Tab(make_app(editor))
    tab.values.update(method="soliddrag", live=True)
    tab.upload(picture(3))
    prepared = tab.values["prepared"]
    assert tab.values["prep_status"] == "**Ready** · inversion prepared: Run only drags."
    for target in [(30, 24), (34, 20)]:
        tab.points((20, 20), target)
        assert tab.apply(handlers.on_live_queued(tab.app, tab.form, tab.request)) == {}
        updates = [tab.apply(u) for u in handlers.on_live_run(tab.app, tab.form, tab.request)]
        statuses = [u["status"] for u in updates]
        assert "**Running** · **DDIM inversion** reused from cache" in statuses  # no inversion step: only the drag
        assert not any("DDIM inversion** — step" in line for line in statuses), statuses
        done = updates[-1]
        assert done["status"].startswith("**Live re-edit** in ") and "(no identity LoRA; inversion reused)" in \
            done["status"], done["status"]
        assert done["result_img"].size == (64, 48) and "view" not in done
        assert "prepared" not in done and tab.values["prepared"] is prepared  # reused, not replaced
