"""Training-view figures: checkpoint step on x everywhere (one category per checkpoint, so the
heatmaps and the behaviour chart line up), layer on y for the heatmaps."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backend.figures._parts import BLUE, GREEN, GREY, RED, plain
from backend.figures.trajectories import trajectory_figure
from backend.views.training import Result

LAYER_COLOURS = ["#9ca3af", "#60a5fa", "#2563eb", "#7c3aed", "#db2777", "#ea580c", "#16a34a"]


def _x(res: Result) -> list[str]:
    return [str(s) for s in res.steps]


def _heat(res: Result, z: np.ndarray, name: str, zmin: float, zmax: float, scale: str, **kw):
    """One heatmap trace: z (n_checkpoints, n_layers) drawn with steps on x, layers on y."""
    x, y = _x(res), [str(L) for L in res.layers]
    text = [[f"step {s}, layer {L}<br>{name} {v:.3f}" for s, v in zip(x, col)] for L, col in zip(y, z.T)]  # fmt: skip
    return go.Heatmap(
        z=z.T, x=x, y=y, zmin=zmin, zmax=zmax, colorscale=scale, hovertext=text,
        hoverinfo="text", **kw,
    )  # fmt: skip


def _axes(fig: go.Figure, cols: int, title_y: str = "layer") -> None:
    for c in range(1, cols + 1):
        fig.update_xaxes(title="training step (checkpoint)", type="category", row=1, col=c)
    fig.update_yaxes(title=title_y, type="category", row=1, col=1)


def _two_heatmaps(res: Result, left, right, titles, names, bar_title: str, scale: str):
    """Two checkpoint × layer heatmaps side by side on one fixed 0…1 scale (one colour bar)."""
    fig = make_subplots(
        rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06, subplot_titles=titles
    )
    bar = {"title": bar_title, "len": 0.9}
    fig.add_trace(_heat(res, left, names[0], 0, 1, scale, colorbar=bar), 1, 1)
    fig.add_trace(_heat(res, right, names[1], 0, 1, scale, showscale=False), 1, 2)
    _axes(fig, 2)
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


def probe_figure(res: Result) -> go.Figure:
    """Probe accuracy per (checkpoint, layer) next to the same probe on shuffled labels."""
    return _two_heatmaps(
        res, res.probe_accuracy, res.probe_control,
        ("probe accuracy (cross-validated)", "shuffled-label control"),
        ("accuracy", "shuffled control"), "accuracy", "Viridis",
    )  # fmt: skip


def behaviour_figure(res: Result) -> go.Figure:
    """Answer accuracy and the best layer's probe accuracy (left axis) and held-out loss
    (right axis) per checkpoint: does the representation rise before the behaviour?"""
    x = _x(res)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    acc = res.behaviour_series("answer_accuracy")
    if np.isfinite(acc).any():
        fig.add_trace(
            go.Scatter(x=x, y=acc, name="answer accuracy (behaviour)", mode="lines+markers",
                       line={"color": RED, "width": 3}),
            secondary_y=False,
        )  # fmt: skip
    best = [p.best_layer() for p in res.probes]
    fig.add_trace(
        go.Scatter(
            x=x, y=res.best_probe, name="probe accuracy at the best layer", mode="lines+markers",
            line={"color": BLUE, "width": 3}, hovertext=[f"best layer {b}" for b in best],
        ),
        secondary_y=False,
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=x, y=res.probe_control.max(axis=1), name="shuffled control (best layer)",
                   mode="lines", line={"color": GREY, "dash": "dot"}),
        secondary_y=False,
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=x, y=res.behaviour_series("heldout_loss"), name="held-out loss (nats/token)",
                   mode="lines+markers", line={"color": GREEN, "dash": "dash"}),
        secondary_y=True,
    )  # fmt: skip
    fig.update_yaxes(title="accuracy", range=[0, 1.02], secondary_y=False)
    fig.update_yaxes(title="loss (nats/token)", secondary_y=True, rangemode="tozero")
    fig.update_xaxes(title="training step (checkpoint)", type="category")
    fig.update_layout(
        height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.25, "x": 0},
    )  # fmt: skip
    return fig


def cka_figure(res: Result) -> go.Figure:
    """Per layer, linear CKA of each checkpoint to the final one and to the previous one."""
    return _two_heatmaps(
        res, res.cka_final, res.cka_previous,
        (f"CKA to the final checkpoint ({plain(res.refs[-1])})", "CKA to the previous checkpoint"),
        ("CKA to final", "CKA to previous"), "CKA", "Magma",
    )  # fmt: skip


def stats_figure(res: Result) -> go.Figure:
    """Massive-activation ratio (log), effective rank and anisotropy over training, a line per
    layer."""
    names = ("massive_ratio", "effective_rank", "anisotropy")
    fig = make_subplots(
        rows=1, cols=3, horizontal_spacing=0.07,
        subplot_titles=("max |activation| / median |activation|", "effective rank",
                        "anisotropy (mean pairwise cosine)"),
    )  # fmt: skip
    x = _x(res)
    for c, name in enumerate(names, start=1):
        v = res.stat(name)
        for li, layer in enumerate(res.layers):
            fig.add_trace(
                go.Scatter(
                    x=x, y=v[:, li], mode="lines+markers", name=f"layer {layer}",
                    legendgroup=str(layer), showlegend=c == 1,
                    line={"color": LAYER_COLOURS[li % len(LAYER_COLOURS)]},
                    hovertemplate=f"layer {layer}, step %{{x}}: %{{y:.3g}}<extra></extra>",
                ),
                1, c,
            )  # fmt: skip
        fig.update_xaxes(title="training step", type="category", row=1, col=c)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(
        height=380, margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.3, "x": 0},
    )  # fmt: skip
    return fig


def trajectory_over_training(res: Result, colour: str = "label") -> go.Figure:
    """The trajectory view with checkpoints as frames: each prompt's path over training at a
    fixed layer, in one PCA fitted on every checkpoint."""
    proj, n = res.trajectory, len(res.steps)
    title = (
        f"{proj.n_units:,} prompts × {n} checkpoints at layer {res.trajectory_layer} "
        f"(one PCA over all steps); slider: training step"
    )
    fig = trajectory_figure(proj, res.trajectory_meta, colour=colour, title=title)
    if fig.layout.sliders:
        fig.layout.sliders[0].currentvalue.prefix = "step "
    return fig
