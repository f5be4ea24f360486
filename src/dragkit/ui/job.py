"""Drag edits and image preparations, run off the web server's event loop (no Gradio: tested with a fake editor).

A :class:`DeviceRun` runs one editor call in a worker thread under the app's device lock (one edit, preparation or
generation at a time on the model, even after a cancelled stream has detached) and turns the editor's progress
callback into a throttled stream of :class:`Progress` snapshots. Cancelling sets a flag that the callback checks at
every step (and the worker checks before it starts), so the editor stops cleanly with
:class:`~dragkit.types.EditCancelled` and frees the device. :class:`EditRun` runs ``editor.edit``; :class:`PrepareRun`
runs ``editor.prepare`` (the identity LoRA and the inversion of an image, done in the background as soon as the image
is set, so that Run only drags).

:class:`CancelFlags` holds each browser session's edit flag, so that Cancel reaches an edit that is still waiting in
the queue as well as a running one; :class:`Preparations` holds each session's *wanted* preparation (its content key)
and its flag, so that a newer image, prompt or setting cancels a stale preparation, and Cancel reaches it too;
:class:`LiveEdits` holds each session's wanted live re-edit (one-step methods), so that a burst of clicks runs the
latest points once.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator, Optional

from PIL import Image

from ..prepared import PreparedImage
from ..types import DragError, DragRequest, DragResult, EditCancelled, Point, ProgressEvent
from . import texts

logger = logging.getLogger(__name__)

PREVIEW_EVERY_S = 0.25  # at most this often a progress snapshot (with a live preview) is sent to the browser
_DONE = object()  # queued by the worker when the edit has ended, whichever way


@dataclass(frozen=True)
class Progress:
    """A throttled snapshot of a running edit (or preparation).

    Attributes:
        event: the latest progress event.
        handles: the latest handle positions reported since the previous snapshot, or None if there were none.
        lora_cached: the editor has reported that the identity LoRA was reused (prepared image or cache).
        inversion_cached: the editor has reported that the inverted latent was reused (prepared image).
    """

    event: ProgressEvent
    handles: Optional[list[Point]] = None
    lora_cached: bool = False
    inversion_cached: bool = False

    @property
    def text(self) -> str:
        """The status line for this snapshot (of an edit)."""
        return texts.progress(self.event, self.lora_cached, self.inversion_cached)


def failure_text(exc: BaseException, what: str = "edit") -> str:
    """The one-line status of an edit (or another ``what``) that ended with ``exc``, in :func:`texts.failure`'s words;
    unexpected errors (neither cancelled nor a :class:`~dragkit.types.DragError`) are logged with their traceback."""
    if not isinstance(exc, (EditCancelled, DragError)):
        logger.error("%s failed", what, exc_info=exc)
    return texts.failure(exc, what)


class CancelFlags:
    """The cancel flag of each browser session's edit (session key → event), shared by the app's event handlers."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def arm(self, key: str) -> threading.Event:
        """A fresh flag for ``key``'s next edit (made at the Run click, before the queue)."""
        with self._lock:
            flag = self._flags[key] = threading.Event()
        return flag

    def flag(self, key: str) -> threading.Event:
        """The flag of ``key``'s edit: the one armed at the click, or a new one."""
        with self._lock:
            return self._flags.setdefault(key, threading.Event())

    def cancel(self, key: str) -> bool:
        """Set ``key``'s flag; False when there is none (nothing to cancel)."""
        with self._lock:
            flag = self._flags.get(key)
        if flag is None:
            return False
        flag.set()
        return True

    def release(self, key: str, flag: threading.Event) -> None:
        """Forget ``flag`` once its edit has ended (unless a newer click has already replaced it)."""
        with self._lock:
            if self._flags.get(key) is flag:
                del self._flags[key]


class DeviceRun:
    """One editor call (:meth:`call`, given the progress callback) in a worker thread under the device lock.

    Start it, iterate :meth:`progress` until the call ends, then read :attr:`result` or :attr:`error`::

        job = EditRun(editor, request, config, seed=0).start()
        for snapshot in job.progress():
            show(snapshot.text, snapshot.handles)
        status = failure_text(job.error) if job.error else "done"
    """

    thread_name = "dragkit-run"

    def __init__(self, *, cancel: Optional[threading.Event] = None, device_lock: Optional[threading.Lock] = None,
                 min_interval: float = PREVIEW_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.cancel_flag = cancel if cancel is not None else threading.Event()
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._device_lock = device_lock if device_lock is not None else threading.Lock()
        self._min_interval, self._clock = min_interval, clock
        self._events: queue.Queue = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    def call(self, callback: Callable[[ProgressEvent], None]) -> Any:
        """The editor call (run in the worker, holding the device lock); its return value becomes :attr:`result`."""
        raise NotImplementedError

    def start(self) -> DeviceRun:
        """Start the worker thread (it waits for the device lock); returns ``self``."""
        self._thread = threading.Thread(target=self._work, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the call to stop at its next step (or not to start)."""
        self.cancel_flag.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for the worker to end; whether it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is not None and not self._thread.is_alive()

    def progress(self) -> Iterator[Progress]:
        """Snapshots until the call ends: at most one per ``min_interval`` seconds, and always one for the last
        events (none at all if the call reported nothing)."""
        last_sent, cached, inverted, handles, pending = -math.inf, False, False, None, None
        for batch, done in self._batches():
            if batch:
                cached = cached or any(e.cached and e.stage == "lora" for e in batch)
                inverted = inverted or any(e.cached and e.stage == "inversion" for e in batch)
                handles = next((e.handles for e in reversed(batch) if e.handles is not None), handles)
                pending = batch[-1]
            if pending is None:
                continue
            now = self._clock()
            if now - last_sent < self._min_interval and not done:
                continue
            last_sent = now
            yield Progress(pending, handles, cached, inverted)
            pending = handles = None

    def _batches(self) -> Iterator[tuple[list[ProgressEvent], bool]]:
        """The events as they arrive, grouped (each group: what was queued when the previous one was taken), and
        whether the call has ended."""
        done = False
        while not done:
            batch = [self._events.get()]
            while True:
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            done = any(e is _DONE for e in batch)
            yield [e for e in batch if e is not _DONE], done

    def _callback(self, event: ProgressEvent) -> None:
        if self.cancel_flag.is_set():
            raise EditCancelled()
        self._events.put(event)

    def _work(self) -> None:
        try:
            with self._device_lock:
                if self.cancel_flag.is_set():
                    raise EditCancelled()
                logger.debug("%s starts", self.thread_name)
                self.result = self.call(self._callback)
        except BaseException as exc:  # reported by the caller, once the progress stream has ended
            self.error = exc
        finally:
            logger.debug("%s ends: %s", self.thread_name, type(self.error or self.result).__name__)
            self._events.put(_DONE)


class EditRun(DeviceRun):
    """``editor.edit(request, config, callback=…, seed=…, generation=…, prepared=…)`` in a worker thread
    (``prepared`` is passed only when given: the image's :class:`~dragkit.prepared.PreparedImage`, reused and filled
    by the edit)."""

    thread_name = "dragkit-edit"

    def __init__(self, editor: Any, request: DragRequest, config: Any, *, seed: int = 0, generation: Any = None,
                 prepared: Optional[PreparedImage] = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.editor, self.request, self.config = editor, request, config
        self.seed, self.generation, self.prepared = seed, generation, prepared
        self.result: Optional[DragResult] = None

    def call(self, callback: Callable[[ProgressEvent], None]) -> DragResult:
        extra = {} if self.prepared is None else {"prepared": self.prepared}
        return self.editor.edit(self.request, self.config, callback=callback, seed=self.seed,
                                generation=self.generation, **extra)


class PrepareRun(DeviceRun):
    """``editor.prepare(image, prompt, config, seed=…, callback=…)`` in a worker thread. The result is the
    :class:`~dragkit.prepared.PreparedImage`: ``into`` (an earlier one of the same image and prompt, which keeps what
    it held for other settings and lends it: another strength reuses its LoRA) with the new pieces added, or a new
    one."""

    thread_name = "dragkit-prepare"

    def __init__(self, editor: Any, image: Image.Image, prompt: str, config: Any, *, seed: int = 0,
                 into: Optional[PreparedImage] = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.editor, self.image, self.prompt, self.config, self.seed, self.into = \
            editor, image, prompt, config, seed, into
        self.result: Optional[PreparedImage] = None

    def call(self, callback: Callable[[ProgressEvent], None]) -> PreparedImage:
        return self.editor.prepare(self.image, self.prompt, self.config, seed=self.seed, callback=callback,
                                   prepared=self.into)


class LiveEdits:
    """Each browser session's wanted live re-edit (session key → the edit's key: image, points, mask, prompt,
    settings), shared by the app's event handlers. Every change of the points with Live on wants the edit they now
    describe (or none); a live run queued earlier that reaches the device runs only if its edit is still the wanted
    one and no other run has taken it, so a burst of clicks runs the latest points once (the page itself keeps at most
    one live run waiting behind the running one). A running live edit is not stopped: its result is shown, then the
    next one's."""

    def __init__(self) -> None:
        self._wanted: dict[str, list] = {}  # session → [key, taken]
        self._lock = threading.Lock()

    def want(self, session: str, key: Optional[Hashable]) -> None:
        """Make ``key`` ``session``'s wanted live edit (None: none), superseding an earlier one still waiting."""
        with self._lock:
            if key is None:
                self._wanted.pop(session, None)
            else:
                self._wanted[session] = [key, False]

    def claim(self, session: str, key: Hashable) -> bool:
        """Whether the live run of ``key`` should run now: it is ``session``'s wanted live edit and no run has
        taken it yet (it is taken by this call)."""
        with self._lock:
            wanted = self._wanted.get(session)
            if wanted is None or wanted[0] != key or wanted[1]:
                return False
            wanted[1] = True
            return True

    def cancel(self, session: str) -> bool:
        """Drop ``session``'s live edit still waiting (a running one stops by its cancel flag); False when none
        waits."""
        with self._lock:
            wanted = self._wanted.get(session)
            if wanted is None or wanted[1]:
                return False
            del self._wanted[session]
            return True

    def forget(self, session: str) -> None:
        """The session has gone."""
        with self._lock:
            self._wanted.pop(session, None)


@dataclass
class _Wanted:
    key: Hashable
    flag: threading.Event
    done: bool = False


class Preparations:
    """Each browser session's wanted preparation (session key → its content key and cancel flag), shared by the app's
    event handlers. Wanting another key cancels the earlier preparation (a new image, prompt or setting made it
    stale); wanting the same key again changes nothing (a brush stroke, an echo), so a preparation the user cancelled
    stays cancelled until something it depends on changes."""

    def __init__(self) -> None:
        self._wanted: dict[str, _Wanted] = {}
        self._lock = threading.Lock()

    def want(self, session: str, key: Optional[Hashable]) -> bool:
        """Make ``key`` ``session``'s wanted preparation (None: none), cancelling a different earlier one; whether
        it is a new one (to show that it is queued)."""
        with self._lock:
            old = self._wanted.get(session)
            if old is not None and old.key == key:
                return False
            if old is not None:
                old.flag.set()
            if key is None:
                self._wanted.pop(session, None)
                return False
            self._wanted[session] = _Wanted(key, threading.Event())
            return True

    def claim(self, session: str, key: Hashable) -> Optional[threading.Event]:
        """The cancel flag of ``key``'s preparation when it is still ``session``'s wanted one; None when it is stale
        (another key is wanted, and queued behind it) or nothing is (the image was cleared, the tab has gone)."""
        with self._lock:
            wanted = self._wanted.get(session)
            return wanted.flag if wanted is not None and wanted.key == key else None

    def wanted(self, session: str, key: Hashable) -> bool:
        """Whether ``key`` is still ``session``'s wanted preparation."""
        with self._lock:
            wanted = self._wanted.get(session)
            return wanted is not None and wanted.key == key

    def finish(self, session: str, key: Hashable) -> None:
        """``key``'s preparation has ended (Cancel no longer reports it)."""
        with self._lock:
            wanted = self._wanted.get(session)
            if wanted is not None and wanted.key == key:
                wanted.done = True

    def cancel(self, session: str) -> bool:
        """Stop ``session``'s preparation, queued or running; False when there is none."""
        with self._lock:
            wanted = self._wanted.get(session)
            if wanted is None or wanted.done or wanted.flag.is_set():
                return False
            wanted.flag.set()
            return True

    def forget(self, session: str) -> None:
        """The session has gone: cancel its preparation and forget it."""
        with self._lock:
            wanted = self._wanted.pop(session, None)
        if wanted is not None:
            wanted.flag.set()
