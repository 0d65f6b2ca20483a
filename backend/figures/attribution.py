"""Attribution figures: the components per layer (bars), the heads (layer × head heatmap), and
the contribution graph (token × layer nodes, edges by their share; the answer's route in
colour). Nodes of the graph carry customdata = (layer, position) for a click."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from backend.figures._parts import plain

ATTN, MLP, OTHER, ROUTE, GREY = "#1f77b4", "#ff7f0e", "#7f7f7f", "#d62728", "#c7c7c7"


def _target(res) -> str:
    a = plain(repr(res.answer))
    if res.against is None:
        return f"logit({a})"
    return f"logit({a}) − logit({plain(repr(res.against))})"


def components_figure(res) -> go.Figure:
    """Each layer's attention and MLP contribution side by side, the embeddings and the bias
    terms on their own; the title gives the model's value and the components' sum."""
    x = [str(la) for la in res.layers]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=["embed"], y=[res.embed], name="embeddings", marker_color=OTHER,
                         hovertemplate="embeddings: %{y:+.4f}<extra></extra>"))  # fmt: skip
    for name, vals, color in (("attention", res.attn, ATTN), ("MLP", res.mlp, MLP)):
        fig.add_trace(go.Bar(x=x, y=vals, name=name, marker_color=color,
                             hovertemplate=f"layer %{{x}} {name}: %{{y:+.4f}}<extra></extra>"))  # fmt: skip
    if res.bias:
        names = [plain(k) for k in res.bias]
        fig.add_trace(go.Bar(x=names, y=list(res.bias.values()), name="bias terms",
                             marker_color="#9467bd",
                             hovertemplate="%{x}: %{y:+.4f}<extra></extra>"))  # fmt: skip
    fig.update_layout(
        barmode="group",
        title=f"{_target(res)} = {res.logit_diff:.4f}; the parts sum to {res.total:.4f}",
        xaxis={"title": "layer", "type": "category"},
        yaxis={"title": "contribution (logits)", "zeroline": True},
        height=380,
        margin={"t": 60, "b": 10},
    )
    return fig


def heads_figure(res) -> go.Figure:
    """Each head's term (layer × head), a diverging scale centred on 0."""
    lim = float(np.abs(res.heads).max()) or 1.0
    heads = list(range(res.heads.shape[1]))
    bias = [f"{b:+.4f}" for b in res.head_bias]
    fig = go.Figure(
        go.Heatmap(
            z=res.heads,
            x=heads,
            y=res.layers,
            colorscale="RdBu",
            reversescale=True,
            zmin=-lim,
            zmax=lim,
            zmid=0,
            customdata=[[b] * len(heads) for b in bias],
            hovertemplate="layer %{y}, head %{x}: %{z:+.4f}<br>(output bias of the layer: "
            "%{customdata})<extra></extra>",
            colorbar={"title": {"text": "logits"}},
        )
    )
    fig.update_layout(
        title=f"per head: each head's share of {_target(res)}",
        xaxis={"title": "head", "dtick": 1},
        yaxis={"title": "layer", "dtick": 1},
        height=max(280, 80 + 36 * len(res.layers)),
        margin={"t": 60, "b": 10},
    )
    return fig


def graph_figure(res) -> go.Figure:
    """Nodes at (position, layer); each kept edge a segment whose width follows its share
    (grouped in four widths per colour), the answer's route red, the rest grey."""
    g = res.graph
    toks = [plain(repr(t)) for t in res.tokens]
    fig = go.Figure()
    bins = [0.0, 0.25, 0.5, 0.75, 1.01]
    for on, color in ((False, GREY), (True, ROUTE)):
        for lo, hi, width in zip(bins, bins[1:], (1, 2.5, 4, 6)):
            xs, ys = [], []
            for e in g.edges:
                if e.route == on and lo <= e.weight < hi:
                    xs += [e.source[1], e.target[1], None]
                    ys += [e.source[0], e.target[0], None]
            if xs:
                fig.add_trace(go.Scatter(
                    x=xs, y=ys, mode="lines", line={"color": color, "width": width},
                    hoverinfo="skip", showlegend=False,
                    name=f"{'route' if on else 'edges'} {lo:.2f}-{min(hi, 1):.2f}"))  # fmt: skip
    nodes = [(la, p) for la in range(g.n_layers + 1) for p in range(g.n_positions)]
    into: dict = {}
    for e in g.edges:
        into.setdefault(e.target, []).append(e)
    hover = []
    for la, p in nodes:
        top = sorted(into.get((la, p), []), key=lambda e: -e.weight)[:4]
        lines = "<br>".join(
            f"{e.kind} from layer {e.source[0]}, {toks[e.source[1]]}: {e.weight:.2f}" for e in top
        )
        hover.append(f"layer {la}, position {p} {toks[p]}<br>{lines}")
    fig.add_trace(
        go.Scatter(
            x=[p for _, p in nodes],
            y=[la for la, _ in nodes],
            mode="markers",
            marker={
                "size": 12,
                "color": [ROUTE if n in g.route else "white" for n in nodes],
                "line": {"color": "#444", "width": 1},
            },
            customdata=[[la, p] for la, p in nodes],
            text=hover,
            hoverinfo="text",
            showlegend=False,
            name="nodes",
        )
    )
    fig.update_layout(
        title=f"contribution graph: edges carrying ≥ {g.threshold:.2f} of their update; "
        f"red: the route to {_target(res)}",
        xaxis={
            "tickvals": list(range(len(toks))),
            "ticktext": [f"{i}: {t}" for i, t in enumerate(toks)],
            "title": "token",
        },
        yaxis={"title": "layer", "dtick": 1},
        height=max(320, 90 + 60 * (g.n_layers + 1)),
        margin={"t": 60, "b": 10},
        hoverlabel={"align": "left"},
    )
    return fig
