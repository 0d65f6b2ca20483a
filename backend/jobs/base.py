"""Job specs, progress, cost estimates and budgets: the vocabulary every job kind shares."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from backend.budget import Budget
from backend.errors import LayerScopeError
from backend.store import Store

#: the job kinds (``jobs.kinds.JOB_KINDS`` maps each to its handler; a test keeps them equal):
#: submitting checks the name without importing the handlers and their capture stack (torch)
KINDS = ("extract", "generate", "trajectories", "project", "checkpoints", "features")


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


_RAY_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9.\-]+:(\d{1,5}))$")


def check_ray_address(address: str) -> None:
    """``--ray-address``: ``auto`` (a cluster started on this node), ``HOST:PORT`` (its GCS,
    6379 by default) or ``ray://HOST:PORT`` (Ray's client, which needs ``ray[client]``)."""
    m = _RAY_ADDRESS.match(address.strip())
    if m is None or (m.group(3) is not None and not 0 < int(m.group(3)) < 65536):
        raise LayerScopeError(
            f"--ray-address {address[:80]!r} is not a cluster address: use auto, HOST:PORT "
            "(e.g. 10.0.0.5:6379) or ray://HOST:10001."
        )
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise LayerScopeError(
            "A ray:// address needs Ray's client: pip install 'ray[client]==2.60.0', or give "
            "the head's HOST:6379 from a node of the cluster."
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
    if importlib.util.find_spec("ray") is None:
        raise LayerScopeError(
            "The Ray engine needs Ray: pip install -r requirements-scale.txt (ray[data])."
        )
    if workers < 1 or not math.isfinite(gpus_per_worker) or gpus_per_worker < 0:
        raise LayerScopeError("Ray needs at least 1 worker and a GPU share of at least 0.")
    if ray_address:
        check_ray_address(ray_address)
    cores = os.cpu_count() or 1
    if not ray_address and gpus_per_worker == 0 and workers > cores:
        raise LayerScopeError(
            f"This machine has {cores} CPU cores: use at most {cores} Ray workers here (each "
            "loads its own copy of the model), or --ray-address ADDRESS for a cluster."
        )
    return {
        "engine": "ray",
        "workers": int(workers),
        "gpus_per_worker": float(gpus_per_worker),
        "ray_address": ray_address or None,
        "shard_root": shard_root or None,
    }
