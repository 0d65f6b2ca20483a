"""The job-kind registry: each kind's handler, imported explicitly (no import side effects).

A handler takes a ``JobContext`` and returns a JSON-able summary dict.
"""

from __future__ import annotations

from collections.abc import Callable

from backend.jobs.base import JobContext
from backend.jobs.checkpoints import run_checkpoints
from backend.jobs.extract import run_extract
from backend.jobs.generate import run_generate
from backend.jobs.trajectories import run_trajectories_job
from backend.views.dictionaries import run_job as run_features_job

JOB_KINDS: dict[str, Callable[[JobContext], dict]] = {
    "extract": run_extract,
    "generate": run_generate,
    "trajectories": run_trajectories_job,  #: UMAP / aligned UMAP of a view, cached in the store
    "project": run_trajectories_job,  #: the same, under the kind stored before the rename
    "checkpoints": run_checkpoints,  #: extract over a model's training checkpoints + behaviour
    "features": run_features_job,  #: a sparse dictionary (TopK SAE) of one layer, cached in the store
}
