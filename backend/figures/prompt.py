"""The Prompt page's figure: the norm of each token's hidden state at each layer."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from backend.figures._parts import plain


def norms_figure(norms: np.ndarray, positions, tokens) -> go.Figure:
    """Heatmap of ``norms`` (n_layers + 1, n_tokens); x = "pos:token" of each token."""
    xlabels = [plain(f"{i}:{t}") for i, t in zip(positions, tokens)]
    fig = go.Figure(
        go.Heatmap(
            z=norms,
            x=xlabels,
            y=list(range(norms.shape[0])),
            colorscale="Viridis",
            colorbar=dict(title="‖h‖"),
            hovertemplate="token %{x}<br>layer %{y}<br>norm %{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Norm of each token's hidden state at each layer",
        xaxis_title="token",
        yaxis_title="layer",
        height=160 + 22 * norms.shape[0],
        margin=dict(t=40, b=40),
    )
    return fig
