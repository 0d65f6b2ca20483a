"""Probe charts: accuracy per layer with its interval and every control on one chart; the
confusion matrix and class-score distributions at one layer."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from backend.analysis.probes import ProbeResult, confusion
from backend.figures._parts import BLUE, GREY, RED, band, plain


def _hover(res: ProbeResult) -> list[str]:
    task = res.control_task if res.control_task is not None else [None] * len(res.layers)
    return [
        f"layer {L}<br>accuracy {a:.3f} [{lo:.3f}, {hi:.3f}]<br>macro-F1 {f:.3f}"
        f"<br>shuffled control {c:.3f}<br>selectivity {a - c:+.3f}"
        + ("" if t is None else f"<br>control task {t:.3f}<br>selectivity vs task {a - t:+.3f}")
        for L, a, lo, hi, f, c, t in zip(
            res.layers, res.accuracy, res.ci_low, res.ci_high, res.macro_f1, res.control, task
        )
    ]


def interval_name(res: ProbeResult) -> str:
    """The band's legend entry: what the interval is (bootstrap over prompts, Wilson ...)."""
    how = res.interval_method.split(" (")[0] if res.interval_method else ""
    return f"95% interval ({how})" if how else "95% interval"


def probe_figure(
    res: ProbeResult, twin: ProbeResult | None = None, twin_name: str = "", title: str = ""
) -> go.Figure:
    """Accuracy with its 95% band, shuffled-label control, the control task (token probes),
    majority baseline and (optional) the same probe on a baseline model (the untrained twin)
    — one glance."""
    twin_name, title = plain(twin_name), plain(title)
    x = list(res.layers)
    fig = go.Figure()
    fig.add_trace(band(x, res.ci_low, res.ci_high, "rgba(37,99,235,0.18)", interval_name(res)))
    fig.add_trace(
        go.Scatter(
            x=x,
            y=res.accuracy,
            mode="lines+markers",
            name="probe accuracy",
            line={"color": BLUE, "width": 3},
            hovertext=_hover(res),
            hoverinfo="text",
        )
    )
    if twin is not None:
        tx = list(twin.layers)
        fig.add_trace(band(tx, twin.ci_low, twin.ci_high, "rgba(220,38,38,0.12)", ""))
        fig.add_trace(
            go.Scatter(
                x=tx,
                y=twin.accuracy,
                mode="lines+markers",
                name=f"same probe on {twin_name}",
                hovertext=_hover(twin),
                hoverinfo="text",
                line={"color": RED, "dash": "dash"},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=res.control,
            mode="lines+markers",
            name="shuffled labels",
            line={"color": GREY, "dash": "dot"},
            hovertemplate="layer %{x}: control %{y:.3f}<extra></extra>",
        )
    )
    if res.control_task is not None:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=res.control_task,
                mode="lines+markers",
                name="control task (random label per token type)",
                line={"color": "#9333ea", "dash": "dashdot"},
                marker={"symbol": "diamond"},
                hovertemplate="layer %{x}: control task %{y:.3f}<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[x[0], x[-1]],
            y=[res.majority] * 2,
            mode="lines",
            name=f"majority class ({res.majority:.2f})",
            line={"color": "#111827", "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    first = res.first_decodable()
    if first is not None:
        fig.add_vline(
            x=first,
            line={"color": BLUE, "width": 1, "dash": "dot"},
            annotation_text=f"decodable from layer {first}",
            annotation_position="bottom right",
        )
    fig.update_xaxes(dtick=1, title="layer")
    fig.update_layout(
        title=title or "Linear probe accuracy per layer (cross-validated by prompt)",
        yaxis_title="accuracy (out of fold)",
        yaxis_range=[0, 1.04],
        height=440,
        legend={"orientation": "h", "y": -0.18},
        hovermode="closest",
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def confusion_figure(res: ProbeResult, layer: int) -> go.Figure:
    m = confusion(res, layer)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    classes = [plain(c) for c in res.classes]
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=classes,
            y=classes,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            showscale=False,
            text=m,
            texttemplate="%{text}",
            customdata=share,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text} units (%{customdata:.0%} of "
            "the class)<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Confusion at layer {layer} (out of fold)",
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
        height=360,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def score_figure(res: ProbeResult, layer: int) -> go.Figure:
    """Out-of-fold score of the true class, per class: mass near 1 = confidently right."""
    li = res.layers.index(layer)
    fig = go.Figure()
    for c, name in enumerate(plain(c) for c in res.classes):
        s = res.scores[li, res.y == c, c]
        fig.add_trace(
            go.Violin(
                y=s,
                name=f"{name} (n={len(s)})",
                box_visible=True,
                points="outliers",
                spanmode="hard",
                meanline_visible=True,
            )
        )
    chance = 1 / len(res.classes)
    fig.add_hline(
        y=chance,
        line={"color": GREY, "dash": "dot", "width": 1},
        annotation_text="decision boundary" if len(res.classes) == 2 else "chance",
    )
    fig.update_layout(
        title=f"Score of the true class, layer {layer}",
        yaxis_title="score of the true class",
        yaxis_range=[0, 1.02],
        height=360,
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def errors_figure(errors, layer: int) -> go.Figure:
    """Error analysis across layers: one row per unit wrong (or borderline) at ``layer``
    (``views.probes.Result.layer_errors``), one column per layer, colour = the out-of-fold
    margin of the true class (blue right, red wrong, white the decision boundary); rows ordered
    by the first layer from which each stays right; the inspected layer outlined."""
    cols = [c for c in errors.columns if c.startswith("L") and c[1:].isdigit()]
    layers = [int(c[1:]) for c in cols]
    z = errors[cols].to_numpy(dtype=float)
    has_group = "group" in errors.columns
    labels, hover = [], []
    for i, row in enumerate(errors.itertuples(index=False)):
        d = row._asdict()
        raw = str(d["prompt"])
        text = plain(raw)
        group = plain(str(d["group"])) if has_group and d["group"] is not None else ""
        tag = f"[{group}] " if group else ""
        short = plain(raw[:40]) + ("…" if len(raw) > 40 else "")  # cut before escaping
        labels.append(f"{i + 1}. {tag}{short}")
        settles = "never (wrong at the last layer)" if d["settles"] is None else d["settles"]
        hover.append(
            [
                f"{text}<br>true {plain(d['true'])}{'<br>group ' + group if group else ''}"
                f"<br>layer {L}: margin {m:+.2f} ({'right' if m > 0 else 'wrong'})"
                f"<br>right from layer: {settles}"
                for L, m in zip(layers, z[i])
            ]
        )
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=layers,
            y=labels,
            zmin=-1,
            zmax=1,
            zmid=0,
            colorscale="RdBu",
            colorbar={"title": {"text": "margin"}},
            hovertext=hover,
            hoverinfo="text",
        )
    )
    fig.add_vline(x=layer, line={"color": "black", "width": 2, "dash": "dot"})
    fig.update_layout(
        title=f"Wrong or borderline at layer {layer}: the true class's margin at every layer",
        xaxis_title="layer",
        xaxis={"dtick": 1},
        yaxis={"autorange": "reversed", "automargin": True},
        height=min(140 + 22 * len(labels), 1400),
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
    )
    return fig
