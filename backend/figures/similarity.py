"""Similarity heatmaps with fixed, labelled colour scales (never auto-stretched)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from backend.analysis.similarity import SimilarityMatrix

TITLES = {
    "layer-cka": "Linear CKA between layers (same units)",
    "layer-cka-debiased": "Debiased linear CKA between layers",
    "layer-cosine": "Mean cosine of the same unit at two layers",
    "token": "Cosine between the tokens of one prompt",
    "prompt": "Cosine between prompts (pooled vectors)",
    "model-cka": "Linear CKA, layer of model A vs layer of model B",
    "run": "Cosine between sampled runs",
}


def similarity_figure(m: SimilarityMatrix, title: str = "", row_title: str = "",
                      col_title: str = "", labels: list[str] | None = None) -> go.Figure:
    order = list(m.order) if m.order is not None else list(range(len(m.rows)))
    square = m.values.shape[0] == m.values.shape[1] and m.order is not None
    z = m.values[np.ix_(order, order)] if square else m.values
    rows = [str(m.rows[i]) for i in order] if square else [str(r) for r in m.rows]
    cols = [str(m.cols[i]) for i in order] if square else [str(c) for c in m.cols]
    scale = "RdBu_r" if m.vmin < 0 else "Viridis"
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(len(cols))), y=list(range(len(rows))), zmin=m.vmin, zmax=m.vmax,
        colorscale=scale, colorbar=dict(title="cosine" if m.vmin < 0 else "CKA"),
        customdata=np.array([[f"{r} × {c}" for c in cols] for r in rows]),
        hovertemplate="%{customdata}<br>%{z:.3f}<extra></extra>"))
    many = len(cols) > 40
    fig.update_xaxes(tickvals=list(range(len(cols))), ticktext=cols, title=col_title,
                     showticklabels=not many)
    fig.update_yaxes(tickvals=list(range(len(rows))), ticktext=rows, title=row_title,
                     autorange="reversed", showticklabels=not many, scaleanchor="x")
    if labels is not None and square:  # a colour strip of labels above the matrix
        lab = [labels[i] for i in order]
        cats = sorted(set(lab))
        fig.add_trace(go.Heatmap(z=[[cats.index(v) for v in lab]], x=list(range(len(lab))),
                                 y=[-3], showscale=False, colorscale="Turbo",
                                 customdata=[lab], hovertemplate="label %{customdata}<extra></extra>",
                                 yaxis="y"))
    fig.update_layout(title=title or TITLES.get(m.kind, m.kind), height=640,
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig
