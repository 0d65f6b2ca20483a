"""Patching heatmap: normalised recovery per layer × position, the patched top tokens (one pair)
or the interval over pairs on hover; a transparent marker per cell makes a cell clickable
(Streamlit's selection events skip heatmaps), its customdata = (layer, position)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from backend.figures._parts import plain

COMPONENT = {
    "resid": "the residual stream",
    "attn": "the attention output of block L",
    "mlp": "the MLP output of block L",
}


def _metric(res) -> str:
    a = plain(repr(res.answer))
    if res.metric == "prob":
        return f"p({a})"
    return f"logit({a}) − logit({plain(repr(res.against))})"


def _hover(res, toks, corr) -> list[list[str]]:
    rec = res.recovery
    iv = res.interval()
    out = []
    for li, layer in enumerate(res.layers):
        row = []
        for pi, p in enumerate(res.positions):
            head = f"layer {layer}, position {p}: clean {toks[p]} into corrupted {corr[p]}<br>"
            if iv is not None:
                body = (
                    f"mean recovery {rec[li, pi]:+.3f} [{iv.lo[li, pi]:+.3f}, "
                    f"{iv.hi[li, pi]:+.3f}], n = {iv.n_pairs} pairs"
                )
            else:
                body = f"recovery {rec[li, pi]:+.3f} (metric {res.patched[li, pi]:+.3f})"
            tops = "<br>".join(
                f"{plain(repr(t))} {pr:.3f}"
                for t, pr in zip(res.top_tokens[li][pi], res.top_probs[li, pi])
            )
            who = "typed pair's patched top tokens" if iv is not None else "patched top tokens"
            if getattr(res, "method", "exact") == "atp":  # no patched pass, no distribution
                row.append(f"{head}{body}<br><i>attribution patching estimate</i>")
            else:
                row.append(f"{head}{body}<br><i>{who}:</i><br>{tops}")
        out.append(row)
    return out


def patching_figure(res) -> go.Figure:
    """``res``: a ``views.patching.Result``. Colour = recovery on a fixed diverging scale
    (-1 .. 1, white at 0, red = the clean behaviour returns), so figures compare at a glance."""
    rec = res.recovery
    toks = [plain(repr(t)) for t in res.tokens]
    corr = [plain(repr(t)) for t in res.corrupted_tokens]
    x = [f"{p}: {toks[p]}" for p in res.positions]
    hover = _hover(res, toks, corr)
    fig = go.Figure(
        go.Heatmap(
            z=np.clip(rec, -1.5, 1.5),
            x=x,
            y=list(res.layers),
            hoverinfo="skip",
            colorscale="RdBu",
            reversescale=True,
            zmin=-1,
            zmax=1,
            zmid=0,
            colorbar={"title": {"text": "recovery"}},
        )
    )
    xs, ys = np.meshgrid(np.arange(len(x)), np.arange(len(res.layers)))
    fig.add_trace(  # the clickable cells, carrying the hover
        go.Scatter(
            x=[x[i] for i in xs.ravel()],
            y=[res.layers[j] for j in ys.ravel()],
            mode="markers",
            marker={"symbol": "square", "size": 28, "opacity": 0.01, "color": "black"},
            customdata=[[res.layers[j], res.positions[i]] for j, i in zip(ys.ravel(), xs.ravel())],
            text=[hover[j][i] for j, i in zip(ys.ravel(), xs.ravel())],
            hoverinfo="text",
            showlegend=False,
            name="cells",
        )
    )
    n = f", mean of {res.n_pairs} pairs" if res.pair_recovery is not None else ""
    if getattr(res, "method", "exact") == "atp":
        n += " (AtP estimate)"
    text = (
        f"{_metric(res)} with feature {res.request.feature} ablated at one position "
        f"(recovery 1 = no effect){n}"
        if res.component == "feature"
        else f"{_metric(res)} recovered by patching one clean cell of {COMPONENT[res.component]}{n}"
    )
    fig.update_layout(
        title={"text": text},
        xaxis={"title": {"text": "position: clean token"}, "type": "category"},
        yaxis={"title": {"text": "layer"}, "dtick": 1},
        height=max(320, 60 + 36 * len(res.layers)),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        hoverlabel={"align": "left"},
        clickmode="event+select",
    )
    return fig


def distribution_figure(dist) -> go.Figure:
    """``dist``: a ``views.patching.CellDistribution``: the patched next-token probabilities
    next to the clean and corrupted runs', one group of bars per token."""
    names = [plain(repr(t)) for t in dist.tokens]
    fig = go.Figure()
    for label, vals, color in (
        ("patched", dist.patched, "#dc2626"),
        ("clean", dist.clean, "#2563eb"),
        ("corrupted", dist.corrupted, "#6b7280"),
    ):
        fig.add_trace(
            go.Bar(
                x=names,
                y=vals,
                name=label,
                marker_color=color,
                hovertemplate=f"%{{x}}: {label} %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        title={
            "text": f"next token with layer {dist.layer}, position {dist.position} of "
            f"{COMPONENT[dist.component]} patched"
        },
        xaxis={"title": {"text": "token"}, "type": "category"},
        yaxis={"title": {"text": "probability"}, "rangemode": "tozero"},
        height=340,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig
