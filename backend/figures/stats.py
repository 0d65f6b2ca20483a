"""Layer statistics line charts."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backend.analysis.stats import LayerStats


def stats_figure(st: LayerStats, unit_names: list[str]) -> go.Figure:
    x = list(st.layers)
    fig = make_subplots(rows=2, cols=2, subplot_titles=(
        "norm of the residual stream (median, 5–95%)", "massive activations: max |value| / median",
        "effective rank", "anisotropy (mean pairwise cosine)"))
    q = st.norm_quantiles
    fig.add_trace(go.Scatter(x=x + x[::-1], y=list(q[:, 4]) + list(q[::-1, 0]), fill="toself",
                             fillcolor="rgba(37,99,235,0.15)", line=dict(width=0),
                             hoverinfo="skip", showlegend=False), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=q[:, 2], mode="lines+markers", showlegend=False,
                             line=dict(color="#2563eb")), 1, 1)
    hover = [f"layer {L}: {m:.1f} at dim {d}, token '{unit_names[u]}'"
             for L, m, d, u in zip(x, st.max_abs, st.massive_dim, st.massive_unit)]
    fig.add_trace(go.Scatter(x=x, y=st.massive_ratio, mode="lines+markers", showlegend=False,
                             hovertext=hover, hoverinfo="text", line=dict(color="#dc2626")), 1, 2)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.add_trace(go.Scatter(x=x, y=st.effective_rank, mode="lines+markers", showlegend=False,
                             line=dict(color="#16a34a")), 2, 1)
    fig.add_trace(go.Scatter(x=x, y=st.anisotropy, mode="lines+markers", showlegend=False,
                             line=dict(color="#9333ea")), 2, 2)
    fig.update_yaxes(range=[-0.1, 1], row=2, col=2)
    for r in (1, 2):
        for c in (1, 2):
            fig.update_xaxes(title_text="layer", dtick=1, row=r, col=c)
    fig.update_layout(height=620, margin=dict(l=10, r=10, t=50, b=10))
    return fig
