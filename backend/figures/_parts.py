"""Pieces shared by the figure modules: the palette and the shaded interval band."""

from __future__ import annotations

import base64
import html

import numpy as np
import plotly.graph_objects as go

BLUE, RED, GREY, GREEN, PURPLE = "#2563eb", "#dc2626", "#6b7280", "#16a34a", "#9333ea"


def plain(s) -> str:
    """A user-controlled string (prompt, token, label, model or set name) made inert for
    Plotly, which renders a subset of HTML (<a>, <b>, <br>...) in text, hovers and legends."""
    return html.escape(str(s), quote=False)


_SHORT = {
    "int8": "i1",
    "uint8": "u1",
    "int16": "i2",
    "uint16": "u2",
    "int32": "i4",
    "uint32": "u4",
    "float32": "f4",
    "float64": "f8",
}  # plotly.js typed-array names


def typed(v) -> dict | list:
    """A 1-D numeric array as the plotly.js typed-array spec ``{"dtype", "bdata"}``, exactly as
    plotly's ``to_dict`` encodes it (int64 shrunk to the smallest int type that holds it).

    Plotly converts every array of a figure this way when Streamlit serialises it, after a copy
    and a dataframe check per array; a 130k-point figure holds ~300 arrays, and building the spec
    here skips that work (tests/backend/figures/test_parts.py compares with plotly's encoder)."""
    a = np.asarray(v)
    if a.ndim != 1 or a.dtype.kind not in "iuf":
        raise ValueError(f"typed() takes a 1-D numeric array, got {a.dtype} {a.shape}")
    if a.size == 0:
        return []  # plotly leaves empty arrays as they are
    if a.dtype == np.int64:
        lo, hi = int(a.min()), int(a.max())
        for t in (np.int8, np.int16, np.int32):
            if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
                a = a.astype(t)
                break
    if str(a.dtype) not in _SHORT:
        a = a.astype(np.float64)
    return {
        "dtype": _SHORT[str(a.dtype)],
        "bdata": base64.b64encode(np.ascontiguousarray(a)).decode(),
    }


def untyped(v) -> np.ndarray:
    """The array behind a typed-array spec (or the value itself as an array): for tests and
    code that read a figure's data back."""
    if isinstance(v, dict) and "bdata" in v:
        inv = {b: a for a, b in _SHORT.items()}
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=inv[v["dtype"]])
    return np.asarray(v)


def band(x, lo, hi, color: str, name: str = "") -> go.Scatter:
    """A filled band between lo and hi over x (an interval or a quantile range), no hover."""
    x = list(x)
    return go.Scatter(
        x=x + x[::-1],
        y=list(hi) + list(lo[::-1]),
        fill="toself",
        mode="lines",
        fillcolor=color,
        line={"width": 0},
        hoverinfo="skip",
        name=name,
        showlegend=False,
    )
