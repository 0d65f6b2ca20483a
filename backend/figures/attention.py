"""Attention figures: per-head sink share and entropy (layer × head), one head's pattern."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backend.figures._parts import plain


def heads_figure(res) -> go.Figure:
    """Sink share (0..1) and entropy as layer × head heatmaps side by side."""
    heads = list(range(res.sink_share.shape[1]))
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.2,
        subplot_titles=("sink share: mass on the first token", "entropy (nats)"),
    )
    for col, (z, scale, zmax, name) in enumerate(
        [(res.sink_share, "Reds", 1.0, "sink"), (res.entropy, "Blues", None, "entropy")], start=1
    ):
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=heads,
                y=res.layers,
                colorscale=scale,
                zmin=0,
                zmax=zmax,
                colorbar={"x": 0.42 if col == 1 else 1.0, "thickness": 14, "len": 0.9},
                hovertemplate=f"layer %{{y}}, head %{{x}}: {name} %{{z:.3f}}<extra></extra>",
            ),
            1,
            col,
        )
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=col)
        fig.update_yaxes(title_text="layer", dtick=1, row=1, col=col)
    fig.update_layout(height=max(300, 80 + 40 * len(res.layers)), margin={"t": 50, "b": 10})
    return fig


def pattern_figure(res, layer: int, head: int) -> go.Figure:
    """One head's attention, queries down, keys across, token labels on both axes."""
    labels = [f"{i}: {plain(repr(t))}" for i, t in enumerate(res.tokens)]
    a = res.attention[res.layers.index(layer), head]
    fig = go.Figure(
        go.Heatmap(
            z=a,
            x=labels,
            y=labels,
            colorscale="Greys",
            zmin=0,
            zmax=1,
            hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": f"layer {layer}, head {head}"},
        xaxis={"title": {"text": "key"}, "type": "category"},
        yaxis={"title": {"text": "query"}, "type": "category", "autorange": "reversed"},
        height=max(320, 120 + 28 * len(labels)),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig
