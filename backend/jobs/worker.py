"""Jobs: persisted in the store, run by one background thread (app) or in the foreground (CLI).

A job computes only what the cache lacks, refuses up front when it would exceed the budget,
writes each forward batch's runs in one transaction (so kill -9 loses at most the batch in
flight, never a half-written run), reports progress, and can be cancelled between batches.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict

from backend import models
from backend.budget import Budget, check_budget
from backend.errors import LayerScopeError
from backend.jobs.base import KINDS, JobContext, JobSpec, Progress
from backend.jobs.extract import estimate
from backend.store import Store
from backend.store.connection import disk_full_message

log = logging.getLogger(__name__)


class Worker:
    """One job queue per store. ``start()`` runs jobs on a daemon thread; ``run()`` runs one
    in the calling thread (CLI)."""

    def __init__(self, store: Store, budget: Budget | None = None):
        self._root = store
        self._local = threading.local()  # a DuckDB cursor must not be shared across threads
        self.budget = budget or Budget()
        self._queue: queue.Queue[tuple[str, JobSpec]] = queue.Queue()
        self._progress: dict[str, Progress] = {}
        self._stops: dict[str, threading.Event] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        """This thread's cursor on the worker's database (submit runs on a page's thread,
        jobs on the worker's thread; DuckDB refuses one cursor used by two at once)."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._root.cursor()
        return cur

    # -- public API -----------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        """Validate cheaply, persist as queued, enqueue. Raises LayerScopeError on bad input."""
        if spec.kind not in KINDS:
            raise LayerScopeError(f"Unknown job kind '{spec.kind}'.")
        spec.validate()
        models.resolve(spec.model)
        job_id = uuid.uuid4().hex[:12]
        p = Progress(job_id, kind=spec.kind, model=spec.model, set_name=spec.set_name)
        with self._lock:
            self._progress[job_id] = p
            self._stops[job_id] = threading.Event()
        self._persist(p, spec)
        self._queue.put((job_id, spec))
        self.start()
        return job_id

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="layerscope-worker", daemon=True
                )
                self._thread.start()

    def progress(self, job_id: str) -> Progress | None:
        return self._progress.get(job_id)

    def active_jobs(self) -> list[Progress]:
        return [p for p in self._progress.values() if p.active]

    def ahead(self, job_id: str) -> int:
        """Jobs that run before this queued one (those running or queued earlier)."""
        n = 0
        for jid, p in list(self._progress.items()):
            if jid == job_id:
                return n
            n += p.active
        return 0

    def recent(self) -> list[Progress]:
        return list(self._progress.values())[::-1]

    def cancel(self, job_id: str) -> None:
        ev = self._stops.get(job_id)
        if ev is not None:
            ev.set()

    def wait(self, job_id: str, timeout: float | None = None) -> Progress:
        end = None if timeout is None else time.monotonic() + timeout
        while self._progress[job_id].active:
            if end is not None and time.monotonic() > end:
                break
            time.sleep(0.05)
        return self._progress[job_id]

    def run(self, spec: JobSpec, on_progress: Callable[[Progress], None] | None = None) -> Progress:
        """Run one job in this thread (CLI). Errors end up in the returned Progress."""
        spec.validate()
        job_id = uuid.uuid4().hex[:12]
        p = Progress(job_id, kind=spec.kind, model=spec.model, set_name=spec.set_name)
        self._progress[job_id] = p
        self._stops[job_id] = threading.Event()
        self._execute(job_id, spec, on_progress)
        return p

    # -- internals ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            job_id, spec = self._queue.get()
            models.preload_libraries()  # transformers' lazy classes, before threads race
            self._execute(job_id, spec, None)

    def _persist(self, p: Progress, spec: JobSpec) -> None:
        try:
            self.store.job_put(
                {
                    "job_id": p.job_id,
                    "kind": spec.kind,
                    "spec": asdict(spec),
                    "status": p.status,
                    **{
                        k: getattr(p, k)
                        for k in (
                            "tokens_total",
                            "tokens_done",
                            "runs_total",
                            "runs_done",
                            "runs_cached",
                            "message",
                        )
                    },
                }
            )
        except Exception as e:  # progress bookkeeping must never kill a job (one line, no stack)
            log.warning("could not persist job %s (%s: %s)", p.job_id, type(e).__name__, e)

    def _execute(self, job_id: str, spec: JobSpec, on_progress) -> None:
        p, stop = self._progress[job_id], self._stops[job_id]
        if stop.is_set():
            p.status = "cancelled"
            self._persist(p, spec)
            return

        def report(prog: Progress) -> None:
            self._persist(prog, spec)
            if on_progress:
                on_progress(prog)

        p.status, p.started = "running", time.monotonic()
        report(p)
        ctx = JobContext(self.store, spec, p, report, stop, self.budget)
        try:
            if spec.kind == "extract":
                check_budget(self.store, estimate(self.store, spec), self.budget)
            # the handlers import the capture stack (torch): on the job's thread, when it runs
            from backend.jobs.kinds import JOB_KINDS

            p.result = JOB_KINDS[spec.kind](ctx)
            p.status = "cancelled" if stop.is_set() else "done"
            if p.status == "cancelled":
                p.message = f"cancelled after {p.runs_done} runs; they are kept"
        except LayerScopeError as e:
            p.status, p.message = "failed", str(e)
        except Exception as e:  # unexpected: keep the app alive, say what happened
            if "no space left" in str(e).lower():  # e.g. the checkpoint after the last batch
                p.status, p.message = (
                    "failed",
                    (
                        disk_full_message(self.store.path)
                        + f" ({p.runs_done} runs of this job were stored and are kept.)"
                    ),
                )
            else:  # the stack only on request: the message says what happened, once
                log.debug("job %s failed", job_id, exc_info=True)
                if os.environ.get("LAYERSCOPE_DEBUG"):
                    log.exception("job %s failed", job_id)
                p.status, p.message = "failed", f"{type(e).__name__}: {e}"
        p.finished = time.monotonic()
        p.result.setdefault("seconds", round(p.seconds, 3))
        report(p)
