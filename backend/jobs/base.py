"""Job specs, progress, cost estimates and budgets: the vocabulary every job kind shares."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from backend.errors import LayerScopeError
from backend.store import Store

GB = 1 << 30
#: the job kinds (``jobs.kinds.JOB_KINDS`` maps each to its handler; a test keeps them equal):
#: submitting checks the name without importing the handlers and their capture stack (torch)
KINDS = ("extract", "generate", "project", "checkpoints")


def _env_gb(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise LayerScopeError(f"{name}={raw!r} is not a number of GB.") from None


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

    def validate(self) -> None:
        """Settings that would waste time or fail later, refused before any work."""
        if not 16 <= self.batch_tokens <= 10_000_000:
            raise LayerScopeError(
                f"--batch-tokens {self.batch_tokens} is out of range: use 16 to 10,000,000 "
                "(the default 8192 suits most CPUs)."
            )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise LayerScopeError("--max-tokens must be at least 1 (or omitted for no limit).")
        if not self.set_name:
            raise LayerScopeError("A job needs a prompt set.")
        refs = self.options.get("checkpoints")
        if self.kind == "checkpoints" and (
            not refs or not all(isinstance(r, str) and r for r in refs)
        ):
            raise LayerScopeError("A checkpoints job needs a list of checkpoint references.")


@dataclass
class Budget:
    """Limits checked before a job starts (env LAYERSCOPE_MAX_JOB_GB, LAYERSCOPE_MAX_MODEL_GB)."""

    max_write_bytes: int | None = (
        None  #: None: read LAYERSCOPE_MAX_JOB_GB (default 20) at check time
    )
    max_model_bytes: int | None = None  #: None: LAYERSCOPE_MAX_MODEL_GB, else available memory

    def write_limit(self) -> int:
        if self.max_write_bytes is not None:
            return self.max_write_bytes
        return int(_env_gb("LAYERSCOPE_MAX_JOB_GB", 20.0) * GB)

    def model_limit(self) -> int | None:
        if self.max_model_bytes is not None:
            return self.max_model_bytes
        gb = _env_gb("LAYERSCOPE_MAX_MODEL_GB", None)
        return int(gb * GB) if gb is not None else _available_memory()


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
    kind: str = ""  #: the spec's kind, model and set, for job lists
    model: str = ""
    set_name: str = ""

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

    def __init__(
        self,
        store: Store,
        spec: JobSpec,
        progress: Progress,
        on_progress: Callable[[Progress], None],
        stop: threading.Event,
        budget: Budget | None = None,
    ):
        self.store, self.spec, self.progress = store, spec, progress
        self.budget = budget or Budget()
        self._on_progress, self._stop = on_progress, stop
        self._last = 0.0

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last > 0.5:
            self._last = now
            self._on_progress(self.progress)


def check_budget(store: Store, est: Estimate, budget: Budget) -> None:
    if est.bytes > budget.write_limit():
        raise LayerScopeError(
            f"This job would write {human_bytes(est.bytes)} of activations, over the "
            f"{human_bytes(budget.write_limit())} budget (LAYERSCOPE_MAX_JOB_GB); "
            "use fewer prompts or --max-tokens."
        )
    where = store.path.parent if isinstance(store.path, os.PathLike) else "."
    free = shutil.disk_usage(where).free
    if est.bytes > 0.9 * free:
        raise LayerScopeError(
            f"This job would write about {human_bytes(est.bytes)} to {store.path}, but only "
            f"{human_bytes(free)} are free on that disk; free space or use --db on another disk."
        )
    limit = budget.model_limit()
    if limit and est.model_bytes > limit:
        raise LayerScopeError(
            f"The model needs about {human_bytes(est.model_bytes)} of memory; only "
            f"{human_bytes(limit)} are available. Try a smaller model or dtype bfloat16."
        )


def engine_options(
    engine: str,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    ray_address: str | None = None,
    shard_root: str | None = None,
) -> dict:
    """A JobSpec's ``options`` for the chosen capture engine (the CLI and the Run page share
    this check): {} for the local engine; the Ray engine needs Ray installed."""
    if engine == "local":
        return {}
    if engine != "ray":
        raise LayerScopeError(f"Unknown engine '{engine}': choose local or ray.")
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise LayerScopeError(
            "The Ray engine needs Ray: pip install -r requirements-scale.txt (ray[data])."
        )
    if workers < 1 or gpus_per_worker < 0:
        raise LayerScopeError("Ray needs at least 1 worker and a GPU share of at least 0.")
    return {
        "engine": "ray",
        "workers": int(workers),
        "gpus_per_worker": float(gpus_per_worker),
        "ray_address": ray_address or None,
        "shard_root": shard_root or None,
    }


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (binary units, as ``ls -h``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
