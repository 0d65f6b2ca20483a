"""The ``trajectories`` job: compute one slow projection (UMAP, aligned UMAP) and cache it.

``JobSpec(kind="trajectories", options=views.trajectories.job_spec_options(request))``; rows
stored before the rename carry the kind ``project``, which runs the same handler.
"""

from __future__ import annotations

from backend.jobs.base import JobContext
from backend.views.trajectories import Request, project_units


class _Cancelled(Exception):
    pass


def run_trajectories_job(ctx: JobContext) -> dict:
    """Compute and cache one projection; progress in percent (tokens_done of 100)."""
    opts = dict(ctx.spec.options)
    req = Request(**{**opts, "layers": tuple(opts["layers"])})
    p = ctx.progress
    p.tokens_total, p.message = 100, "loading vectors"
    ctx.report(force=True)

    def on_progress(stage: str, fraction: float) -> None:
        if ctx.should_stop():
            raise _Cancelled
        p.tokens_done, p.message = round(100 * fraction), stage
        ctx.report()

    try:
        proj, _ = project_units(ctx.store, req, progress=on_progress)
    except _Cancelled:
        return {"cancelled": True}
    p.tokens_done = 100
    return {"method": proj.method, "points": proj.n_points}
