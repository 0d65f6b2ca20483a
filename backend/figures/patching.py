"""Patching heatmap: normalised recovery per layer × position, the patched top tokens on hover."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from backend.figures._parts import plain


def patching_figure(res) -> go.Figure:
    """``res``: a ``views.patching.Result``. Colour = recovery on a fixed diverging scale
    (-1 .. 1, white at 0, red = the clean behaviour returns), so figures compare at a glance."""
    rec = res.recovery
    toks = [plain(repr(t)) for t in res.tokens]
    corr = [plain(repr(t)) for t in res.corrupted_tokens]
    x = [f"{p}: {toks[p]}" for p in res.positions]
    hover = [
        [
            f"layer {layer}, position {p}: clean {toks[p]} into corrupted {corr[p]}<br>"
            f"recovery {rec[li, pi]:+.3f} (metric {res.patched[li, pi]:+.3f})<br>"
            + "<br>".join(
                f"{plain(repr(t))} {pr:.3f}"
                for t, pr in zip(res.top_tokens[li][pi], res.top_probs[li, pi])
            )
            for pi, p in enumerate(res.positions)
        ]
        for li, layer in enumerate(res.layers)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=np.clip(rec, -1.5, 1.5),
            x=x,
            y=list(res.layers),
            text=hover,
            hoverinfo="text",
            colorscale="RdBu",
            reversescale=True,
            zmin=-1,
            zmax=1,
            zmid=0,
            colorbar={"title": {"text": "recovery"}},
        )
    )
    fig.update_layout(
        title={
            "text": f"logit({plain(repr(res.answer))}) − logit({plain(repr(res.against))}) "
            "recovered by patching one clean cell"
        },
        xaxis={"title": {"text": "position: clean token"}, "type": "category"},
        yaxis={"title": {"text": "layer"}, "dtick": 1},
        height=max(320, 60 + 36 * len(res.layers)),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        hoverlabel={"align": "left"},
    )
    return fig
