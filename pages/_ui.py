"""Shared UI: the only st.cache_resource / st.cache_data wrappers, and widgets every page uses.

Pages call ``store()``, ``worker()``, ``selection()``, ``require_runs()``, ``job_panel()``,
``prompt_link()``; nothing here computes analysis results.

Permalinks: every view control should be a ``qp_*`` widget (``qp_select``, ``qp_radio``,
``qp_slider``, ``qp_toggle``, ``qp_int``): its value lives in ``st.query_params`` so a copied
URL reopens the same view. Figures go through ``show_figure`` (presenter styling + exports:
offline HTML, PNG, and the numbers behind them as CSV / Parquet).
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from backend import catalog, models
from backend.errors import LayerScopeError
from backend.jobs.base import JobSpec
from backend.jobs.worker import Worker
from backend.store import Store, default_db_path

PAGE_URLS = {"run": "run", "library": "library", "prompt": "prompt"}


# -- user strings in markdown ---------------------------------------------------------------
_MD_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|~:$&=\"'")


_JOIN = "\u2060"  # WORD JOINER: invisible, no line break, not a URL or e-mail character
_AUTOLINK = re.compile(r"(?i)(:(?=//)|(?<![^\W_])www(?=\.)|@)")


def unlinked(s) -> str:
    """A user string that no autolinker turns into a link: a word joiner inside ``://``, after
    ``www`` and ``@``. Streamlit's markdown (remark-gfm) finds ``https://…``, ``www.…`` and
    e-mail addresses in the text *after* backslash escapes and entities are resolved, so
    escaping alone does not stop it."""
    return _AUTOLINK.sub(lambda m: m.group(1) + _JOIN, str(s))


def md(s) -> str:
    """A user-controlled string (prompt, token, label, model or set name, a URL value, an error
    that quotes one) made inert for Streamlit markdown: no link, no formatting, no autolink."""
    text = " ".join(unlinked(s).split())  # no line breaks: no headings, lists or tables
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


def html_text(s) -> str:
    """A user string inside our own HTML (``unsafe_allow_html``): HTML-escaped, and markdown
    punctuation as entities, so neither tags nor markdown are interpreted."""
    import html

    escaped = html.escape(unlinked(s), quote=True)  # entities start with & and end with ;
    return "".join(f"&#{ord(c)};" if c in _MD_SPECIAL - {"&", ";"} else c for c in escaped)


def csv_bytes(df: pd.DataFrame) -> bytes:
    """A table as a CSV download: formula-like cells neutralised (backend.exports.table_csv)."""
    from backend import exports

    return exports.table_csv(df)


def message(e: Exception, kind: str = "info") -> None:
    """A user-caused problem as one escaped sentence (st.info / st.warning / st.error)."""
    text = str(e) if isinstance(e, LayerScopeError) else f"{type(e).__name__}: {e}"
    getattr(st, kind)(md(text))


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


# -- glossary: one short tooltip per term a view uses (help=) -------------------------------
def gloss(*terms: str) -> str:
    """The tooltip text for ``terms`` (a page's ``help=``): each term, bold, with its gloss
    from ``backend.glossary.GLOSSARY``."""
    from backend.glossary import GLOSSARY

    return "\n\n".join(f"**{t}**: {GLOSSARY[t]}" for t in terms)


# -- links ----------------------------------------------------------------------------------
def prompt_link(run_id: str, label: str = "open prompt", **params) -> None:
    """A link to the Prompt page for one run (``params`` travel with it, as in prompt_url)."""
    q = {"run": run_id, **{k: str(v) for k, v in params.items()}}
    st.page_link("pages/prompt.py", label=label, query_params=q)


def prompt_url(run_id: str, **params) -> str:
    """The Prompt page of one run; ``params`` (e.g. the probe's settings and the inspected
    layer) travel with it, so it opens where the user came from."""
    from urllib.parse import urlencode

    return "./prompt?" + urlencode({"run": run_id, **{k: str(v) for k, v in params.items()}})


def error_box(e: Exception) -> None:
    message(e, "error")


# -- view state in the URL (permalinks) ----------------------------------------------------
def set_param(key: str, value: str) -> None:
    """``st.query_params[key] = value`` only when it changes: each write sends the browser the
    whole query string; an unchanged one is a message for nothing."""
    if st.query_params.get(key) != value:
        st.query_params[key] = value


_REPLACE_HISTORY = """<script>
(function () {
  // Streamlit pushes a history entry for every change of the query string; LayerScope
  // writes its view settings there (permalinks), so a visit added ~10 entries and Back
  // never left the page. Same path = same page: replace the entry instead of pushing one.
  var h = window.history;
  if (h.__layerscopeReplace) return;
  var push = h.pushState.bind(h);
  h.pushState = function (state, title, url) {
    try {
      var next = new URL(url, window.location.href);
      if (next.pathname === window.location.pathname) return h.replaceState(state, title, url);
    } catch (e) {}
    return push(state, title, url);
  };
  h.__layerscopeReplace = true;
})();
</script>"""


def replace_history() -> None:
    """Query-string changes replace the browser's history entry instead of pushing one, so
    Back goes to the previous page (app.py calls this once per script run; the script
    patches ``history.pushState`` once per browser tab)."""
    st.sidebar.html(_REPLACE_HISTORY, unsafe_allow_javascript=True)


def _qp_get(key: str):
    return st.query_params.get(key)


def qp_select(
    label: str,
    options: list,
    key: str,
    default=None,
    sidebar: bool = False,
    format_func=str,
    help: str | None = None,
):
    """A selectbox bound to ?key=...; unknown URL values fall back to the default."""
    options = list(options)
    if not options:
        return None
    url = _qp_get(key)
    by_str = {str(o): o for o in options}
    value = by_str.get(url, default if default in options else options[0])
    where = st.sidebar if sidebar else st
    got = where.selectbox(
        label,
        options,
        index=options.index(value),
        key=f"qp_{key}",
        format_func=format_func,
        help=help,
    )
    set_param(key, str(got))
    return got


def qp_radio(
    label: str,
    options: list,
    key: str,
    default=None,
    horizontal: bool = True,
    help: str | None = None,
    format_func=str,
):
    options = list(options)
    url = _qp_get(key)
    by_str = {str(o): o for o in options}
    value = by_str.get(url, default if default in options else options[0])
    got = st.radio(
        label,
        options,
        index=options.index(value),
        key=f"qp_{key}",
        horizontal=horizontal,
        help=help,
        format_func=format_func,
    )
    set_param(key, str(got))
    return got


def qp_int(
    label: str, key: str, default: int, min_value: int, max_value: int, help: str | None = None
) -> int:
    """An integer slider bound to ?key=N."""
    try:
        value = int(_qp_get(key)) if _qp_get(key) is not None else default
    except ValueError:
        value = default
    value = min(max(value, min_value), max_value)
    if min_value == max_value:
        set_param(key, str(value))
        return value
    got = st.slider(label, min_value, max_value, value, key=f"qp_{key}", help=help)
    set_param(key, str(got))
    return got


def qp_number(
    label: str,
    key: str,
    default: float,
    min_value: float,
    max_value: float,
    step: float | None = None,
    where=st,
    widget_key: str | None = None,
):
    """A number input bound to ?key=value (int or float, as the default is)."""
    cast = float if isinstance(default, float) else int
    try:
        value = cast(_qp_get(key)) if _qp_get(key) is not None else default
    except ValueError:
        value = default
    value = min(max(value, min_value), max_value)
    got = where.number_input(
        label, min_value, max_value, value, step, key=widget_key or f"qp_{key}"
    )
    set_param(key, str(got))
    return got


def qp_slider(
    label: str,
    key: str,
    default: tuple[int, int],
    min_value: int,
    max_value: int,
    help: str | None = None,
) -> tuple[int, int]:
    """A range slider bound to ?key=a:b."""
    try:
        a, b = (int(x) for x in _qp_get(key).split(":")) if _qp_get(key) else default
    except ValueError:
        a, b = default
    a, b = max(min_value, min(a, max_value)), max(min_value, min(b, max_value))
    if min_value == max_value:
        return min_value, max_value
    got = st.slider(label, min_value, max_value, (min(a, b), max(a, b)), key=f"qp_{key}", help=help)
    set_param(key, f"{got[0]}:{got[1]}")
    return got


def qp_text(label: str, key: str, default: str = "", help: str | None = None, where=st) -> str:
    """A text input bound to ?key=text."""
    url = _qp_get(key)
    got = where.text_input(label, value=default if url is None else url, key=f"qp_{key}", help=help)
    set_param(key, got)
    return got


def qp_toggle(label: str, key: str, default: bool = False, help: str | None = None) -> bool:
    url = _qp_get(key)
    value = default if url is None else url in ("1", "true", "True")
    got = st.toggle(label, value=value, key=f"qp_{key}", help=help)
    set_param(key, "1" if got else "0")
    return got


# -- presenter mode ------------------------------------------------------------------------
def presenting() -> bool:
    """?present=1 (or the sidebar toggle): big fonts, fewer controls, high contrast."""
    url = st.query_params.get("present") in ("1", "true")
    on = st.sidebar.toggle(
        "Presenter mode",
        value=url,
        key="_ls_present",
        help="Larger fonts and markers and high-contrast colours for a projector; fewer controls.",
    )
    if on:
        set_param("present", "1")
        st.markdown(  # body text larger, headings still a size above it (not all 1.15rem)
            "<style>"
            "[data-testid='stMarkdownContainer'] p, [data-testid='stMarkdownContainer'] li,"
            "[data-testid='stCaptionContainer'], [data-testid='stWidgetLabel'] p"
            " {font-size: 1.25rem !important;}"
            "h1 {font-size: 3.2rem !important;} h2 {font-size: 2.3rem !important;}"
            "h3 {font-size: 1.8rem !important;}"
            "</style>",
            unsafe_allow_html=True,
        )
    elif "present" in st.query_params:
        del st.query_params["present"]
    tour_banner()
    return on


def tour_banner() -> None:
    """Opened from a Tour story (?story=<key>): the story's "Notice" above the view, so the
    class reads what to look for on the screen that shows it. Unknown keys are ignored."""
    from backend.tour import STORIES

    key = st.query_params.get("story")
    story = next((x for x in STORIES if x.key == key), None)
    if story is None:
        return
    with st.container(border=True):
        st.markdown(f"**Tour · {story.title}**  \n**Notice:** {story.notice}")
        st.page_link("pages/tour.py", label="Back to the Tour", icon=":material/school:")


def computed_on_click(key: str, spinner: str, compute, hint: str, stored=None):
    """A result that is computed only on a click (opening a link computes nothing): ``stored``
    (already in the cache) shows at once; the Compute button runs ``compute()``; with neither,
    ``hint`` says what the click will do and the page stops. A user error is one message."""
    result = stored
    if st.button("Compute", type="primary", key=key):
        try:
            with st.spinner(spinner):
                result = compute()
        except LayerScopeError as e:
            message(e)
            st.stop()
    if result is None:
        st.info(hint)
        st.stop()
    return result


def chart(fig, key: str, **kwargs):
    """A secondary chart (no export row), presenter-styled like the main figure when on; it
    goes into the page's one-file report too."""
    if st.session_state.get("_ls_present"):
        present_figure(fig)
    _page_figures()[key] = (_caption(fig, key), fig)
    return st.plotly_chart(fig, key=key, **kwargs)


def _page_figures() -> dict:
    """This script run's figures (key -> (caption, figure)) in drawing order; the page title
    under the key "". A new dict each script run (keyed by the run's own cursor dict, which
    Streamlit replaces on every run); the report button's deferred callable holds this run's
    dict, so it sees the figures drawn after the button."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    run = ctx.cursors if ctx is not None else None
    reg = st.session_state.get("_ls_figs")
    if reg is None or reg.get("\0run") is not run:
        reg = {"\0run": run, "": st.session_state.get("_ls_page_title")}
        st.session_state["_ls_figs"] = reg
    return reg


def report_sections(figures: dict) -> list[tuple[str, object]]:
    """The (caption, figure) pairs of a page's registry, in drawing order."""
    return [v for k, v in figures.items() if k and not k.startswith("\0")]


def _caption(fig, fallback: str) -> str:
    title = getattr(getattr(fig.layout, "title", None), "text", None)
    return title or fallback


TITLE_WRAP = 48  #: characters per title line at presenter size on a 1280-px projector


def wrap_title(text: str, width: int = TITLE_WRAP) -> str:
    """Break a long title into lines of at most ``width`` characters at spaces (plotly does
    not wrap titles; at presenter size they ran off the right edge)."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "<br>".join([*lines, line])


def _too_long(title: str | None) -> bool:
    return bool(title) and "<br>" not in title and len(title) > TITLE_WRAP


def present_figure(fig):
    """Presenter styling: larger fonts and markers; figures keep their fixed colour scales."""
    fig.update_layout(
        font=dict(size=20),
        title_font=dict(size=26),
        legend=dict(font=dict(size=18)),
        hoverlabel=dict(font_size=18),
    )
    # Streamlit's chart theme sets axis fonts itself: set them on the axes, not only globally
    axis = dict(tickfont=dict(size=18), title_font=dict(size=20))
    fig.update_xaxes(**axis)
    fig.update_yaxes(**axis)
    fig.update_scenes(xaxis=axis, yaxis=axis, zaxis=axis)
    fig.update_annotations(font_size=18)
    title = fig.layout.title.text if fig.layout.title else None
    if _too_long(title):
        wrapped = wrap_title(title)
        lines = wrapped.count("<br>") + 1
        fig.update_layout(
            title_text=wrapped, margin_t=max(fig.layout.margin.t or 0, 40 + 34 * lines)
        )
    for fr in fig.frames or ():  # animation frames retitle the figure as the slider moves
        if fr.layout and fr.layout.title and _too_long(fr.layout.title.text):
            fr.layout.title.text = wrap_title(fr.layout.title.text)
    for tr in fig.data:
        if getattr(tr, "marker", None) is not None and hasattr(tr.marker, "size"):
            with contextlib.suppress(ValueError, TypeError):
                tr.marker.size = (
                    max(tr.marker.size or 6, 10)
                    if not isinstance(tr.marker.size, (list, tuple))
                    else tr.marker.size
                )
    return fig


def copy_link_box() -> None:
    """The current view's permalink, ready to copy."""
    from urllib.parse import urlencode

    qs = urlencode({k: st.query_params[k] for k in st.query_params})
    try:
        base = st.context.url.split("?")[0]
    except Exception:
        base = ""
    st.code(f"{base}?{qs}" if base else f"?{qs}", language=None)


def show_figure(
    fig, key: str, name: str, data: pd.DataFrame | None = None, on_select: str = "ignore", **kwargs
):
    """Draw a figure (presenter-styled when on) with export buttons underneath.

    ``data`` = the numbers behind the figure, offered as CSV and Parquet. Returns the plotly
    selection state when ``on_select='rerun'``.
    """
    from backend import exports

    if st.session_state.get("_ls_present"):
        present_figure(fig)
    figures = _page_figures()
    figures[key] = (_caption(fig, name), fig)
    event = st.plotly_chart(fig, key=key, on_select=on_select, **kwargs)
    with st.expander("Export / share", expanded=False):
        # every file is made on the click (deferred), not on every rerun of the page
        c = st.columns(5)
        c[0].download_button(
            "HTML (offline)",
            lambda: exports.figure_html(fig),
            f"{name}.html",
            mime="text/html",
            key=f"{key}_html",
        )
        if c[1].button("PNG", key=f"{key}_png_make"):
            try:
                st.session_state[f"{key}_png"] = exports.figure_png(fig)
            except Exception as e:  # kaleido/Chromium missing
                st.warning(f"PNG export needs Chromium: {e}")
        if f"{key}_png" in st.session_state:
            c[1].download_button(
                "Save PNG",
                st.session_state[f"{key}_png"],
                f"{name}.png",
                mime="image/png",
                key=f"{key}_png_dl",
            )
        if data is not None:
            c[2].download_button(
                "CSV",
                lambda: exports.table_csv(data),
                f"{name}.csv",
                mime="text/csv",
                key=f"{key}_csv",
            )
            c[3].download_button(
                "Parquet",
                lambda: exports.table_parquet(data),
                f"{name}.parquet",
                key=f"{key}_pq",
            )
        settings = {k: st.query_params[k] for k in st.query_params}
        model = store().find_model(settings["model"]) if "model" in settings else None
        c[4].download_button(
            "Report (HTML)",
            lambda: exports.report_html(
                figures[""] or name, report_sections(figures), settings, model
            ),
            f"{name}-report.html",
            mime="text/html",
            key=f"{key}_report",
            help="One offline HTML file: every figure on this page, its settings, the model's "
            "fingerprint and the library versions.",
        )
        st.caption("Link to this view:")
        copy_link_box()
    return event
