"""Jobs: persisted in the store, run by one background thread (app) or in the foreground (CLI).

A job computes only what the cache lacks, refuses up front when it would exceed the budget,
writes each forward batch's runs in one transaction (so kill -9 loses at most the batch in
flight, never a half-written run), reports progress, and can be cancelled between batches.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from backend import extract, models
from backend.errors import LayerScopeError
from backend.store import Store

log = logging.getLogger(__name__)
GB = 1 << 30


@dataclass
class JobSpec:
    """What to compute. ``kind`` selects the handler in ``JOB_KINDS``."""

    model: str
    set_name: str
    kind: str = "extract"
    dtype: str = "auto"
    device: str = "cpu"
    max_tokens: int | None = None
    batch_tokens: int = 8192
    trust_remote_code: bool = False
    options: dict = field(default_factory=dict)  #: kind-specific (e.g. sampling settings)


@dataclass
class Budget:
    """Limits checked before a job starts (env LAYERSCOPE_MAX_JOB_GB, LAYERSCOPE_MAX_MODEL_GB)."""

    max_write_bytes: int = int(float(os.environ.get("LAYERSCOPE_MAX_JOB_GB", "20")) * GB)
    max_model_bytes: int | None = (
        int(float(os.environ["LAYERSCOPE_MAX_MODEL_GB"]) * GB)
        if os.environ.get("LAYERSCOPE_MAX_MODEL_GB") else None
    )


@dataclass
class Progress:
    job_id: str
    status: str = "queued"  #: queued | running | done | failed | cancelled | interrupted
    tokens_total: int = 0
    tokens_done: int = 0
    runs_total: int = 0
    runs_done: int = 0
    runs_cached: int = 0
    message: str = ""
    started: float | None = None
    finished: float | None = None
    result: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.tokens_per_s
        return (self.tokens_total - self.tokens_done) / rate if rate > 0 else None

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")


@dataclass(frozen=True)
class Estimate:
    """What a job will cost, computed without loading the model."""

    runs: int
    cached_runs: int
    tokens: int  #: tokens still to compute
    bytes: int  #: activation bytes to write
    model_bytes: int  #: weights in memory at the chosen dtype
    seconds: float | None  #: from measured throughput of this model, when known
    truncated: int  #: prompts longer than max_tokens


class JobContext:
    """Handed to a job handler: the store, the spec, progress and cancel."""

    def __init__(self, store: Store, spec: JobSpec, progress: Progress,
                 on_progress: Callable[[Progress], None], stop: threading.Event):
        self.store, self.spec, self.progress = store, spec, progress
        self._on_progress, self._stop = on_progress, stop
        self._last = 0.0

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last > 0.5:
            self._last = now
            self._on_progress(self.progress)


def _extract_plan(store: Store, spec: JobSpec):
    mref = models.resolve(spec.model)
    dtype = str(models.pick_dtype(spec.dtype, spec.device)).removeprefix("torch.")
    settings = extract.CaptureSettings(max_tokens=spec.max_tokens, dtype=dtype)
    prompts = store.get_set(spec.set_name)
    if prompts.empty:
        raise LayerScopeError(f"The prompt set '{spec.set_name}' is empty or does not exist.")
    texts = list(dict.fromkeys(prompts["text"]))
    ids = [extract.make_run_id(mref.model_id, t, settings.key()) for t in texts]
    have = store.existing_runs(ids)
    missing = [(i, t) for i, t in zip(ids, texts) if i not in have]
    return mref, settings, texts, missing


def estimate(store: Store, spec: JobSpec) -> Estimate:
    """Cost of a job before it runs: tokens, bytes on disk, model memory, time."""
    mref, settings, texts, missing = _extract_plan(store, spec)
    cfg = models.read_config(mref)
    n_layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0
    d = cfg.get("hidden_size") or cfg.get("n_embd") or 0
    toks = []
    if missing:
        tok = models.load_tokenizer(mref.path, spec.trust_remote_code)
        toks = extract.tokenize(tok, [t for _, t in missing], spec.max_tokens)
    n_tokens = sum(len(t.ids) for t in toks)
    elem = 2 if settings.dtype in ("bfloat16", "float16") else 4
    file_elem = 4 if cfg.get("torch_dtype", cfg.get("dtype")) in (None, "float32") else 2
    rate = store.throughput(mref.model_id, settings.dtype)
    return Estimate(
        runs=len(texts), cached_runs=len(texts) - len(missing), tokens=n_tokens,
        bytes=n_tokens * (n_layers + 1) * d * 2,
        model_bytes=models.weights_bytes(mref) * elem // file_elem,
        seconds=n_tokens / rate if rate else None,
        truncated=sum(t.truncated for t in toks),
    )


def check_budget(store: Store, est: Estimate, budget: Budget) -> None:
    if est.bytes > budget.max_write_bytes:
        raise LayerScopeError(
            f"This job would write {est.bytes / GB:.1f} GB of activations, over the "
            f"{budget.max_write_bytes / GB:.1f} GB budget (LAYERSCOPE_MAX_JOB_GB); "
            "use fewer prompts or --max-tokens."
        )
    where = store.path.parent if isinstance(store.path, os.PathLike) else "."
    free = shutil.disk_usage(where).free
    if est.bytes > 0.9 * free:
        raise LayerScopeError(
            f"This job would write {est.bytes / GB:.1f} GB but only {free / GB:.1f} GB are free."
        )
    limit = budget.max_model_bytes or _available_memory()
    if limit and est.model_bytes > limit:
        raise LayerScopeError(
            f"The model needs about {est.model_bytes / GB:.1f} GB of memory; only "
            f"{limit / GB:.1f} GB are available. Try a smaller model or dtype bfloat16."
        )


def _available_memory() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_extract(ctx: JobContext) -> dict:
    store, spec, p = ctx.store, ctx.spec, ctx.progress
    mref, settings, texts, missing = _extract_plan(store, spec)
    p.runs_total, p.runs_cached = len(texts), len(texts) - len(missing)
    result = {"set": spec.set_name, "model": spec.model, "model_id": mref.model_id,
              "runs": 0, "cached_runs": p.runs_cached, "tokens": 0, "truncated": 0}
    if not missing:
        return result
    lm = models.get_model(spec.model, spec.dtype, spec.device, spec.trust_remote_code)
    store.upsert_model(lm.info)
    toks = extract.tokenize(lm.tokenizer, [t for _, t in missing], spec.max_tokens)
    items = [(rid, t) for (rid, _), t in zip(missing, toks)]
    p.tokens_total = sum(len(t.ids) for t in toks)
    result["truncated"] = sum(t.truncated for t in toks)
    if result["truncated"]:
        log.warning("%d prompts truncated to %s tokens", result["truncated"], spec.max_tokens)
    ctx.report(force=True)
    t0 = time.monotonic()

    def written(batch) -> None:
        p.runs_done += len(batch)
        p.tokens_done += sum(r.n_tokens for r in batch)
        ctx.report()

    pipelined_ingest(store, lm.info.model_id,
                     extract.capture(lm, items, settings, spec.batch_tokens, ctx.should_stop),
                     written)
    if p.tokens_done:
        store.record_throughput(mref.model_id, settings.dtype,
                                p.tokens_done / max(time.monotonic() - t0, 1e-6))
    result.update(runs=p.runs_done, tokens=p.tokens_done)
    return result


def pipelined_ingest(store: Store, model_id: str, batches, on_written) -> None:
    """Write batch k to DuckDB on a helper thread while the model computes batch k+1
    (DuckDB and torch both release the GIL). Each batch is still one transaction; an error on
    either side stops both and is raised here. A checkpoint at the end packs the file."""
    q: queue.Queue = queue.Queue(maxsize=2)
    failure: list[BaseException] = []
    cur = store.cursor()

    def writer() -> None:
        while (batch := q.get()) is not None:
            if failure:
                continue
            try:
                cur.ingest(model_id, batch)
                on_written(batch)
            except BaseException as e:  # surfaced to the producer
                failure.append(e)

    t = threading.Thread(target=writer, name="layerscope-ingest", daemon=True)
    t.start()
    try:
        for batch in batches:
            if failure:
                break
            q.put(batch)
    finally:
        q.put(None)
        t.join()
    if failure:
        raise failure[0]
    cur.checkpoint()


JOB_KINDS: dict[str, Callable[[JobContext], dict]] = {"extract": run_extract}


def _register_kinds() -> None:
    """Job kinds defined in other modules register themselves on import."""
    import backend.generate  # noqa: F401  (adds JOB_KINDS["generate"])


class Worker:
    """One job queue per store. ``start()`` runs jobs on a daemon thread; ``run()`` runs one
    in the calling thread (CLI)."""

    def __init__(self, store: Store, budget: Budget | None = None):
        self.store = store.cursor()
        self.budget = budget or Budget()
        self._queue: queue.Queue[tuple[str, JobSpec]] = queue.Queue()
        self._progress: dict[str, Progress] = {}
        self._stops: dict[str, threading.Event] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- public API -----------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        """Validate cheaply, persist as queued, enqueue. Raises LayerScopeError on bad input."""
        _register_kinds()
        if spec.kind not in JOB_KINDS:
            raise LayerScopeError(f"Unknown job kind '{spec.kind}'.")
        models.resolve(spec.model)
        job_id = uuid.uuid4().hex[:12]
        p = Progress(job_id)
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
                self._thread = threading.Thread(target=self._loop, name="layerscope-worker",
                                                daemon=True)
                self._thread.start()

    def progress(self, job_id: str) -> Progress | None:
        return self._progress.get(job_id)

    def active_jobs(self) -> list[Progress]:
        return [p for p in self._progress.values() if p.active]

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

    def run(self, spec: JobSpec, on_progress: Callable[[Progress], None] | None = None
            ) -> Progress:
        """Run one job in this thread (CLI). Errors end up in the returned Progress."""
        _register_kinds()
        job_id = uuid.uuid4().hex[:12]
        p = Progress(job_id)
        self._progress[job_id] = p
        self._stops[job_id] = threading.Event()
        self._execute(job_id, spec, on_progress)
        return p

    # -- internals ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            job_id, spec = self._queue.get()
            self._execute(job_id, spec, None)

    def _persist(self, p: Progress, spec: JobSpec) -> None:
        try:
            self.store.job_put({"job_id": p.job_id, "kind": spec.kind, "spec": asdict(spec),
                                "status": p.status, **{k: getattr(p, k) for k in (
                                    "tokens_total", "tokens_done", "runs_total", "runs_done",
                                    "runs_cached", "message")}})
        except Exception:  # progress bookkeeping must never kill a job
            log.exception("could not persist job %s", p.job_id)

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
        ctx = JobContext(self.store, spec, p, report, stop)
        try:
            if spec.kind == "extract":
                check_budget(self.store, estimate(self.store, spec), self.budget)
            p.result = JOB_KINDS[spec.kind](ctx)
            p.status = "cancelled" if stop.is_set() else "done"
            if p.status == "cancelled":
                p.message = f"cancelled after {p.runs_done} runs; they are kept"
        except LayerScopeError as e:
            p.status, p.message = "failed", str(e)
        except Exception as e:  # unexpected: keep the app alive, say what happened
            log.exception("job %s failed", job_id)
            p.status, p.message = "failed", f"{type(e).__name__}: {e}"
        p.finished = time.monotonic()
        p.result.setdefault("seconds", round(p.seconds, 3))
        report(p)
