"""Job panels: submit, live progress with Cancel, finished rows with links to the views."""

from __future__ import annotations

import streamlit as st

from backend import catalog
from backend.errors import LayerScopeError
from backend.jobs.base import JobSpec
from pages._ui.state import (
    store,
    worker,
)
from pages._ui.text import (
    md,
    message,
)


def submit(spec: JobSpec) -> str | None:
    """Submit a job; a user-caused problem becomes a message in the page."""
    try:
        catalog.ensure_set(store(), spec.set_name)
        job_id = worker().submit(spec)
    except LayerScopeError as e:
        message(e, "error")
        return None
    st.session_state["_ls_last_job"] = job_id
    return job_id


VIEW_LINKS = {
    "trajectories": "Trajectories",
    "similarity": "Similarity",
    "probes": "Probes",
    "lens": "Logit lens",
    "stats": "Layer stats",
}


def job_title(p) -> str:
    what = {"extract": "Extract", "generate": "Sample", "project": "Trajectories"}
    what = {**what, "trajectories": "Trajectories", "features": "Train features"}.get(
        p.kind, p.kind
    )
    return f"{what} · {md(p.set_name)} on {md(p.model)}" if p.model else "Job"


def job_panel(job_id: str, links: bool = False) -> None:
    """One job: live progress with Cancel while it runs (a fragment that polls), then a static
    line. A finished job reruns each session's page once, so views fill in."""
    p = worker().progress(job_id)
    if p is None:
        return
    if p.active:
        _live_job(job_id)
        return
    r, title = p.result, job_title(p)
    if p.status == "done":
        st.success(
            f"{title}: done — {r.get('runs', 0)} runs computed, {r.get('cached_runs', 0)} from "
            f"the cache, {r.get('tokens', 0):,} tokens in {p.seconds:.1f} s."
            + "".join(f" Note: {md(n)}." for n in r.get("notes", []))
        )
        if links and p.kind == "extract":
            cols = st.columns(len(VIEW_LINKS))
            for c, (page, label) in zip(cols, VIEW_LINKS.items()):
                c.page_link(
                    f"pages/{page}.py",
                    label=f"open in {label}",
                    query_params={"model": p.model, "set": p.set_name},
                )
    elif p.status == "cancelled":
        st.info(f"{title}: cancelled after {p.runs_done} runs ({md(p.message)}).")
    else:
        st.error(f"{title}: {p.status} — {md(p.message)}")


@st.fragment(run_every=1.0)
def _live_job(job_id: str) -> None:
    p = worker().progress(job_id)
    if p is None:
        return
    if not p.active:
        seen = st.session_state.setdefault("_ls_jobs_seen", set())
        if job_id not in seen:  # at most one full rerun per finished job and session
            seen.add(job_id)
            st.rerun(scope="app")
        return
    frac = p.tokens_done / p.tokens_total if p.tokens_total else 0.0
    eta = f", ETA {p.eta_s:.0f} s" if p.eta_s is not None else ""
    if p.status == "queued":
        n = worker().ahead(job_id)
        what = f"queued behind {n} other job(s)" if n else "queued, starting"
    elif not p.tokens_total:  # before the first batch: loading and tokenizing, no rate yet
        what = "running: loading the model and reading the prompts"
    else:
        todo = p.runs_total - p.runs_cached
        runs = f"{p.runs_done:,} of {todo:,} prompts · " if todo > 0 else ""
        what = (
            f"{p.status}: {runs}{p.tokens_done:,} / {p.tokens_total:,} tokens, "
            f"{p.tokens_per_s:,.0f} tok/s{eta}"
        )
    st.progress(frac, text=f"{job_title(p)} — {what}")
    if st.button("Cancel", key=f"_cancel_{job_id}"):
        worker().cancel(job_id)
