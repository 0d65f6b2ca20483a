"""Similarity heatmaps with fixed, labelled colour scales (never auto-stretched).

Cosine always spans -1..1 on a diverging scale centred at 0; CKA always spans 0..1. Square
matrices with an ``order`` are drawn in that order; a class label per row becomes a colour
strip above the matrix. Heatmap cells cannot be clicked in Streamlit (streamlit#8760), so
matrices up to ``CLICKABLE_CELLS`` carry an invisible marker per cell whose selection gives
``customdata = row * n_cols + col`` in data indices (see ``cell_of``), not display positions.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backend.analysis.similarity import SimilarityMatrix
from backend.figures._parts import plain

TITLES = {
    "layer-cka": "Linear CKA between layers (same units)",
    "layer-cka-debiased": "Debiased linear CKA between layers (same units)",
    "layer-cosine": "Mean cosine of the same unit at two layers",
    "token": "Cosine between the tokens of one prompt",
    "prompt": "Cosine between prompts (pooled vectors)",
    "model-cka": "Linear CKA: layer of model A vs layer of model B",
    "model-cka-debiased": "Debiased linear CKA: layer of model A vs layer of model B",
    "run": "Cosine between sampled runs",
}
CLICKABLE_CELLS = 40_000  # up to 200 x 200; larger matrices: the page offers a pair picker
ANNOTATE_CELLS = 144
LABEL_COLOURS = [
    "#4C78A8",
    "#F58518",
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#B279A2",
    "#EECA3B",
    "#9D755D",
    "#FF9DA6",
    "#BAB0AC",
]
COSINE_SCALE = [
    [0.0, "#2166ac"],
    [0.25, "#92c5de"],
    [0.5, "#f7f7f7"],
    [0.75, "#f4a582"],
    [1.0, "#b2182b"],
]


def cell_of(customdata, m: SimilarityMatrix) -> tuple[int, int]:
    """(row, col) data indices of a clicked cell from its marker's customdata."""
    return divmod(int(customdata), len(m.cols))


def display_order(m: SimilarityMatrix) -> tuple[list[int], list[int]]:
    """Data indices of the displayed rows and columns, top to bottom and left to right."""
    if m.order is not None and m.values.shape[0] == m.values.shape[1]:
        return list(m.order), list(m.order)
    return list(range(len(m.rows))), list(range(len(m.cols)))


def similarity_figure(
    m: SimilarityMatrix,
    title: str = "",
    row_title: str = "",
    col_title: str = "",
    labels: list | None = None,
) -> go.Figure:
    """Heatmap of ``m``; ``labels`` (one per row, data order) overrides ``m.row_labels``."""
    rows, cols = display_order(m)
    z = m.values[np.ix_(rows, cols)]
    row_names = [plain(m.rows[i]) for i in rows]
    col_names = [plain(m.cols[j]) for j in cols]
    labels = labels if labels is not None else m.row_labels
    labels = None if labels is None else [plain(v) for v in labels]
    title, row_title, col_title = plain(title), plain(row_title), plain(col_title)
    strip = labels is not None and len(rows) == len(cols) and len(set(map(str, labels))) > 1
    fig = make_subplots(
        rows=2 if strip else 1,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.01,
        row_heights=[0.04, 0.96] if strip else None,
    )
    r = 2 if strip else 1
    cosine = m.measure == "cosine"
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=list(range(len(cols))),
            y=list(range(len(rows))),
            zmin=m.vmin,
            zmax=m.vmax,
            zauto=False,
            colorscale=COSINE_SCALE if cosine else "Viridis",
            colorbar={
                "title": {
                    "text": f"{'cosine' if cosine else 'linear CKA'}<br>"
                    f"(fixed {m.vmin:g}…{m.vmax:g})",
                    "side": "right",
                },
                "tickvals": [-1, -0.5, 0, 0.5, 1] if cosine else [0, 0.25, 0.5, 0.75, 1],
                "len": 0.9 if strip else 1.0,
                "y": 0.45 if strip else 0.5,
            },
            hovertemplate="row %{y} × column %{x} (in display order)<br>"
            + f"{m.measure} %{{z:.3f}}<extra></extra>",
            texttemplate="%{z:.2f}" if z.size <= ANNOTATE_CELLS else None,
            hoverongaps=False,
        ),
        row=r,
        col=1,
    )
    if z.size <= CLICKABLE_CELLS:
        _add_click_targets(fig, z, rows, cols, row_names, col_names, m.measure, r)
    if strip:
        _add_label_strip(fig, [labels[i] for i in rows])
    many_x, many_y = len(cols) > 60, len(rows) > 60
    fig.update_xaxes(
        range=[-0.5, len(cols) - 0.5],
        tickvals=list(range(len(cols))),
        ticktext=col_names,
        title=col_title,
        showticklabels=not many_x,
        showgrid=False,
        zeroline=False,
        row=r,
        col=1,
    )
    fig.update_yaxes(
        tickvals=list(range(len(rows))),
        ticktext=row_names,
        title=row_title,
        range=[len(rows) - 0.5, -0.5],
        showticklabels=not many_y,
        showgrid=False,
        zeroline=False,
        row=r,
        col=1,
    )
    fig.update_layout(
        title=title or TITLES.get(m.kind, m.kind),
        height=680,
        plot_bgcolor="#d9d9d9" if np.isnan(z).any() else "white",  # NaN cells: grey
        hoverdistance=-1,  # hover/click anywhere in a cell picks that cell's marker
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        clickmode="event+select",
        dragmode=False,
        legend={"orientation": "h", "y": -0.02, "yanchor": "top"},
    )
    return fig


def _add_click_targets(fig, z, rows, cols, row_names, col_names, measure, r) -> None:
    yy, xx = np.meshgrid(range(len(rows)), range(len(cols)), indexing="ij")
    data = np.repeat(rows, len(cols)) * len(cols) + np.tile(cols, len(rows))
    text = [
        f"{row_names[i]} × {col_names[j]}<br>{measure} {z[i, j]:.3f}"
        for i, j in zip(yy.ravel(), xx.ravel())
    ]
    trace = go.Scattergl if len(data) > 2_500 else go.Scatter  # WebGL for many markers
    fig.add_trace(
        trace(
            x=xx.ravel(),
            y=yy.ravel(),
            mode="markers",
            customdata=data,
            text=text,
            hovertemplate="%{text}<extra></extra>",
            showlegend=False,
            name="cells",
            marker={
                "symbol": "square-open",
                "size": max(4, min(24, 480 // max(len(rows), 1))),
                "color": "rgba(0,0,0,0)",
                "line": {"width": 2},
            },
            selected={"marker": {"color": "black", "opacity": 1}},
            unselected={"marker": {"opacity": 0}},
        ),
        row=r,
        col=1,
    )
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector={"type": "heatmap"})


def _add_label_strip(fig, ordered_labels: list) -> None:
    names = sorted({str(v) for v in ordered_labels})
    colour = {n: LABEL_COLOURS[i % len(LABEL_COLOURS)] for i, n in enumerate(names)}
    k = len(names)
    scale = []
    for i, n in enumerate(names):  # a stepped colour scale: one flat band per label
        scale += [[i / k, colour[n]], [(i + 1) / k, colour[n]]]
    fig.add_trace(
        go.Heatmap(
            z=[[names.index(str(v)) for v in ordered_labels]],
            x=list(range(len(ordered_labels))),
            y=[0],
            zmin=-0.5,
            zmax=k - 0.5,
            colorscale=scale,
            showscale=False,
            text=[[f"label {v}" for v in ordered_labels]],
            hovertemplate="%{text}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    for n in names:  # legend entries for the strip's colours
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=n,
                marker={"symbol": "square", "size": 12, "color": colour[n]},
            ),
            row=1,
            col=1,
        )
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, row=1, col=1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, row=1, col=1)
