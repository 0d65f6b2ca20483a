"""Pieces shared by the figure modules: the palette and the shaded interval band."""

from __future__ import annotations

import html

import plotly.graph_objects as go

BLUE, RED, GREY, GREEN, PURPLE = "#2563eb", "#dc2626", "#6b7280", "#16a34a", "#9333ea"


def plain(s) -> str:
    """A user-controlled string (prompt, token, label, model or set name) made inert for
    Plotly, which renders a subset of HTML (<a>, <b>, <br>...) in text, hovers and legends."""
    return html.escape(str(s), quote=False)


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
