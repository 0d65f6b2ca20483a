"""Exports: figures as offline HTML / PNG, tables as CSV / Parquet, one-file HTML reports."""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import os
import platform
from datetime import datetime, timezone

import pandas as pd
import plotly.graph_objects as go

CHROMIUM = "/usr/bin/chromium"


def figure_html(fig) -> bytes:
    """Interactive HTML with plotly.js embedded: works with no network."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode()


def figure_png(
    fig, width: int | None = None, height: int | None = None, scale: float = 1.0
) -> bytes:
    """Static PNG through kaleido (headless Chromium), at the figure's own size when it has
    one (a long prompt's lens grid is wider than the default 1200 px), else 1200 × 700."""
    return figure_image(fig, "png", width, height, scale)


def figure_image(
    fig, fmt: str, width: int | None = None, height: int | None = None, scale: float = 1.0
) -> bytes:
    if "BROWSER_PATH" not in os.environ and os.path.exists(CHROMIUM):
        os.environ["BROWSER_PATH"] = CHROMIUM
    width = int(width or fig.layout.width or 1200)
    height = int(height or fig.layout.height or 700)
    # a copy whose axes grow their margins to fit the tick labels: a static export has no
    # Streamlit theme around it, and with the figures' tight margins long y labels were cut
    out = go.Figure(fig)
    out.update_xaxes(automargin=True)
    out.update_yaxes(automargin=True)
    return out.to_image(format=fmt, width=width, height=height, scale=scale)


#: a cell starting with one of these is a formula to Excel / LibreOffice / Sheets (OWASP
#: "CSV Injection"): = + - @, and tab / carriage return that some readers strip first
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def inert_cell(v):
    """One CSV cell made safe to open in a spreadsheet: text that starts like a formula gets a
    leading single quote (OWASP's advice); numbers and everything else are unchanged."""
    if isinstance(v, str) and v.startswith(FORMULA_START):
        return "'" + v
    return v


def inert_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every text cell (and column name) through ``inert_cell``; numeric columns
    untouched, so numbers stay numbers (-1.5 is written as -1.5)."""
    out = df.copy()
    t = pd.api.types
    for c in out.columns:
        col = out[c]
        if t.is_numeric_dtype(col) or t.is_bool_dtype(col) or t.is_datetime64_any_dtype(col):
            continue  # numbers stay numbers
        out[c] = col.astype(object).map(inert_cell)  # text, object and categorical columns
    out.columns = [inert_cell(c) if isinstance(c, str) else c for c in out.columns]
    return out


def table_csv(df: pd.DataFrame) -> bytes:
    """CSV bytes for a download or a file: the one way the app and the CLI write CSV (cells
    that a spreadsheet would run as formulas are neutralised; Parquet keeps the raw text)."""
    # text quoted (a carriage return inside a cell stays inside it), numbers bare
    return inert_frame(df).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode()


def table_parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in (
        "torch",
        "transformers",
        "duckdb",
        "plotly",
        "scikit-learn",
        "umap-learn",
        "streamlit",
        "numpy",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def report_html(
    title: str, sections: list[tuple[str, object]], settings: dict, model: dict | None = None
) -> bytes:
    """One self-contained HTML file: settings, model fingerprint, versions, then each figure
    (interactive, plotly.js embedded once) with its caption."""
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by LayerScope.</p>",
        "<h2>Settings</h2><pre>"
        + html.escape(json.dumps(settings, indent=2, default=str))
        + "</pre>",
    ]
    if model:
        keep = {
            k: model.get(k)
            for k in ("ref", "model_id", "architecture", "n_layers", "d_model", "revision", "dtype")
            if k in model
        }
        parts.append(
            "<h2>Model</h2><pre>" + html.escape(json.dumps(keep, indent=2, default=str)) + "</pre>"
        )
    parts.append(
        "<h2>Library versions</h2><pre>"
        + html.escape(json.dumps(library_versions(), indent=2))
        + "</pre>"
    )
    first = True
    for caption, fig in sections:
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        parts.append(fig.to_html(include_plotlyjs=first, full_html=False))
        first = False
    body = "\n".join(parts)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}"
        f"</style></head><body>{body}</body></html>"
    ).encode()
