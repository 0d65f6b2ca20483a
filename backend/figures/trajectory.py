"""Trajectory figure: every unit's path through the layers in one projected space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from backend.analysis.projection import Projection

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04",
           "#db2777", "#4b5563", "#65a30d"]
CONTINUOUS = {"layer", "position"}


def _hover(meta: pd.DataFrame, layer: int) -> list[str]:
    out = []
    for t, text, lab, pos in zip(meta["token"], meta["text"], meta["label"], meta["pos"]):
        snip = text if len(text) <= 60 else text[:57] + "…"
        tok = f"token <b>{t}</b> (pos {pos})<br>" if pos >= 0 else ""
        out.append(f"{tok}{snip}<br>layer {layer}" + (f" · label {lab}" if lab else ""))
    return out


def colour_values(meta: pd.DataFrame, colour: str) -> pd.Series:
    if colour == "label":
        return meta["label"].fillna("(none)").astype(str)
    if colour == "group":
        return meta["group"].fillna("(none)").astype(str)
    if colour == "token":
        return meta["token"].astype(str)
    if colour == "position":
        return meta["pos"].astype(float)
    raise ValueError(f"unknown colouring '{colour}'")


def trajectory_figure(proj: Projection, meta: pd.DataFrame, colour: str = "label",
                      layer: int | None = None, show_lines: bool = True,
                      title: str = "") -> go.Figure:
    """Lines = each unit's trajectory; markers = the units at ``layer`` (animated by frames).
    colour 'layer' shows every layer's points at once."""
    n_l, n_u, k = proj.coords.shape
    three = k == 3
    scatter = go.Scatter3d if three else go.Scattergl
    li = proj.layers.index(layer) if layer in proj.layers else n_l - 1
    data = []
    if show_lines and n_l > 1:
        seg = np.full((n_u, n_l + 1, k), np.nan, dtype=np.float32)
        seg[:, :n_l] = proj.coords.transpose(1, 0, 2)
        seg = seg.reshape(-1, k)
        kw = dict(x=seg[:, 0], y=seg[:, 1], mode="lines", hoverinfo="skip", showlegend=False,
                  line=dict(color="rgba(120,120,120,0.25)", width=1), name="trajectories")
        if three:
            kw["z"] = seg[:, 2]
        data.append(scatter(**kw))
    n_static = len(data)

    def markers(i: int) -> list:
        c = proj.coords[i]
        hover = _hover(meta, proj.layers[i])
        if colour in CONTINUOUS:
            vals = colour_values(meta, colour) if colour == "position" else None
            kw = dict(x=c[:, 0], y=c[:, 1], mode="markers", hovertext=hover, hoverinfo="text",
                      marker=dict(size=6, color=vals, colorscale="Viridis", showscale=True,
                                  colorbar=dict(title=colour)), name=f"layer {proj.layers[i]}",
                      customdata=np.arange(n_u))
            if three:
                kw["z"] = c[:, 2]
            return [scatter(**kw)]
        vals = colour_values(meta, colour)
        cats = sorted(vals.unique())[:len(PALETTE)]
        traces = []
        for j, cat in enumerate(cats):
            m = (vals == cat).to_numpy()
            kw = dict(x=c[m, 0], y=c[m, 1], mode="markers", name=str(cat),
                      hovertext=[h for h, keep in zip(hover, m) if keep], hoverinfo="text",
                      marker=dict(size=6, color=PALETTE[j]), customdata=np.flatnonzero(m),
                      legendgroup=str(cat))
            if three:
                kw["z"] = c[m, 2]
            traces.append(scatter(**kw))
        return traces

    if colour == "layer":
        for i in range(n_l):
            c = proj.coords[i]
            kw = dict(x=c[:, 0], y=c[:, 1], mode="markers", name=f"layer {proj.layers[i]}",
                      hovertext=_hover(meta, proj.layers[i]), hoverinfo="text",
                      marker=dict(size=5, color=proj.layers[i], colorscale="Viridis",
                                  cmin=min(proj.layers), cmax=max(proj.layers)),
                      customdata=np.arange(n_u))
            if three:
                kw["z"] = c[:, 2]
            data.append(scatter(**kw))
        fig = go.Figure(data)
    else:
        fig = go.Figure(data + markers(li))
        n_dyn = len(fig.data) - n_static
        frames = []
        for i in range(n_l):
            tr = markers(i)
            tr += [scatter(x=[], y=[], **({"z": []} if three else {}))] * (n_dyn - len(tr))
            frames.append(go.Frame(data=tr[:n_dyn], name=str(proj.layers[i]),
                                   traces=list(range(n_static, n_static + n_dyn))))
        fig.frames = frames
        if n_l > 1:
            steps = [dict(method="animate", label=str(L),
                          args=[[str(L)], dict(mode="immediate", frame=dict(duration=0),
                                               transition=dict(duration=0))])
                     for L in proj.layers]
            fig.update_layout(
                sliders=[dict(active=li, steps=steps, currentvalue=dict(prefix="layer "),
                              pad=dict(t=40))],
                updatemenus=[dict(type="buttons", showactive=False, x=0, y=-0.12,
                                  xanchor="left", yanchor="top", buttons=[
                                      dict(label="▶ play", method="animate", args=[None, dict(
                                          frame=dict(duration=700, redraw=True),
                                          transition=dict(duration=300), fromcurrent=True)]),
                                      dict(label="❚❚", method="animate", args=[[None], dict(
                                          mode="immediate", frame=dict(duration=0))])])])
    n_points = n_u * n_l
    fig.update_layout(
        title=title or f"{n_u:,} units × {n_l} layers = {n_points:,} points ({proj.method})",
        height=640, legend=dict(title=colour), margin=dict(l=10, r=10, t=60, b=10),
        dragmode="lasso" if not three else "orbit")
    if not three:
        fig.update_xaxes(title="component 1", zeroline=False)
        fig.update_yaxes(title="component 2", zeroline=False)
    return fig


def silhouette_figure(layers, values) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(layers), y=values, mode="lines+markers",
                               line=dict(color="#2563eb")))
    fig.update_xaxes(dtick=1)
    fig.update_layout(title="How well the labels separate (silhouette, cosine)", height=260,
                      xaxis_title="layer", yaxis_title="silhouette", yaxis_range=[-0.2, 1],
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig
