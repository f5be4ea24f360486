"""The web app's edit job (:mod:`dragkit.ui.job`) without Gradio or a browser: a fake editor stands in for
:class:`dragkit.DragEditor`, and a paced clock makes the progress throttling deterministic."""

import logging
import threading

import numpy as np
from PIL import Image

from dragkit.config import DragDiffusionConfig
from dragkit.types import DragError, DragRequest, DragResult, EditCancelled, ProgressEvent
from dragkit.ui import texts
from dragkit.ui.job import CancelFlags, EditRun, Progress, failure_text

TIMEOUT = 10  # seconds; every wait below is bounded, so a bug fails the test instead of hanging it


def _request():
    image = Image.fromarray(np.full((32, 48, 3), 128, np.uint8))
    return DragRequest(image, [(10, 10)], [(20, 12)])


class FakeEditor:
    """Calls the progress callback with ``events`` (pausing on ``pace`` after each, when given), then raises
    ``error`` or returns a result (``lora_cached`` as reported by the cache)."""

    def __init__(self, events=(), error=None, pace=None, lora_cached=False):
        self.events, self.error, self.pace, self.lora_cached = list(events), error, pace, lora_cached
        self.calls = []
        self.called = threading.Event()

    def edit(self, request, config, callback=None, seed=0, generation=None):
        self.calls.append({"seed": seed, "generation": generation, "thread": threading.current_thread().name})
        self.called.set()
        for ev in self.events:
            callback(ev)
            if self.pace is not None:
                assert self.pace.acquire(timeout=TIMEOUT)
        if self.error is not None:
            raise self.error
        return DragResult(request.image, list(request.targets), [list(request.handles), list(request.targets)],
                          {"total": 0.5}, 1, config=config, lora_cached=self.lora_cached)


class PacedClock:
    """The job's clock: each reading returns the next of ``times`` and lets the paced editor send its next event,
    so that every event arrives in a batch of its own."""

    def __init__(self, times):
        self.times = iter(times)
        self.tick = threading.Semaphore(0)

    def __call__(self):
        self.tick.release()
        return next(self.times)


def _run(editor, **kw):
    job = EditRun(editor, _request(), DragDiffusionConfig(lora_steps=2), **kw).start()
    snapshots = list(job.progress())
    assert job.wait(TIMEOUT)
    return job, snapshots


def test_job_runs_the_edit_in_a_worker_thread():
    events = [ProgressEvent("lora", 1, 2, loss=0.5), ProgressEvent("lora", 2, 2, loss=0.25)]
    editor = FakeEditor(events)
    job, snapshots = _run(editor, seed=7, generation="gen")
    assert job.error is None and job.result.final_handles == [(20.0, 12.0)]
    assert editor.calls == [{"seed": 7, "generation": "gen", "thread": "dragkit-edit"}]
    assert snapshots and snapshots[-1].event == events[-1]  # the last events are always reported
    assert snapshots[-1].text == "**Running** · **identity LoRA** — step 2/2 · loss 0.25"
    assert not snapshots[-1].lora_cached


def test_progress_is_throttled_and_keeps_the_latest_handles():
    events = [ProgressEvent("optimization", i, 5, handles=[(float(i), 0.0)] if i == 2 else None)
              for i in range(1, 6)]
    clock = PacedClock([0.0, 0.1, 0.2, 0.3, 0.4, 0.45])
    job, snapshots = _run(FakeEditor(events, pace=clock.tick), clock=clock, min_interval=0.25)
    # sent at 0.0 (step 1) and 0.3 (step 4, with the handles of the skipped step 2); step 5 (0.4) is too soon after
    # step 4, but it is the last one, so it goes out when the edit ends
    assert [s.event.step for s in snapshots] == [1, 4, 5]
    assert [s.handles for s in snapshots] == [None, [(2.0, 0.0)], None]


def test_no_progress_events_no_snapshots():
    job, snapshots = _run(FakeEditor())
    assert snapshots == [] and job.result is not None


def test_cancel_stops_the_edit_at_its_next_step():
    started, go = threading.Event(), threading.Event()

    class SlowEditor(FakeEditor):
        def edit(self, request, config, callback=None, seed=0, generation=None):
            for step in range(1, 1000):
                callback(ProgressEvent("lora", step, 1000))
                started.set()
                assert go.wait(TIMEOUT)
            raise AssertionError("not cancelled")

    job = EditRun(SlowEditor(), _request(), DragDiffusionConfig()).start()
    assert started.wait(TIMEOUT)
    job.cancel()
    go.set()
    snapshots = list(job.progress())
    assert job.wait(TIMEOUT)
    assert isinstance(job.error, EditCancelled) and job.result is None
    assert [s.event.step for s in snapshots] == [1]
    assert failure_text(job.error) == "Cancelled."


def test_cancelled_before_it_starts_never_runs():
    flag = threading.Event()
    flag.set()
    editor = FakeEditor([ProgressEvent("lora", 1, 2)])
    job, snapshots = _run(editor, cancel=flag)
    assert isinstance(job.error, EditCancelled) and snapshots == [] and editor.calls == []


def test_job_waits_for_the_device_lock():
    lock = threading.Lock()
    editor = FakeEditor()
    with lock:  # e.g. a generation running on the model
        job = EditRun(editor, _request(), DragDiffusionConfig(), device_lock=lock).start()
        assert not editor.called.wait(0.2)
    assert job.wait(TIMEOUT) and job.result is not None


def test_an_error_in_the_edit_becomes_a_one_line_status(caplog):
    with caplog.at_level(logging.ERROR, logger="dragkit.ui.job"):
        job, _ = _run(FakeEditor([ProgressEvent("inversion", 1, 3)], error=RuntimeError("out of memory\nat line 2")))
        assert failure_text(job.error) == "**Error:** the edit failed: RuntimeError: out of memory"
        assert "edit failed" in caplog.text  # unexpected errors keep their traceback in the log
        caplog.clear()
        job, _ = _run(FakeEditor(error=DragError("handle 1 is outside the mask\nsecond line")))
        assert failure_text(job.error) == "**Error:** handle 1 is outside the mask"
        assert failure_text(RuntimeError()) == "**Error:** the edit failed: RuntimeError"
        assert not [r for r in caplog.records if "handle 1" in r.getMessage()]


def test_the_cache_hit_event_is_reported():
    hit = ProgressEvent("lora", 2, 2, cached=True)
    events = [hit, ProgressEvent("optimization", 1, 3, handles=[(11.0, 10.0)], loss=0.125)]
    clock = PacedClock([0.0, 1.0, 2.0])
    job, snapshots = _run(FakeEditor(events, pace=clock.tick, lora_cached=True), clock=clock)
    assert [s.lora_cached for s in snapshots] == [True, True]
    assert snapshots[0].text == "**Running** · **identity LoRA** reused from cache"
    assert snapshots[1].text.endswith("loss 0.125 · identity LoRA reused from cache")
    assert texts.lora_note(job.result, job.config, generated=False) == texts.LORA_CACHED
    # a LoRA trained step by step is not "cached", whatever the event count
    trained = Progress(ProgressEvent("lora", 2, 2), lora_cached=False)
    assert "cache" not in trained.text


def test_lora_note_follows_the_result():
    image = Image.new("RGB", (8, 8))
    trained = DragResult(image, [], [], config=DragDiffusionConfig(lora_steps=2))
    assert texts.lora_note(trained, None, generated=False) == texts.LORA_TRAINED
    none = DragResult(image, [], [], config=DragDiffusionConfig(lora_steps=0))
    assert texts.lora_note(none, DragDiffusionConfig(lora_steps=2), generated=False) == texts.NO_LORA
    assert texts.lora_note(DragResult(image, [], []), DragDiffusionConfig(lora_steps=2), False) == texts.LORA_TRAINED
    assert texts.lora_note(trained, None, generated=True) == texts.GENERATED


def test_cancel_flags_per_session():
    flags = CancelFlags()
    assert not flags.cancel("a")  # nothing to cancel
    armed = flags.arm("a")
    assert flags.flag("a") is armed and flags.flag("b") is not armed
    assert flags.cancel("a") and armed.is_set() and not flags.flag("b").is_set()
    newer = flags.arm("a")  # a new click replaces the flag; the old edit's release leaves it alone
    flags.release("a", armed)
    assert flags.flag("a") is newer
    flags.release("a", newer)
    assert not flags.cancel("a")
