"""The model + prompt-set selection shared across pages and kept in the URL; require_runs offers the extraction job."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from backend import catalog, models
from backend.jobs.base import JobSpec
from backend.store import Store
from pages._ui.jobs import (
    job_panel,
    submit,
)
from pages._ui.params import (
    set_param,
)
from pages._ui.present import (
    presenting,
)
from pages._ui.state import (
    store,
    worker,
)
from pages._ui.text import (
    md,
)


# -- selection (model + prompt set), shared across pages and kept in the URL ----------------
@dataclass(frozen=True)
class Selection:
    model: str  #: reference as the user knows it ("demo", "gpt2", a path)
    set_name: str | None
    model_id: str | None  #: fingerprint, None when the model has no runs in the cache


def model_choices(s: Store) -> list[str]:
    refs = list(models.bundled_models())
    for ref in s.list_models()["ref"]:
        if ref not in refs:
            refs.append(ref)
    return refs


def set_choices(s: Store) -> list[str]:
    names = list(s.list_sets()["set_name"])
    return names + [n for n in catalog.demo_sets() if n not in names]


def _bound_select(label: str, options: list[str], key: str, help: str | None = None) -> str | None:
    """A selectbox whose value lives in session_state and in the URL (?key=value)."""
    if not options:
        return None
    url = st.query_params.get(key)
    current = st.session_state.get(f"sel_{key}", url)
    if url is not None and url != current and url in options:
        current = url
    if current not in options:
        options = options + [current] if current else options
    idx = options.index(current) if current in options else 0
    value = st.sidebar.selectbox(label, options, index=idx, key=f"_w_{key}", help=help)
    st.session_state[f"sel_{key}"] = value
    set_param(key, value)
    return value


def selection(need_set: bool = True) -> Selection:
    """Sidebar pickers for model and prompt set; the choice follows the user across pages."""
    s = store()
    model = _bound_select(
        "Model",
        model_choices(s),
        "model",
        help="Bundled demo models first, then every model in the cache.",
    )
    set_name = _bound_select("Prompt set", set_choices(s), "set") if need_set else None
    model_id = None
    if model:
        row = s.find_model(model)
        model_id = row["model_id"] if row else None
    return Selection(model or models.DEFAULT_MODEL, set_name, model_id)


def open_view(title: str) -> tuple[bool, Selection, pd.DataFrame]:
    """The head of every view page: title, presenter toggle, selection, and the set's runs.
    Stops the script (after saying why) when the set has no runs for the model yet."""
    st.title(title)
    present = presenting()
    sel = selection()
    runs = require_runs(sel)
    if runs is None or runs.empty:
        st.stop()
    return present, sel, runs


def require_runs(sel: Selection) -> pd.DataFrame | None:
    """The set's runs for the model, or a message and a button to compute them."""
    s = store()
    if sel.set_name is None:
        st.info("Pick a prompt set in the sidebar.")
        return None
    runs = s.set_runs(sel.set_name, sel.model_id) if sel.model_id else pd.DataFrame()
    n_set = len(s.get_set(sel.set_name)) if sel.set_name in set(s.list_sets()["set_name"]) else 0
    if len(runs) and len(runs) >= n_set:
        return runs
    active = worker().active_jobs()
    mine = [
        p
        for p in active
        if p.kind == "extract" and (p.model, p.set_name) == (sel.model, sel.set_name)
    ]
    if mine:  # this view's job (started here, in another tab, or by a Compute click): join it
        st.info("A job is computing these activations; this view fills in when it finishes.")
        job_panel(mine[0].job_id)
        return runs if len(runs) else None
    msg = f"{len(runs)} of {n_set} prompts" if n_set else "None of the prompts"
    st.info(f"{msg} of **{md(sel.set_name)}** have activations for **{md(sel.model)}** yet.")
    if st.button(
        f"Compute {md(sel.set_name)} on {md(sel.model)}", type="primary", key="_compute_runs"
    ):  # another job running (another tab, another view) only queues this one behind it
        submit(JobSpec(model=sel.model, set_name=sel.set_name))
        st.rerun()
    if active:
        st.caption(
            f"{len(active)} other job(s) running or queued; a job started here waits its turn."
        )
    return runs if len(runs) else None
