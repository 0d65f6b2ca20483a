"""The job-kind registry: each kind's handler, imported explicitly (no import side effects).

A handler takes a ``JobContext`` and returns a JSON-able summary dict.
"""

from __future__ import annotations

from collections.abc import Callable

from backend.jobs.base import JobContext
from backend.jobs.checkpoints import run_checkpoints
from backend.jobs.extract import run_extract
from backend.jobs.generate import run_generate
from backend.views.dictionaries import run_job as run_features_job
from backend.views.trajectories import run_project_job

JOB_KINDS: dict[str, Callable[[JobContext], dict]] = {
    "extract": run_extract,
    "generate": run_generate,
    "project": run_project_job,  #: UMAP / aligned UMAP of a trajectory view, cached in the store
    "checkpoints": run_checkpoints,
    "features": run_features_job,  #: a sparse dictionary (TopK SAE) of one layer, cached in the store  #: extract over a model's training checkpoints + behaviour
}
