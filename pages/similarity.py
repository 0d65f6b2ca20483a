"""Similarity: heatmaps across layers, tokens, prompts and models."""

import streamlit as st

from backend import models, similarity_views
from backend.errors import LayerScopeError
from backend.figures.similarity import similarity_figure
from backend.worker import JobSpec
from pages import _ui

HELP = {
    "layer-cka": "Each cell compares two layers on the same prompts with linear CKA "
                 "(1 = the same representation up to rotation and scale, 0 = unrelated). "
                 "Bright blocks are groups of layers that agree; a sharp edge is where the "
                 "representation changes fast.",
    "layer-cka-debiased": "As CKA, with the debiased estimator: less inflated when there are few "
                          "prompts compared with the model's width.",
    "layer-cosine": "Mean cosine between the same prompt's vectors at two layers: how far each "
                    "vector turns between layers (cosine ignores length).",
    "prompt": "Each cell is the cosine between two prompts' pooled vectors at one layer, "
              "ordered so that similar prompts sit together; the strip on top shows labels. "
              "Blocks along the diagonal are clusters; a lone line is an outlier.",
    "token": "Cosine between every pair of tokens of one prompt at one layer.",
    "model-cka": "Layer of model A (rows) against layer of model B (columns), same prompts. "
                 "Networks trained from different seeds share subspaces, not neurons — CKA "
                 "ignores rotations, so it can see that. Compare the second seed with the "
                 "untrained model: trained twins keep a bright diagonal, the untrained one "
                 "falls off with depth.",
}

st.title("Similarity")
present = _ui.presenting()
sel = _ui.selection()
runs = _ui.require_runs(sel)
if runs is None or runs.empty:
    st.stop()
s = _ui.store()
n_layers = s.get_model(sel.model_id)["n_layers"]

kind = _ui.qp_select("Heatmap", list(similarity_views.KINDS), "kind")
with st.expander("What am I looking at?", expanded=present):
    st.markdown(HELP[kind] + " Colour scales are fixed (0..1 for CKA, −1..1 for cosine), so "
                "two heatmaps can be compared by eye. Pitfall: high similarity of pooled "
                "vectors can come from a shared direction (anisotropy), not shared meaning.")
layer, other, other_id, run_id, order = None, None, None, None, "cluster"
cols = st.columns(3)
if kind in ("prompt", "token"):
    with cols[0]:
        layer = _ui.qp_int("Layer", "layer", n_layers, 0, n_layers)
if kind == "prompt":
    with cols[1]:
        order = _ui.qp_radio("Order", ["cluster", "label"], "order")
if kind == "token":
    with cols[1]:
        labels = [f"{r.idx}: {r.text[:60]}" for r in runs.itertuples()]
        pick = st.selectbox("Prompt", range(len(runs)), format_func=lambda i: labels[i],
                            key="sim_prompt")
        run_id = runs["run_id"].iloc[pick]
if kind == "model-cka":
    with cols[1]:
        choices = [m for m in _ui.model_choices(s) if m != sel.model]
        default = "demo-seed1" if "demo-seed1" in choices else (choices[0] if choices else None)
        other = _ui.qp_select("Compare with", choices, "other", default=default)
    if other is None:
        st.info("Run a second model on this set first (Run page).")
        st.stop()
    row = s.find_model(other)
    other_runs = s.set_runs(sel.set_name, row["model_id"]) if row else []
    if len(other_runs) < len(runs):
        st.info(f"**{other}** has no activations for **{sel.set_name}** yet.")
        if st.button(f"Compute {sel.set_name} on {other}", type="primary", key="sim_other"):
            _ui.submit(JobSpec(model=other, set_name=sel.set_name))
        for p in _ui.worker().active_jobs():
            _ui.job_panel(p.job_id)
        st.stop()
    other_id = row["model_id"]


@st.cache_data(show_spinner="Computing similarities…", max_entries=64)
def _compute(model_id, set_name, kind, layer, other_id, run_id, order, n_runs):
    return similarity_views.compute(_ui.store(), kind, model_id, set_name, layer, other_id,
                                    run_id=run_id, order=order)


try:
    m, meta = _compute(sel.model_id, sel.set_name, kind, layer, other_id, run_id, order,
                       len(runs))
except LayerScopeError as e:
    st.error(str(e))
    st.stop()
row_t, col_t = {"model-cka": (f"{sel.model} layer", f"{other} layer")}.get(
    kind, ("layer", "layer") if kind.startswith("layer") else ("", ""))
labels = meta["label"].fillna("").tolist() if kind == "prompt" else None
fig = similarity_figure(m, row_title=row_t, col_title=col_t, labels=labels)
import pandas as pd  # noqa: E402

data = pd.DataFrame(m.values, index=[str(r) for r in m.rows], columns=[str(c) for c in m.cols])
event = _ui.show_figure(fig, "sim_fig", f"similarity-{kind}", on_select="rerun",
                        data=data.reset_index(names="row"))
st.caption(f"{m.values.shape[0]} × {m.values.shape[1]} cells"
           + (f" from {len(runs)} prompts" if kind != "token" else ""))

pts = (event or {}).get("selection", {}).get("points", []) if event else []
if pts and kind in ("prompt", "token"):
    p = pts[0]
    order_ = list(m.order) if m.order is not None else list(range(len(m.rows)))
    i, j = order_[int(p["y"])], order_[int(p["x"])]
    st.subheader("Selected pair")
    st.write(f"{m.rows[i]}  ×  {m.cols[j]}: **{m.values[i, j]:.3f}**")
    if kind == "prompt":
        for k in (i, j):
            _ui.prompt_link(meta["run_id"].iloc[k], f"open prompt {meta['idx'].iloc[k]}")
    else:
        _ui.prompt_link(run_id)
elif kind in ("prompt", "token"):
    st.caption("Click a cell to see the pair.")
