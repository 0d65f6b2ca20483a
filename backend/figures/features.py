"""Features figures: the latents' density against their label association, one feature's
activation histogram."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from backend.figures._parts import BLUE, GREEN, RED, plain


def latents_figure(table: pd.DataFrame, chosen: int | None = None) -> go.Figure:
    """One point per latent: density (log) against the best label's AUROC (or the largest
    activation when the set has no labels); the chosen feature in red."""
    t = table[table["density"] > 0]
    has_auroc = t["auroc"].notna().any()
    y = t["auroc"] if has_auroc else t["max_act"]
    hover = [
        f"latent {int(r.latent)}<br>density {r.density:.4f}<br>max {r.max_act:.2f}"
        + (f"<br>AUROC {r.auroc:.3f} ({plain(r.auroc_label)} vs rest)" if has_auroc else "")
        for r in t.itertuples()
    ]
    color = [RED if int(v) == chosen else BLUE for v in t["latent"]]
    fig = go.Figure(
        go.Scattergl(
            x=t["density"],
            y=y,
            mode="markers",
            marker={"color": color, "size": 7, "opacity": 0.75},
            hovertext=hover,
            hoverinfo="text",
            customdata=t["latent"],
        )
    )
    dead = int((table["density"] == 0).sum())
    fig.update_layout(
        title=f"{len(t):,} live latents ({dead:,} never active on this set)",
        xaxis={"title": "density (share of tokens active)", "type": "log"},
        yaxis={
            "title": "AUROC of the best label vs rest (last token)" if has_auroc else "max act.",
        },
        height=420,
        margin={"t": 50},
    )
    if has_auroc:
        fig.add_hline(y=0.5, line={"dash": "dot", "color": "grey"})
    return fig


def histogram_figure(counts: np.ndarray, edges: np.ndarray, feature: int) -> go.Figure:
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(go.Bar(x=centers, y=counts, width=np.diff(edges), marker={"color": GREEN}))
    fig.update_layout(
        title=f"feature {feature}: activations where active ({int(counts.sum()):,} tokens)",
        xaxis={"title": "activation"},
        yaxis={"title": "tokens"},
        height=300,
        margin={"t": 50},
        bargap=0,
    )
    return fig
