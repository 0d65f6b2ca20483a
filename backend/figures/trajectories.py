"""Trajectory figure: every unit's path through the layers in one projected space.

``meta`` describes the units (one row per unit, in the order of ``Projection.coords[:, u]``):
columns ``text``, ``label``, ``group``, ``pos`` (-1 for pooled prompts) and ``token``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from backend.analysis.projection import Projection
from backend.figures._parts import plain, typed, untyped

PALETTE = [
    "#2563eb",
    "#dc2626",
    "#16a34a",
    "#9333ea",
    "#ea580c",
    "#0891b2",
    "#ca8a04",
    "#db2777",
    "#4b5563",
    "#65a30d",
    "#7c3aed",
    "#0d9488",
]
OTHER = "#a3a3a3"
COLOURINGS = ("label", "group", "layer", "position", "token", "feature")
#: continuous colourings: the meta column each reads (feature: a latent's activation, which
#: the caller puts in ``meta["feature"]``)
_CONTINUOUS = {"position": "pos", "feature": "feature"}
META_COLUMNS = ("text", "label", "group", "pos", "token")
LINE = "rgba(120,120,120,0.25)"
LINE_3D = "rgba(70,70,70,0.55)"
#: "Viridis" as plotly's validation spells it out (traces are built as plain dicts)
VIRIDIS = [list(c) for c in go.scattergl.Marker(colorscale="Viridis").colorscale]


def _snip(text: str, n: int = 60) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def hover_texts(meta: pd.DataFrame) -> list[str]:
    """One hover text per unit (the layer is added per trace): token, prompt, label."""
    esc: dict = {}  # units share texts, tokens and labels: escape each distinct one once

    def once(v, cut: bool = False) -> str:
        out = esc.get((v, cut))
        if out is None:
            out = esc[(v, cut)] = plain(_snip(v) if cut else v)
        return out

    out = []
    cols = (meta[c].tolist() for c in ("token", "text", "label", "pos"))  # not Arrow scalars
    for t, text, lab, pos in zip(*cols):
        tok = f"token <b>{once(t)}</b> (pos {pos})<br>" if pos >= 0 else ""
        lab = "" if lab is None or (isinstance(lab, float) and np.isnan(lab)) else once(lab)
        out.append(f"{tok}{once(text, True)}" + (f"<br>label {lab}" if lab != "" else ""))
    return out


def colour_values(meta: pd.DataFrame, colour: str) -> pd.Series:
    """The value each unit is coloured by (categorical, or float for 'position')."""
    if colour in ("label", "group"):
        return meta[colour].fillna("(none)").replace("", "(none)").astype(str)
    if colour == "token":
        return meta["token"].astype(str)
    if colour in _CONTINUOUS:
        return meta[_CONTINUOUS[colour]].astype(float)
    raise ValueError(f"unknown colouring '{colour}': use one of {', '.join(COLOURINGS)}")


def categories(values: pd.Series, max_named: int = len(PALETTE)) -> tuple[list[str], np.ndarray]:
    """Most frequent categories get a colour each; the rest share one 'other' trace, so no
    unit is ever dropped. Returns (names, code per unit); code == len(names) - 1 is 'other'
    when there are more than ``max_named`` values."""
    counts = values.value_counts(sort=True)
    ordered = (
        sorted(counts.index[:max_named], key=str)
        if len(counts) > max_named
        else sorted(counts.index, key=str)
    )
    code = {c: i for i, c in enumerate(ordered)}
    codes = values.map(code).fillna(len(ordered)).astype(int).to_numpy()
    names = [plain(c) for c in ordered]
    if len(counts) > max_named:
        names.append(f"other ({len(counts) - max_named} values)")
    return names, codes


def _trace(three: bool, **props) -> dict:
    """A marker/line trace as a plain dict: go.Scattergl(...) validates and copies every
    array (13 frames x categories of 10k-point arrays: most of a colour change's time)."""
    return {"type": "scatter3d" if three else "scattergl", **props}


def _xyz(c: np.ndarray, three: bool) -> dict:
    """Coordinates as typed-array specs (see ``_parts.typed``: what plotly's serialiser would
    make of them, built without its per-array copies and checks)."""
    d = {"x": typed(c[:, 0]), "y": typed(c[:, 1])}
    if three:
        d["z"] = typed(c[:, 2])
    return d


def _marker_traces(
    proj: Projection, i: int, meta: pd.DataFrame, colour: str, hover: np.ndarray, size: int
) -> list:
    three = proj.dims == 3
    c, layer = proj.coords[i], proj.layers[i]
    tmpl = f"%{{hovertext}}<br>layer {layer}<extra></extra>"
    if colour in _CONTINUOUS:
        return [
            _trace(
                three,
                **_xyz(c, three),
                mode="markers",
                hovertext=hover,
                hovertemplate=tmpl,
                name=f"layer {layer}",
                customdata=typed(np.arange(proj.n_units)),
                marker={
                    "size": size,
                    "color": typed(meta[_CONTINUOUS[colour]].astype(float).to_numpy()),
                    "colorscale": VIRIDIS,
                    "showscale": True,
                    "colorbar": {"title": {"text": colour}},
                },
            )
        ]
    names, codes = categories(colour_values(meta, colour))
    traces = []
    for j, name in enumerate(names):
        m = codes == j
        col = PALETTE[j] if j < len(PALETTE) else OTHER
        traces.append(
            _trace(
                three,
                **_xyz(c[m], three),
                mode="markers",
                name=name,
                legendgroup=name,
                hovertext=hover[m],
                hovertemplate=tmpl,
                customdata=typed(np.flatnonzero(m)),
                marker={"size": size, "color": col},
            )
        )
    return traces


def _frame_traces(proj: Projection, i: int, traces) -> list:
    """Frame i: only the coordinates (and the layer in the hover) change; the units of each
    trace, their colours and hover texts stay, so frames carry no repeated text."""
    three = proj.dims == 3
    c, tmpl = proj.coords[i], f"%{{hovertext}}<br>layer {proj.layers[i]}<extra></extra>"
    return [
        _trace(three, **_xyz(c[untyped(t["customdata"])], three), hovertemplate=tmpl)
        for t in traces
    ]


def _layer_traces(proj: Projection, hover: np.ndarray, size: int) -> list:
    three = proj.dims == 3
    lo, hi = min(proj.layers), max(proj.layers)
    return [
        _trace(
            three,
            **_xyz(proj.coords[i], three),
            mode="markers",
            name=f"layer {layer}",
            hovertext=hover,
            hovertemplate=f"%{{hovertext}}<br>layer {layer}<extra></extra>",
            customdata=typed(np.arange(proj.n_units)),
            marker={
                "size": size,
                "color": typed(np.full(proj.n_units, layer)),
                "cmin": lo,
                "cmax": hi,
                "colorscale": VIRIDIS,
                "showscale": i == 0,
                "colorbar": {"title": {"text": "layer"}},
            },
        )
        for i, layer in enumerate(proj.layers)
    ]


def _line_trace(proj: Projection):
    n_l, n_u, k = proj.coords.shape
    seg = np.full((n_u, n_l + 1, k), np.nan, dtype=np.float32)  # NaN row breaks each line
    seg[:, :n_l] = proj.coords.transpose(1, 0, 2)
    seg = seg.reshape(-1, k)
    # WebGL 3D lines of width 1 in a faint grey vanish against the scene: darker and wider there
    line = {"color": LINE_3D, "width": 3} if k == 3 else {"color": LINE, "width": 1}
    return _trace(
        k == 3,
        **_xyz(seg, k == 3),
        mode="lines",
        hoverinfo="skip",
        showlegend=False,
        line=line,
        name="trajectories",
    )


def _animation(proj: Projection, active: int) -> dict:
    steps = [
        {
            "method": "animate",
            "label": str(L),
            "args": [
                [str(L)],
                {
                    "mode": "immediate",
                    "frame": {"duration": 0, "redraw": True},
                    "transition": {"duration": 0},
                },
            ],
        }
        for L in proj.layers
    ]
    play = {
        "label": "▶ play",
        "method": "animate",
        "args": [
            None,
            {
                "frame": {"duration": 700, "redraw": True},
                "transition": {"duration": 0},
                "fromcurrent": True,
            },
        ],
    }
    pause = {
        "label": "❚❚ pause",
        "method": "animate",
        "args": [[None], {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}],
    }
    return {
        "sliders": [
            {
                "active": active,
                "steps": steps,
                "currentvalue": {"prefix": "layer "},
                "pad": {"t": 30},
                "x": 0.12,
                "len": 0.88,
            }
        ],
        "updatemenus": [
            {
                "type": "buttons",
                "showactive": False,
                "direction": "left",
                "x": 0,
                "y": 0,
                "xanchor": "left",
                "yanchor": "top",
                "pad": {"t": 30},
                "buttons": [play, pause],
            }
        ],
    }


def _ranges(coords: np.ndarray) -> list[list[float]]:
    lo, hi = coords.min(axis=(0, 1)), coords.max(axis=(0, 1))
    pad = (hi - lo) * 0.05 + 1e-6
    return [[float(a), float(b)] for a, b in zip(lo - pad, hi + pad)]


def _title(proj: Projection, shown: str) -> str:
    return (
        f"{proj.n_units:,} units × {len(proj.layers)} layers = {proj.n_points:,} points "
        f"({proj.method}{', standardised' if proj.standardized else ''}; markers: {shown})"
    )


def _unvalidated_figure(traces: list[dict]) -> go.Figure:
    """A figure holding ``traces`` as given (plotly's validation copies and checks each array:
    ~2/3 of a 130k-point figure's build); the layout and every later change (presenter
    styling) are validated as usual. tests/backend/figures/test_trajectories_figure.py checks
    the JSON equals a validated rebuild's."""
    fig = go.Figure(data=traces, _validate=False)
    fig._validate = fig.layout._validate = True
    for t in fig.data:
        t._validate = True
    return fig


def trajectory_figure(
    proj: Projection,
    meta: pd.DataFrame,
    colour: str = "label",
    layer: int | None = None,
    show_lines: bool = True,
    title: str = "",
    marker_size: int = 6,
) -> go.Figure:
    """Lines = each unit's trajectory; markers = the units at ``layer`` (default: the last),
    one animation frame per layer with a slider and a play button. ``colour='layer'`` shows
    every layer's markers at once instead (no frames). Axis ranges cover all layers, so the
    cloud visibly moves. Title: how many units, layers and points are drawn."""
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing or len(meta) != proj.n_units:
        raise ValueError(
            f"meta needs one row per unit ({proj.n_units}) with columns "
            f"{', '.join(META_COLUMNS)}; missing {missing or 'none'}, "
            f"got {len(meta)} rows"
        )
    if colour not in COLOURINGS:
        raise ValueError(f"unknown colouring '{colour}': use one of {', '.join(COLOURINGS)}")
    n_l, three = len(proj.layers), proj.dims == 3
    active = proj.layers.index(layer) if layer in proj.layers else n_l - 1
    hover = np.asarray(hover_texts(meta), dtype=object)
    static = [_line_trace(proj)] if show_lines and n_l > 1 else []
    if colour == "layer":
        markers = _layer_traces(proj, hover, max(marker_size - 1, 2))
    else:
        markers = _marker_traces(proj, active, meta, colour, hover, marker_size)
    fig = _unvalidated_figure(static + markers)
    if colour != "layer":
        idx = list(range(len(static), len(fig.data)))
        fig._frame_objs = tuple(  # fig.frames = ... would validate each frame a second time
            go.Frame(  # each frame retitles the figure, so the title follows the slider
                data=_frame_traces(proj, i, markers),
                name=str(L),
                traces=idx,
                layout={"title": {"text": title or _title(proj, f"layer {L} of {n_l}")}},
            )
            for i, L in enumerate(proj.layers)
        )
        if n_l > 1:
            fig.update_layout(**_animation(proj, active))
    shown = "all layers" if colour == "layer" else f"layer {proj.layers[active]} of {n_l}"
    fig.update_layout(
        title=title or _title(proj, shown),
        height=640,
        # below the plot: a colour bar (position, layer) sits on the right, and the two overlapped
        legend={
            "title": colour,
            "itemsizing": "constant",
            "orientation": "h",
            "yanchor": "top",
            "y": -0.12 if n_l == 1 or colour == "layer" else -0.22,
            "x": 0,
        },
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        dragmode="orbit" if three else "lasso",
        uirevision="trajectories",
    )
    r = _ranges(proj.coords)
    if three:
        fig.update_layout(
            scene={
                "xaxis": {"range": r[0], "title": "1"},
                "yaxis": {"range": r[1], "title": "2"},
                "zaxis": {"range": r[2], "title": "3"},
                "aspectmode": "cube",
            }
        )
    else:
        fig.update_xaxes(title="component 1", zeroline=False, range=r[0])
        fig.update_yaxes(title="component 2", zeroline=False, range=r[1])
    return fig


def silhouette_figure(
    layers,
    values,
    agreement=None,
    chance: float | None = None,
    title: str = "How well the labels separate, per layer",
) -> go.Figure:
    """A small line chart per layer: silhouette (cosine, -1..1, 0 = mixed) and, when given, the
    share of nearest neighbours with the same label, with its chance level dotted."""
    hover = "layer %{x}: %{y:.3f}<extra>%{fullData.name}</extra>"
    fig = go.Figure(
        go.Scatter(
            x=list(layers),
            y=list(values),
            mode="lines+markers",
            name="silhouette",
            line={"color": "#2563eb"},
            hovertemplate=hover,
        )
    )
    if agreement is not None:
        fig.add_trace(
            go.Scatter(
                x=list(layers),
                y=list(agreement),
                mode="lines+markers",
                name="same-label neighbours",
                line={"color": "#16a34a"},
                hovertemplate=hover,
            )
        )
    if chance is not None:
        fig.add_hline(
            y=chance,
            line={"color": "#16a34a", "width": 1, "dash": "dot"},
            annotation_text=f"chance {chance:.2f}",
            annotation_position="bottom right",
        )
    fig.add_hline(y=0, line={"color": "#9ca3af", "width": 1, "dash": "dot"})
    fig.update_xaxes(dtick=1)
    fig.update_layout(
        title=title,
        height=280,
        xaxis_title="layer",
        yaxis_title="score",
        yaxis_range=[-0.2, 1.05],
        legend={"orientation": "h", "y": -0.35},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def highlight_unit(fig: go.Figure, proj: Projection, units, name: str) -> go.Figure:
    """Mark given units (e.g. one prompt opened from the Prompt page) on a trajectory figure:
    their whole path across the drawn layers as a thick black line with a star at each layer,
    added after the animated traces (frames leave it in place)."""
    three = proj.dims == 3
    for n, u in enumerate(units):
        c = proj.coords[:, int(u), :]
        fig.add_trace(
            go.Scatter3d(**_xyz(c, True), mode="lines+markers")
            if three
            else go.Scattergl(**_xyz(c, False), mode="lines+markers"),
        )
        tr = fig.data[-1]
        tr.update(
            name=plain(name) if n == 0 else None,
            showlegend=n == 0,
            legendgroup="highlight",
            line={"color": "black", "width": 4},
            marker={
                "symbol": "diamond" if three else "star",
                "size": 9 if three else 14,
                "color": "black",
            },
            text=[f"layer {L}" for L in proj.layers],
            hovertemplate=plain(name) + " · %{text}<extra></extra>",
        )
    return fig
