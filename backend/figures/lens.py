"""Logit-lens grid and per-layer readout curves (one prompt or a whole set)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backend.analysis.lens import TIE_RTOL, LensResult, LensSummary
from backend.figures._parts import BLUE, GREEN, GREY, RED, band, plain


def _short(s: str, n: int = 10) -> str:
    s = s.strip() or repr(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def lens_figure(
    res: LensResult, tokens: Sequence[str], names: Mapping[int, str] | Sequence[str]
) -> go.Figure:
    """Layers x positions: the top next-token guess in each cell, coloured by its probability;
    hover = top-k with probabilities, KL to the final layer and the final top-1's rank.
    ``names[id]`` gives a token's text."""
    # shorten the raw text, then escape: cutting "&lt;" would show a stray "&l"
    raw_tokens = [str(t) for t in tokens]
    # only the ids the grid shows (a vocabulary has 50k-150k names; escaping all of them
    # was most of a redraw)
    raw = {int(i): str(names[int(i)]) for i in np.unique(res.top_ids)}
    tokens = [plain(t) for t in raw_tokens]
    names = {i: plain(n) for i, n in raw.items()}
    top = res.top_ids[..., 0]
    # near-ties (top-1 and top-2, or the final answer and the top-1, within TIE_RTOL) are
    # shown as ties: the commitment depth counts the final answer as on top there
    tie = res.tied | (res.on_top & (res.final_rank > 0))
    text = [
        [plain(_short(str(raw[i]))) + (" = tie" if t else "") for i, t in zip(row, trow)]
        for row, trow in zip(top, tie)
    ]
    hover = []
    for li, layer in enumerate(res.layers):
        row = []
        for p in range(top.shape[1]):
            cands = "<br>".join(
                f"{names[i]!r} {pr:.3f}" for i, pr in zip(res.top_ids[li, p], res.top_probs[li, p])
            )
            row.append(
                f"layer {layer} · after {p}:{tokens[p]!r}<br>{cands}<br>KL to final "
                f"{res.kl_to_final[li, p]:.2f} · final top-1 rank "
                f"{res.final_rank[li, p]}"
                + (f"<br>= tie: within {TIE_RTOL:.1%} of the top probability" if tie[li, p] else "")
            )
        hover.append(row)
    x = list(range(len(tokens)))
    fig = go.Figure(
        go.Heatmap(
            z=res.top_probs[..., 0],
            x=x,
            y=list(res.layers),
            text=text,
            texttemplate="%{text}",
            zmin=0,
            zmax=1,
            colorscale="Blues",
            customdata=hover,
            xgap=1,
            ygap=1,
            hovertemplate="%{customdata}<extra></extra>",
            colorbar={"title": "P(top)"},
        )
    )
    # one layout update: add_shape per position revalidates every shape so far (quadratic:
    # 11 s for 139 positions)
    fig.update_layout(
        shapes=[
            {
                "type": "line",
                "x0": p - 0.5,
                "x1": p + 0.5,
                "y0": c - 0.5,
                "y1": c - 0.5,
                "line": {"color": RED, "width": 3},
            }
            for p, c in enumerate(res.commitment)
        ]
    )
    fig.update_xaxes(
        tickvals=x,
        ticktext=[plain(_short(t, 8)) for t in raw_tokens],
        tickangle=-45,
        title="input token (the cell shows the guess for the next one)",
    )
    fig.update_yaxes(dtick=1, title="layer")
    fig.update_layout(
        title="Logit lens: top next-token guess per layer (red bar: commitment depth)",
        height=200 + 46 * len(res.layers),
        width=None if len(tokens) < 30 else 60 * len(tokens),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def lens_curves(res: LensResult, position: int | None = None) -> go.Figure:
    """KL to the final layer, entropy, and the 1-based position of the final top-1 in each
    layer's ranking (log axis), over all positions (mean; median for the rank) and one chosen
    position (dashed)."""
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "KL to final (nats)",
            "entropy (nats)",
            "rank of the final top-1 (1 = top)",
        ),
    )
    x = list(res.layers)
    series = (res.kl_to_final, res.entropy, res.final_rank + 1)
    for col, vals in enumerate(series, start=1):
        agg = np.median(vals, 1) if col == 3 else vals.mean(1)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=agg,
                mode="lines+markers",
                name="all positions",
                showlegend=col == 1,
                line={"color": BLUE},
            ),
            row=1,
            col=col,
        )
        if position is not None:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=vals[:, position],
                    mode="lines+markers",
                    name=f"position {position}",
                    showlegend=col == 1,
                    line={"color": RED, "dash": "dash"},
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=col)
    fig.update_yaxes(type="log", dtick=1, row=1, col=3)
    fig.update_layout(
        height=320,
        legend={"orientation": "h", "y": -0.3},
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def summary_figure(s: LensSummary, set_name: str = "") -> go.Figure:
    """A set's lens per layer: KL (median and quartiles), entropy, share of positions whose
    top-1 already is the final answer, and where positions commit."""
    set_name = plain(set_name)
    x = list(s.layers)
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "KL to final (median, 25–75%)",
            "top-1 = final top-1 (share)",
            "commitment depth (positions)",
        ),
    )
    q = s.kl_quantiles
    fig.add_trace(band(x, q[:, 0], q[:, 2], "rgba(37,99,235,0.15)"), 1, 1)
    fig.add_trace(
        go.Scatter(x=x, y=q[:, 1], mode="lines+markers", showlegend=False, line={"color": BLUE}),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=s.agreement,
            mode="lines+markers",
            showlegend=False,
            line={"color": GREEN},
            hovertemplate="layer %{x}: %{y:.0%}<extra></extra>",
        ),
        1,
        2,
    )
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.add_trace(
        go.Bar(
            x=x,
            y=s.commitment_counts,
            marker_color=RED,
            showlegend=False,
            hovertemplate="%{y} positions commit at layer %{x}<extra></extra>",
        ),
        1,
        3,
    )
    for c in (1, 2, 3):
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=c)
    fig.update_layout(
        title=f"Logit lens over {s.n_positions:,} positions"
        + (f" of {set_name}" if set_name else ""),
        height=340,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
    )
    return fig


def tuned_kl_figure(layers, kl_logit, kl_tuned, n_test: int) -> go.Figure:
    """Per-layer mean KL(final || lens) of the logit and the tuned lens on held-out prompts."""
    x = list(layers)
    fig = go.Figure()
    for y, name, color, dash in (
        (kl_logit, "logit lens", GREY, "dot"),
        (kl_tuned, "tuned lens", BLUE, "solid"),
    ):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=list(y),
                mode="lines+markers",
                name=name,
                line={"color": color, "dash": dash},
                hovertemplate=f"layer %{{x}}: {name} KL %{{y:.3f}} nats<extra></extra>",
            )
        )
    fig.update_xaxes(dtick=1, title="layer")
    fig.update_layout(
        title=f"KL to the final layer, logit vs tuned lens ({n_test} held-out prompts)",
        yaxis_title="mean KL (nats)",
        height=320,
        legend={"orientation": "h", "y": -0.25},
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def tuned_curve_figure(steps, kl, best_step: int) -> go.Figure:
    """The tuned lens's held-out KL (summed over the trained layers) during training, with
    the step whose translators were kept (early stopping)."""
    fig = go.Figure(
        go.Scatter(
            x=list(map(int, steps)),
            y=list(map(float, kl)),
            mode="lines+markers",
            name="held-out KL",
            line={"color": BLUE},
            hovertemplate="step %{x}: held-out KL %{y:.4f} nats<extra></extra>",
        )
    )
    fig.add_vline(x=int(best_step), line={"color": GREY, "dash": "dot"})
    fig.update_layout(
        title=f"Tuned-lens training: held-out KL per step (kept: step {int(best_step)})",
        xaxis_title="training step",
        yaxis_title="KL summed over layers (nats)",
        height=300,
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig
