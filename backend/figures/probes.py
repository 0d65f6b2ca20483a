"""Probe charts: accuracy per layer with its interval and every control on one chart."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from backend.analysis.probes import ProbeResult


def probe_figure(res: ProbeResult, twin: ProbeResult | None = None, twin_name: str = "",
                 title: str = "") -> go.Figure:
    x = list(res.layers)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x + x[::-1], y=list(res.ci_high) + list(res.ci_low[::-1]),
                             fill="toself", fillcolor="rgba(37,99,235,0.15)", line=dict(width=0),
                             hoverinfo="skip", name="95% interval"))
    fig.add_trace(go.Scatter(x=x, y=res.accuracy, mode="lines+markers", name="probe accuracy",
                             line=dict(color="#2563eb", width=3)))
    fig.add_trace(go.Scatter(x=x, y=res.control, mode="lines+markers", name="shuffled labels",
                             line=dict(color="#9ca3af", dash="dot")))
    if twin is not None:
        fig.add_trace(go.Scatter(x=list(twin.layers), y=twin.accuracy, mode="lines+markers",
                                 name=f"same probe on {twin_name}",
                                 line=dict(color="#dc2626", dash="dash")))
    fig.add_hline(y=res.majority, line=dict(color="#111827", dash="dash", width=1),
                  annotation_text=f"majority class {res.majority:.2f}")
    fig.update_xaxes(dtick=1)
    fig.update_layout(title=title or "Linear probe accuracy per layer (cross-validated by prompt)",
                      xaxis_title="layer", yaxis_title="accuracy", yaxis_range=[0, 1.02],
                      height=420, legend=dict(orientation="h", y=-0.2),
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def confusion_figure(m: np.ndarray, classes, layer: int) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=m, x=list(classes), y=list(classes), colorscale="Blues",
                               text=m, texttemplate="%{text}", showscale=False,
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z}<extra></extra>"))
    fig.update_layout(title=f"Confusion at layer {layer}", xaxis_title="predicted",
                      yaxis_title="true", yaxis_autorange="reversed", height=360,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def score_figure(res: ProbeResult, layer: int) -> go.Figure:
    li = res.layers.index(layer)
    fig = go.Figure()
    for c, name in enumerate(res.classes):
        fig.add_trace(go.Violin(y=res.scores[li, res.y == c, c], name=f"{name}",
                                box_visible=True, points=False))
    fig.update_layout(title=f"Probe score of the true class, layer {layer}",
                      yaxis_title="P(true class)", yaxis_range=[0, 1], height=360,
                      showlegend=False, margin=dict(l=10, r=10, t=50, b=10))
    return fig
