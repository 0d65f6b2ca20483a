"""The app's singletons and caches: the store (a cursor per thread), the worker, loaded models, view results (compute), background warm-up."""

from __future__ import annotations

import contextlib
import threading

import streamlit as st

from backend import models
from backend.errors import LayerScopeError
from backend.jobs.base import JobSpec
from backend.jobs.worker import Worker
from backend.store import Store, default_db_path
from pages._ui.text import (
    md,
    message,
)


# -- singletons ---------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _root_store(path: str) -> Store:
    from backend.store.schema import check_file_header

    check_file_header(path)
    return Store(path)


@st.cache_resource(show_spinner=False)
def _worker(path: str) -> Worker:
    w = Worker(_root_store(path))
    w.start()
    return w


WARM = {"umap": "pending"}  #: pending | running | ready | failed (shown by the Trajectories page)


_WARM_STARTED = threading.Event()


def start_warm_up() -> None:
    """Start the background warm-up once per process; app.py calls this after each script
    run, so the first page draws before PyTorch is imported (~5 s on a two-core machine)."""
    if _WARM_STARTED.is_set():
        return
    _WARM_STARTED.set()
    threading.Thread(target=_warm_up, name="layerscope-warmup", daemon=True).start()


def _warm_up() -> None:
    """Pay the slow first steps once, in the background and at low priority (Linux applies
    nice to this thread only), so requests and jobs keep the CPU: first PyTorch +
    transformers + the demo model (what "Try the demo" needs first; ~10 s of imports), then
    umap-learn's import + numba compilation on tiny inputs."""
    import os

    with contextlib.suppress(OSError, AttributeError):
        os.nice(15)
    with contextlib.suppress(Exception):
        models.preload_libraries()
    with contextlib.suppress(Exception):  # an optimisation only: the job loads it otherwise
        if "demo" in models.bundled_models():
            models.get_model("demo")
    WARM["umap"] = "running"
    try:
        from backend.analysis.projection import warm_umap

        warm_umap()
        WARM["umap"] = "ready"
    except Exception:  # warm-up is an optimisation only
        WARM["umap"] = "failed"


def libraries_spinner():
    """A spinner that names the wait while transformers (and with it PyTorch) loads for the
    first time in this process; nothing once loaded."""
    import sys

    if "transformers" in sys.modules:
        return contextlib.nullcontext()
    return st.spinner(
        "Loading PyTorch and transformers for the model's tokenizer (the first time only, a "
        "few seconds)…"
    )


def devices() -> list[str]:
    """The devices to offer: the CPU, plus CUDA / MPS once PyTorch is loaded (probing them
    imports PyTorch, ~5 s in the page's thread before anything below it draws; the cost
    estimate or the background warm-up loads it moments later, and the next rerun lists
    them)."""
    import sys

    return models.available_devices() if "torch" in sys.modules else ["cpu"]


def db_path() -> str:
    return str(default_db_path())


_thread = threading.local()


def store() -> Store:
    """A cursor on the app's one database instance, owned by the calling thread.

    Streamlit runs each script run, and fragments in parallel, on their own threads; a DuckDB
    cursor must not be shared between threads (results would mix), so each thread gets one."""
    try:
        root = _root_store(db_path())
    except LayerScopeError as e:  # held by another process, damaged, unwritable: say what to do
        text = str(e)
        if "in use by another process" in text:
            who = text[text.find("(process") : text.find(")") + 1] if "(process" in text else ""
            text = (
                f"The cache file {db_path()} is open in another process {who} — a "
                "`python -m backend` command still running, or a second LayerScope app. "
                "Wait for it to finish (then reload this page), or start this app on another "
                "file: `LAYERSCOPE_DB=/path/other.duckdb streamlit run app.py`."
            )
            st.error(text)
        else:
            message(e, "error")
        st.stop()
    cursors = getattr(_thread, "cursors", None)
    if cursors is None:
        cursors = _thread.cursors = {}
    cur = cursors.get(id(root))
    if cur is None or cur.root is not root:
        cur = cursors[id(root)] = root.cursor()
        cur.root = root
    return cur


def worker() -> Worker:
    return _worker(db_path())


@st.cache_resource(show_spinner="Loading model…", max_entries=3)
def loaded_model(ref: str, dtype: str = "auto", device: str = "cpu"):
    """A loaded model for views that need its weights (logit lens)."""
    return models.get_model(ref, dtype, device)


# -- view results (each backend.views.<name>.compute, cached per request) --------------------
@st.cache_data(show_spinner="Computing…", max_entries=64)
def _compute(view: str, request, version) -> object:
    from backend.views import VIEWS

    return VIEWS[view].compute(store(), request)


def compute(view: str, request, version=None, level: str = "info"):
    """``backend.views.<view>.compute(store, request)``, cached on (request, version); pass as
    ``version`` what changes when the inputs in the store change (e.g. the number of runs). A
    user-caused problem becomes one message (``level``: info / warning / error) and stops the
    page."""
    try:
        result = _compute(view, request, version)
    except LayerScopeError as e:
        message(e, level)
        st.stop()
    if getattr(result, "notice", None):  # a set too large to gather whole: sampled, said so
        st.caption(f"Units: {md(result.notice)}.")
    return result


@st.cache_data(show_spinner="Checking the prompts with the model's tokenizer…", max_entries=16)
def input_sanity(spec: JobSpec, texts: tuple[str, ...] | None):
    """What the model's tokenizer makes of the prompts (``jobs.extract.check_inputs``): the
    Run page's check before a job, cached per (spec, prompts)."""
    from backend.jobs.extract import check_inputs

    return check_inputs(store(), spec, list(texts) if texts is not None else None)


@st.cache_data(show_spinner="Reading out every prompt…", max_entries=16)
def lens_set(model_ref: str, request, version) -> object:
    """The lens summary over a set (the lens view in set mode, with the model loaded once as
    a resource)."""
    from backend.views import VIEWS

    return VIEWS["lens"].compute(store(), request, loaded_model(model_ref)).set
