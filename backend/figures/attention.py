"""Attention figures: per-head sink share and entropy (layer × head), one head's pattern."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backend.analysis.attention import top_keys
from backend.figures._parts import plain


def _top_text(res, k: int = 3) -> list[list[str]]:
    """Per (layer, head): its top attended tokens (mean over queries >= 1), for the hover."""
    idx, w = top_keys(res.attention, k)
    toks = [plain(repr(t)) for t in res.tokens]
    return [
        [
            "<br>".join(f"{i}: {toks[i]} {v:.2f}" for i, v in zip(idx[li, h], w[li, h]))
            for h in range(idx.shape[1])
        ]
        for li in range(idx.shape[0])
    ]


def heads_figure(res) -> go.Figure:
    """Sink share (0..1) and entropy as layer × head heatmaps side by side; the hover lists
    each head's top attended tokens, and a transparent marker per cell makes it clickable
    (customdata = (layer, head); Streamlit's selection events skip heatmaps)."""
    heads = list(range(res.sink_share.shape[1]))
    top = _top_text(res)
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
                hoverinfo="skip",
            ),
            1,
            col,
        )
        cells = [(li, h) for li in range(len(res.layers)) for h in heads]
        fig.add_trace(
            go.Scatter(
                x=[h for _, h in cells],
                y=[res.layers[li] for li, _ in cells],
                mode="markers",
                marker={"symbol": "square", "size": 22, "opacity": 0.01, "color": "black"},
                customdata=[[res.layers[li], h] for li, h in cells],
                text=[
                    f"layer {res.layers[li]}, head {h}: {name} {z[li, h]:.3f}<br>"
                    f"<i>most attended (mean over queries):</i><br>{top[li][h]}"
                    for li, h in cells
                ],
                hoverinfo="text",
                showlegend=False,
                name=f"{name} cells",
            ),
            1,
            col,
        )
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=col)
        fig.update_yaxes(title_text="layer", dtick=1, row=1, col=col)
    fig.update_layout(
        height=max(300, 80 + 40 * len(res.layers)),
        margin={"t": 50, "b": 10},
        hoverlabel={"align": "left"},
        clickmode="event+select",
    )
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
