"""View state in the URL (permalinks): qp_* widgets bound to st.query_params, history replacement, prompt links."""

from __future__ import annotations

import streamlit as st


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
