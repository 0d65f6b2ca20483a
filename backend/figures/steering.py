"""Steering chart: per α, the flip rate of the direction and of its random control, and per
label the share whose first token becomes one of the other label's answers."""

from __future__ import annotations

import plotly.graph_objects as go

from backend.figures._parts import plain


def steering_figure(res) -> go.Figure:
    """``res``: a ``views.steering.Result`` of a set (``flip_rate`` not None)."""
    if res.flip_rate is None:
        raise ValueError("The steering chart needs a prompt set (flip rates).")
    kind = plain(res.request.direction)
    fig = go.Figure()
    for key, name in (("direction", f"{kind} direction"), ("control", "random control")):
        fig.add_trace(
            go.Scatter(x=res.alphas, y=res.flip_rate[key], mode="lines+markers", name=name)
        )
    for key, name, dash in (("direction", kind, "dot"), ("control", "random", "dash")):
        for lab, vals in (res.toward or {}).get(key, {}).items():
            fig.add_trace(
                go.Scatter(
                    x=res.alphas,
                    y=vals,
                    mode="lines",
                    line={"dash": dash},
                    name=f"{plain(lab)} → other answer ({name})",
                )
            )
    fig.update_layout(
        title={"text": f"steering at layer {res.request.layer}: first-token flips"},
        xaxis_title="α (units of the layer's typical norm)",
        yaxis_title="share of prompts",
        yaxis_range=[0, 1.02],
        height=380,
    )
    return fig
