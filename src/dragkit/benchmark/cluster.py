"""Edits spread over a Ray cluster (``dragkit bench dragbench|drag100|shapes … --ray [ADDRESS]``).

:class:`RayPool` starts one Ray actor per worker (``--gpus-per-worker`` GPUs and ``--cpus-per-worker`` CPUs each;
by default as many as the cluster's GPUs, or CPUs on a CPU-only cluster, allow); each actor loads the editor once
and then edits whatever :meth:`RayPool.map` sends it, one job at a time. The driver keeps everything else: it reads
the samples, sends each worker a :class:`EditJob` (request, config, seed), receives the edited image with its
handles and timings, and writes the run folder itself, atomically — the layout, ``report`` and resuming are those of
a single-process run, and the workers need no shared file system. A worker that dies (killed, out of memory, node
lost) is replaced and its sample sent again (``retries`` times); a sample whose edit raises is a failed sample, as
in a single-process run. Ray is optional: ``pip install 'dragkit[cluster]'``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator, Optional

from ..errors import first_line
from ..types import DragError

logger = logging.getLogger(__name__)

INSTALL_HINT = "--ray needs Ray: pip install 'dragkit[cluster]' (or pip install ray)"


def require_ray():
    """The ``ray`` module, or a one-line :class:`DragError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise DragError(INSTALL_HINT) from None
    return ray


@dataclass
class EditJob:
    """One edit for a worker: ``editor.edit(request, config, seed=seed)``."""

    request: Any
    config: Any
    seed: int = 0


@dataclass
class EditOutcome:
    """What came back: the result (its latent and frames dropped) or the edit's one-line error; where it ran."""

    result: Any = None
    error: Optional[str] = None
    worker: str = ""
    attempts: int = 1


class EditWorker:
    """The body of a Ray actor: an editor loaded once (``load_editor()``), then one edit per :meth:`edit` call."""

    def __init__(self, load_editor: Callable[[], Any], threads: int = 0):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.error: Optional[str] = None
        try:
            self.editor = load_editor()
        except Exception as exc:  # reported by ready(): the driver stops with this line
            self.editor, self.error = None, first_line(exc)

    def ready(self) -> tuple[Optional[str], str]:
        """(why the editor could not be loaded or None, where this worker runs)."""
        return self.error, self.where

    def edit(self, job: EditJob) -> EditOutcome:
        try:
            result = self.editor.edit(job.request, job.config, seed=job.seed)
        except Exception as exc:  # the sample failed, the worker lives on
            return EditOutcome(error=first_line(exc, with_type=True), worker=self.where)
        return EditOutcome(dataclasses.replace(result, latent=None, frames=None), worker=self.where)


class LocalPool:
    """The pool protocol (:meth:`map`, :meth:`close`) in this process, with one :class:`EditWorker`: what a Ray run
    does, without Ray — to check a pool-driven run against a plain one, and for tests."""

    def __init__(self, load_editor: Callable[[], Any]):
        self.load_editor = load_editor
        self.worker: Optional[EditWorker] = None

    def __enter__(self) -> "LocalPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map(self, jobs: Iterable[tuple[Hashable, EditJob]], count: Optional[int] = None
            ) -> Iterator[tuple[Hashable, EditOutcome]]:
        for key, job in jobs:
            if self.worker is None:
                self.worker = EditWorker(self.load_editor)
                if self.worker.error:
                    raise DragError(f"could not load the model: {self.worker.error}")
            yield key, self.worker.edit(job)

    def close(self) -> None:
        self.worker = None


def _init_kwargs(address: Optional[str]) -> dict:
    kwargs: dict = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        kwargs["address"] = address
    elif not os.environ.get("RAY_ADDRESS"):  # a new local cluster: no dashboard
        kwargs["include_dashboard"] = False
    return kwargs


@dataclass
class _Pending:
    key: Hashable
    job: EditJob
    attempts: int = 1


class RayPool:
    """Ray actors holding an editor each; :meth:`map` runs jobs on them, replacing workers that die.

    ``address``: a running cluster ("auto", "HOST:6379", "ray://HOST:10001"); None starts a local one (or joins
    ``$RAY_ADDRESS``). Nothing starts before the first :meth:`map` with work; :meth:`close` (or ``with``) ends the
    actors, and the local cluster if this pool started it."""

    def __init__(self, load_editor: Callable[[], Any], *, address: Optional[str] = None,
                 workers: Optional[int] = None, gpus_per_worker: Optional[float] = None, cpus_per_worker: float = 1,
                 retries: int = 2, ready_timeout: float = 1800):
        self.ray = require_ray()
        self.load_editor, self.address = load_editor, address
        self.workers, self.gpus_per_worker, self.cpus_per_worker = workers, gpus_per_worker, cpus_per_worker
        self.retries, self.ready_timeout = retries, ready_timeout
        self.actors: list = []
        self.replaced = 0  # workers that died and were replaced
        self._actor_class = None
        self._owns_ray = False

    def __enter__(self) -> "RayPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def plan(self, resources: dict, jobs: int) -> tuple[int, float]:
        """(workers, GPUs per worker) for a cluster with ``resources`` and ``jobs`` jobs; a one-line error when the
        requested workers do not fit."""
        gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
        per_gpu = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if gpus else 0.0)
        fit = int(gpus // per_gpu) if per_gpu else int(cpus // max(self.cpus_per_worker, 1e-9))
        if per_gpu:
            fit = min(fit, int(cpus // max(self.cpus_per_worker, 1e-9)))
        n = self.workers or fit
        if n < 1 or n > fit:
            raise DragError(f"--ray: {n or 'no'} worker(s) of {per_gpu:g} GPU and {self.cpus_per_worker:g} CPU do "
                            f"not fit the cluster ({gpus:g} GPU, {cpus:g} CPU)")
        return min(n, max(jobs, 1)), per_gpu

    def start(self, jobs: int) -> None:
        """Join or start the cluster and load one editor per worker (at most ``jobs`` workers)."""
        ray = self.ray
        if not ray.is_initialized():
            ray.init(**_init_kwargs(self.address))
            self._owns_ray = True
        n, per_gpu = self.plan(ray.cluster_resources(), jobs)
        threads = max(1, int(self.cpus_per_worker))
        self._actor_class = ray.remote(EditWorker).options(num_cpus=self.cpus_per_worker, num_gpus=per_gpu,
                                                           max_restarts=0)
        self._spawn_args = (self.load_editor, threads)
        self.actors = [self._actor_class.remote(*self._spawn_args) for _ in range(n)]
        self.actors = [a for a in self.actors if self._ready(a)]
        if not self.actors:
            raise DragError("--ray: no worker could start")
        logger.info("Ray: %d worker(s) ready", len(self.actors))

    def _ready(self, actor) -> bool:
        """Wait for ``actor`` to load its editor; an editor that cannot be loaded stops the run (one line); a worker
        that never starts (no room, node lost) is dropped."""
        ray = self.ray
        try:
            error, where = ray.get(actor.ready.remote(), timeout=self.ready_timeout)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as exc:
            logger.warning("Ray: a worker did not start (%s); going on without it", type(exc).__name__)
            ray.kill(actor)
            return False
        if error:
            raise DragError(f"Ray worker {where} could not load the model: {error}")
        return True

    def _replace(self, actor) -> Optional[Any]:
        """A new worker for one that died, or None when none can start."""
        self.replaced += 1
        try:
            self.ray.kill(actor)
        except Exception:  # already gone
            pass
        fresh = self._actor_class.remote(*self._spawn_args)
        return fresh if self._ready(fresh) else None

    def map(self, jobs: Iterable[tuple[Hashable, EditJob]], count: Optional[int] = None
            ) -> Iterator[tuple[Hashable, EditOutcome]]:
        """Run ``(key, job)`` pairs (pulled lazily, one per idle worker) and yield ``(key, outcome)`` as they finish.
        ``count``: how many jobs there are, when known (no more workers than that are started)."""
        source = iter(jobs)
        first = next(source, None)
        if first is None:
            return
        if not self.actors:
            self.start(count or 1_000_000)
        ray, queue, pending = self.ray, deque([_Pending(*first)]), {}
        idle = list(self.actors)

        def next_item() -> Optional[_Pending]:
            if queue:  # jobs of dead workers first
                return queue.popleft()
            pair = next(source, None)
            return None if pair is None else _Pending(*pair)

        while True:
            while idle:
                item = next_item()
                if item is None:
                    break
                actor = idle.pop()
                pending[actor.edit.remote(item.job)] = (actor, item)
            if not pending:
                return
            [ref], _ = ray.wait(list(pending), num_returns=1)
            actor, item = pending.pop(ref)
            outcome, actor = self._collect(ref, actor, item, queue)
            if actor is not None:
                idle.append(actor)
            if outcome is not None:
                yield item.key, outcome

    def _collect(self, ref, actor, item: _Pending, queue: deque) -> tuple[Optional[EditOutcome], Optional[Any]]:
        """The outcome of a finished job and the worker to use next; a dead worker is replaced and its job queued
        again (or failed, after ``retries`` deaths)."""
        errors = self.ray.exceptions
        try:
            outcome = self.ray.get(ref)
        except (errors.RayActorError, errors.WorkerCrashedError, errors.NodeDiedError, errors.OutOfMemoryError) as exc:
            logger.warning("Ray: a worker died on %s (%s); %s", item.key, type(exc).__name__,
                           "retrying" if item.attempts <= self.retries else "giving up")
            fresh = self._replace(actor)
            self.actors = [a for a in self.actors if a is not actor] + ([fresh] if fresh is not None else [])
            if not self.actors:
                raise DragError("--ray: every worker died") from None
            if item.attempts > self.retries:
                return EditOutcome(error=f"a Ray worker died {item.attempts} times on this sample",
                                   attempts=item.attempts), fresh
            item.attempts += 1
            queue.appendleft(item)
            return None, fresh
        outcome.attempts = item.attempts
        return outcome, actor

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # already gone
                pass
        self.actors = []
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_ray = False
