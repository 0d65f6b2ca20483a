"""What a job may cost: its estimate, the budgets it is checked against (env
LAYERSCOPE_MAX_JOB_GB, LAYERSCOPE_MAX_MODEL_GB, the free disk, the available memory), and
``human_bytes``. A bottom module: jobs and views (steering's stored runs) both check budgets.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backend.errors import LayerScopeError

if TYPE_CHECKING:
    from backend.store import Store

GB = 1 << 30


def _env_gb(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        v = float(raw)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):  # nan, inf, 0 or a negative "-1.0 GB budget"
        raise LayerScopeError(f"{name}={raw!r} is not a positive number of GB.")
    return v


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
