"""Layer statistics line charts, with the tokens behind each point on hover."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backend.analysis.stats import LayerStats
from backend.figures._parts import BLUE, GREEN, PURPLE, RED, band, plain


def _massive_hover(st: LayerStats, unit_names: Sequence[str]) -> list[str]:
    out = []
    for li, layer in enumerate(st.layers):
        rows = "<br>".join(
            f"{v:+.1f} at dim {d}, {unit_names[u]}"
            for v, d, u in zip(st.top_values[li], st.top_dims[li], st.top_units[li])
        )
        out.append(
            f"layer {layer}: max |value| {st.max_abs[li]:.1f} = "
            f"{st.massive_ratio[li]:.0f}× the median {st.median_abs[li]:.3f}<br>{rows}"
        )
    return out


def stats_figure(st: LayerStats, unit_names: Sequence[str]) -> go.Figure:
    """Norms (median and 5–95% band), massive-activation ratio (log), effective rank,
    anisotropy; ``unit_names[u]`` describes unit (token) u for the hover."""
    unit_names = [plain(n) for n in unit_names]
    x = list(st.layers)
    fig = make_subplots(
        rows=2,
        cols=2,
        vertical_spacing=0.16,
        subplot_titles=(
            "norm of the residual stream (median, 5–95%)",
            "massive activations: max |value| / median |value|",
            "effective rank",
            "anisotropy (mean pairwise cosine)",
        ),
    )
    q = st.norm_quantiles
    fig.add_trace(band(x, q[:, 0], q[:, 4], "rgba(37,99,235,0.15)"), 1, 1)
    norm_hover = [
        f"layer {L}: median {m:.2f} (5–95%: {lo:.2f}–{hi:.2f})<br>longest: {unit_names[u]}"
        for L, m, lo, hi, u in zip(x, q[:, 2], q[:, 0], q[:, 4], st.max_norm_unit)
    ]
    fig.add_trace(
        go.Scatter(
            x=x,
            y=q[:, 2],
            mode="lines+markers",
            showlegend=False,
            hovertext=norm_hover,
            hoverinfo="text",
            line={"color": BLUE},
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=st.massive_ratio,
            mode="lines+markers",
            showlegend=False,
            hovertext=_massive_hover(st, unit_names),
            hoverinfo="text",
            line={"color": RED},
        ),
        1,
        2,
    )
    fig.update_yaxes(type="log", row=1, col=2)
    fig.add_trace(
        go.Scatter(
            x=x,
            y=st.effective_rank,
            mode="lines+markers",
            showlegend=False,
            line={"color": GREEN},
            hovertemplate="layer %{x}: %{y:.1f}<extra></extra>",
        ),
        2,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=st.anisotropy,
            mode="lines+markers",
            showlegend=False,
            line={"color": PURPLE},
            hovertemplate="layer %{x}: %{y:.3f}<extra></extra>",
        ),
        2,
        2,
    )
    fig.update_yaxes(range=[min(-0.1, float(st.anisotropy.min()) - 0.05), 1], row=2, col=2)
    for r in (1, 2):
        for c in (1, 2):
            fig.update_xaxes(title_text="layer", dtick=1, row=r, col=c)
    fig.update_layout(
        height=640, margin={"l": 10, "r": 10, "t": 50, "b": 10}, hoverlabel={"align": "left"}
    )
    return fig
