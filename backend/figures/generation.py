"""Commitment figures: layer x step similarity, commitment vs consistency."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from backend.figures._parts import plain


def commitment_heatmap(
    sim: np.ndarray, divergence: int | None, title: str = "", spread: bool = False
) -> go.Figure:
    """Layer x step mean pairwise cosine. ``spread``: the colour scale covers the observed
    range (2nd-98th percentile) instead of -1..1, labelled as such, so runs that all sit near
    0.99 still show where they differ."""
    lo, hi, label = -1.0, 1.0, "mean cosine"
    finite = sim[np.isfinite(sim)]
    if spread and finite.size:
        lo, hi = (float(v) for v in np.percentile(finite, [2, 98]))
        if hi - lo < 1e-6:
            lo, hi = lo - 0.01, hi + 0.01
        label = f"mean cosine<br>(scale: observed {lo:.2f}–{hi:.2f})"
    fig = go.Figure(
        go.Heatmap(
            z=sim,
            x=list(range(sim.shape[1])),
            y=list(range(sim.shape[0])),
            zmin=lo,
            zmax=hi,
            colorscale="RdBu_r",
            colorbar=dict(title=label),
            hovertemplate="layer %{y}, step %{x}<br>%{z:.3f}<extra></extra>",
        )
    )
    if divergence is not None:
        fig.add_vline(
            x=divergence - 0.5,
            line=dict(color="black", dash="dash"),
            annotation_text="tokens diverge",
        )
    fig.update_layout(
        title=plain(title) or "How similar the sampled runs are (mean pairwise cosine)",
        xaxis_title="generation step (0 = last prompt token)",
        yaxis_title="layer",
        height=360,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig


def scatter_figure(table, title: str) -> go.Figure:
    import plotly.express as px

    fig = go.Figure()
    colours = px.colors.qualitative.Set1
    for i, lab in enumerate(sorted(table["label"].fillna("(none)").unique())):
        t = table[table["label"].fillna("(none)") == lab]
        fig.add_trace(
            go.Scatter(
                x=t["commitment"],
                y=t["consistency"],
                mode="markers",
                name=plain(lab),
                hovertext=[plain(p) for p in t["prompt"]],
                hoverinfo="text+x+y",
                marker=dict(size=9, opacity=0.75, color=colours[i % len(colours)]),
            )
        )
    fig.update_layout(
        title=plain(title),
        xaxis_title="commitment (cross-run cosine)",
        yaxis_title="consistency (agreeing pairs of outcomes)",
        yaxis_range=[-0.05, 1.05],
        height=420,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig


def correlation_heatmap(grid: np.ndarray) -> go.Figure:
    """Pearson r of commitment with consistency per (layer, step); blank = too few prompts."""
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            zmin=-1,
            zmax=1,
            colorscale="RdBu_r",
            colorbar=dict(title="Pearson r"),
            hovertemplate="layer %{y}, step %{x}<br>r = %{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Which (layer, step) predicts consistency?",
        xaxis_title="generation step",
        yaxis_title="layer",
        height=320,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig


def separation_figure(sep) -> go.Figure:
    """Per layer: nearest-centroid accuracy and AUROC of the outcome signature (0.5 = chance)."""
    layers = list(range(len(sep.accuracy)))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=sep.auroc,
            mode="lines+markers",
            name="AUROC",
            hovertemplate="layer %{x}<br>AUROC %{y:.2f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=sep.accuracy,
            mode="lines+markers",
            name="nearest-centroid accuracy",
            line=dict(dash="dot"),
            hovertemplate="layer %{x}<br>accuracy %{y:.2f}<extra></extra>",
        )
    )
    base = (
        max(sep.success[sep.judged].mean(), 1 - sep.success[sep.judged].mean())
        if sep.judged.any()
        else 0.5
    )
    fig.add_hline(y=0.5, line=dict(color="grey", dash="dash"), annotation_text="chance (AUROC)")
    fig.add_hline(
        y=base,
        line=dict(color="grey", dash="dot"),
        annotation_text="majority outcome",
        annotation_position="bottom right",
    )
    if sep.best_layer is not None:
        fig.add_vline(x=sep.best_layer, line=dict(color="black", width=1))
    fig.update_layout(
        title="How well a run's hidden-state change predicts its outcome (leave one prompt out)",
        xaxis=dict(title="layer", dtick=1),
        yaxis=dict(title="score", range=[0, 1.02]),
        height=360,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig


def tree_figure(tree: dict, title: str = "") -> go.Figure:
    """The prefix tree of a prompt's sampled runs as an icicle: each box is a token after a
    shared prefix, its width the share of runs that took that branch."""
    ids, labels, parents, values, hover = [], [], [], [], []
    total = max(tree["count"], 1)

    def walk(node, path: str, parent: str) -> None:
        for k, child in enumerate(node["children"]):
            cid = f"{path}/{k}"
            ids.append(cid)
            labels.append(plain(child["token"]))
            parents.append(parent)
            values.append(child["count"])
            p = child.get("probability")
            hover.append(
                f"{plain(child['token'])!r}: {child['count']} of {total} runs"
                + (f"<br>model's probability of this branch: {p:.3f}" if p is not None else "")
            )
            walk(child, cid, cid)

    ids.append("root")
    labels.append("prompt")
    parents.append("")
    values.append(tree["count"])
    hover.append(f"all {total} runs")
    walk(tree, "root", "root")
    fig = go.Figure(
        go.Icicle(
            ids=ids,
            labels=labels,
            parents=parents,
            values=values,
            branchvalues="total",
            hovertext=hover,
            hoverinfo="text",
            tiling={"orientation": "v"},
            root={"color": "#e5e7eb"},
        )
    )
    fig.update_layout(
        title=plain(title) or "Where the runs part ways (width = share of runs)",
        height=420,
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig


def strip_figure(strips: list, n_layers: int) -> go.Figure:
    """Runs x generated steps: the layer from which each emitted token was on top (blank:
    sampled off the top). ``strips``: one DataFrame per run (``commitment_strip``)."""
    n_s = max((len(s) for s in strips), default=0)
    z = np.full((len(strips), n_s), np.nan)
    text = [[""] * n_s for _ in strips]
    for r, s in enumerate(strips):
        for k, (tok, layer) in enumerate(zip(s["token"], s["decided_at_layer"])):
            z[r, k] = np.nan if layer is None or layer != layer else layer
            text[r][k] = plain(tok)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            text=text,
            texttemplate="%{text}",
            x=list(range(1, n_s + 1)),
            y=[f"run {r}" for r in range(len(strips))],
            zmin=0,
            zmax=n_layers,
            colorscale="Viridis_r",
            colorbar=dict(title="decided at layer"),
            hovertemplate="%{y}, step %{x}: %{text}<br>on top from layer %{z}<extra></extra>",
        )
    )
    fig.update_layout(
        title="When each emitted token was decided (logit lens; blank = sampled off the top)",
        xaxis_title="generated token",
        yaxis_autorange="reversed",
        height=140 + 28 * len(strips),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig
