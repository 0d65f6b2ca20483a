"""Prompt page: one run's tokens, and the norm of every token at every layer."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from backend.figures._parts import plain
from pages import _ui

st.title("Prompt")
s = _ui.store()
run_id = st.query_params.get("run")
if run_id is None:
    sel = _ui.selection()
    runs = _ui.require_runs(sel)
    if runs is None or runs.empty:
        st.stop()
    labels = [
        f"{r.idx}: {r.text[:80]}" + (f"  [{r.label}]" if r.label else "") for r in runs.itertuples()
    ]
    pick = st.selectbox("Prompt", range(len(runs)), format_func=lambda i: labels[i])
    run_id = runs["run_id"].iloc[pick]

run = s.get_run(run_id)
if run is None:
    st.error(
        f"No run '{_ui.md(run_id)}' in the cache. It may have been deleted; pick another prompt."
    )
    st.stop()
info = s.get_model(run["model_id"]) or {}
toks = s.tokens(run_id)
h = s.run_layers(run_id)  # (n_layers + 1, n_tokens, d_model)
norms = np.linalg.norm(h, axis=-1)

st.caption(
    f"model **{_ui.md(info.get('ref', '?'))}** · {run['kind']} run {_ui.md(run_id)} · "
    f"{run['n_tokens']} tokens · {h.shape[0]} layers (0 = embeddings)"
    + (" · **truncated**" if run["truncated"] else "")
)
chips = " ".join(
    f"<span style='padding:2px 4px;margin:1px;border-radius:4px;background:"
    f"{'#eee' if sp else '#dbeafe'};font-family:monospace'>{_ui.html_text(t)}</span>"
    for t, sp in zip(toks["token"], toks["is_special"])
)
st.markdown(chips, unsafe_allow_html=True)

xlabels = [plain(f"{i}:{t}") for i, t in zip(toks["pos"], toks["token"])]
fig = go.Figure(
    go.Heatmap(
        z=norms,
        x=xlabels,
        y=list(range(h.shape[0])),
        colorscale="Viridis",
        colorbar=dict(title="‖h‖"),
        hovertemplate="token %{x}<br>layer %{y}<br>norm %{z:.2f}<extra></extra>",
    )
)
fig.update_layout(
    title="Norm of each token's hidden state at each layer",
    xaxis_title="token",
    yaxis_title="layer",
    height=160 + 22 * h.shape[0],
    margin=dict(t=40, b=40),
)
st.plotly_chart(fig)
st.caption(
    "Norms usually grow with depth; a token far brighter than its neighbours at every "
    "layer (often the first) is a typical attention sink with massive activations."
)
