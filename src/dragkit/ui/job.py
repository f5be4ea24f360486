"""One drag edit, run off the web server's event loop (no Gradio: tested with a fake editor).

:class:`EditJob` runs ``editor.edit`` in a worker thread under the app's device lock (one edit or generation at a
time on the model, even after a cancelled stream has detached) and turns the editor's progress callback into a
throttled stream of :class:`Progress` snapshots. Cancelling sets a flag that the callback checks at every step (and
the worker checks before it starts), so the editor stops cleanly with :class:`~dragkit.types.EditCancelled` and frees
the device. :class:`CancelFlags` holds each browser session's flag, so that Cancel reaches an edit that is still
waiting in the queue as well as a running one.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from ..types import DragError, DragRequest, DragResult, EditCancelled, Point, ProgressEvent
from . import texts

logger = logging.getLogger(__name__)

PREVIEW_EVERY_S = 0.25  # at most this often a progress snapshot (with a live preview) is sent to the browser
_DONE = object()  # queued by the worker when the edit has ended, whichever way


@dataclass(frozen=True)
class Progress:
    """A throttled snapshot of a running edit.

    Attributes:
        event: the latest progress event.
        handles: the latest handle positions reported since the previous snapshot, or None if there were none.
        lora_cached: the editor has reported that the identity LoRA came from its cache.
    """

    event: ProgressEvent
    handles: Optional[list[Point]] = None
    lora_cached: bool = False

    @property
    def text(self) -> str:
        """The status line for this snapshot."""
        return texts.progress(self.event, self.lora_cached)


def failure_text(exc: BaseException, what: str = "edit") -> str:
    """The one-line status of an edit (or another ``what``) that ended with ``exc`` ("Cancelled.", or
    "**Error:** …"; unexpected errors are logged with their traceback)."""
    if isinstance(exc, EditCancelled):
        return texts.CANCELLED
    if isinstance(exc, DragError):
        return texts.error(exc)
    logger.error("%s failed", what, exc_info=exc)
    detail = f": {texts.first_line(exc)}" if str(exc).strip() else ""
    return texts.error(RuntimeError(f"the {what} failed: {type(exc).__name__}{detail}"))


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


class EditJob:
    """``editor.edit(request, config, callback=…, seed=…, generation=…)`` in a worker thread.

    Start it, iterate :meth:`progress` until the edit ends, then read :attr:`result` or :attr:`error`::

        job = EditJob(editor, request, config, seed=0).start()
        for snapshot in job.progress():
            show(snapshot.text, snapshot.handles)
        status = failure_text(job.error) if job.error else "done"
    """

    def __init__(self, editor: Any, request: DragRequest, config: Any, *, seed: int = 0, generation: Any = None,
                 cancel: Optional[threading.Event] = None, device_lock: Optional[threading.Lock] = None,
                 min_interval: float = PREVIEW_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.editor, self.request, self.config = editor, request, config
        self.seed, self.generation = seed, generation
        self.cancel_flag = cancel if cancel is not None else threading.Event()
        self.result: Optional[DragResult] = None
        self.error: Optional[BaseException] = None
        self._device_lock = device_lock if device_lock is not None else threading.Lock()
        self._min_interval, self._clock = min_interval, clock
        self._events: queue.Queue = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> EditJob:
        """Start the worker thread (it waits for the device lock); returns ``self``."""
        self._thread = threading.Thread(target=self._work, name="dragkit-edit", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the edit to stop at its next step (or not to start)."""
        self.cancel_flag.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for the worker to end; whether it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is not None and not self._thread.is_alive()

    def progress(self) -> Iterator[Progress]:
        """Snapshots until the edit ends: at most one per ``min_interval`` seconds, and always one for the last
        events (none at all if the edit reported nothing)."""
        last_sent, cached, handles, pending = -math.inf, False, None, None
        for batch, done in self._batches():
            if batch:
                cached = cached or any(e.cached and e.stage == "lora" for e in batch)
                handles = next((e.handles for e in reversed(batch) if e.handles is not None), handles)
                pending = batch[-1]
            if pending is None:
                continue
            now = self._clock()
            if now - last_sent < self._min_interval and not done:
                continue
            last_sent = now
            yield Progress(pending, handles, cached)
            pending = handles = None

    def _batches(self) -> Iterator[tuple[list[ProgressEvent], bool]]:
        """The events as they arrive, grouped (each group: what was queued when the previous one was taken), and
        whether the edit has ended."""
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
                logger.debug("edit starts")
                self.result = self.editor.edit(self.request, self.config, callback=self._callback, seed=self.seed,
                                               generation=self.generation)
        except BaseException as exc:  # reported by the caller, once the progress stream has ended
            self.error = exc
        finally:
            logger.debug("edit ends: %s", type(self.error or self.result).__name__)
            self._events.put(_DONE)
