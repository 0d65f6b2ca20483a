"""Figures on the page: presenter mode, the Tour banner, compute-on-click, charts, exports and the one-file report."""

from __future__ import annotations

import contextlib

import pandas as pd
import streamlit as st

from backend.errors import LayerScopeError
from pages._ui.params import (
    set_param,
)
from pages._ui.state import (
    store,
)
from pages._ui.text import (
    message,
)


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
