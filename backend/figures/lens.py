"""Logit-lens grid and per-layer readout curves."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backend.analysis.lens import LensResult


def lens_figure(res: LensResult, tokens: list[str], vocab: list[str]) -> go.Figure:
    top = res.top_ids[..., 0]
    text = np.vectorize(lambda i: vocab[i])(top)
    hover = []
    for li in range(top.shape[0]):
        row = []
        for p in range(top.shape[1]):
            cands = "<br>".join(f"{vocab[i]} {pr:.2f}"
                                for i, pr in zip(res.top_ids[li, p], res.top_probs[li, p]))
            row.append(f"layer {res.layers[li]} · after '{tokens[p]}'<br>{cands}")
        hover.append(row)
    x = [f"{p}:{t}" for p, t in enumerate(tokens)]
    fig = go.Figure(go.Heatmap(z=res.top_probs[..., 0], x=x, y=list(res.layers), text=text,
                               texttemplate="%{text}", zmin=0, zmax=1, colorscale="Blues",
                               customdata=hover, hovertemplate="%{customdata}<extra></extra>",
                               colorbar=dict(title="P(top)")))
    for p, c in enumerate(res.commitment):
        fig.add_shape(type="line", x0=p - 0.5, x1=p + 0.5, y0=c - 0.5, y1=c - 0.5,
                      line=dict(color="#dc2626", width=3))
    fig.update_layout(title="Logit lens: top next token at each layer (red line: commitment "
                      "depth)", xaxis_title="position (input token)", yaxis_title="layer",
                      height=180 + 50 * len(res.layers), margin=dict(l=10, r=10, t=50, b=10))
    return fig


def lens_curves(res: LensResult) -> go.Figure:
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "KL to final (nats)", "entropy (nats)", "rank of final top-1"))
    x = list(res.layers)
    for col, vals in enumerate((res.kl_to_final, res.entropy, res.final_rank), start=1):
        fig.add_trace(go.Scatter(x=x, y=vals.mean(1), mode="lines+markers", showlegend=False,
                                 line=dict(color="#2563eb")), row=1, col=col)
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=col)
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=50, b=10))
    return fig
