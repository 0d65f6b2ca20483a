"""Similarity: heatmaps across layers, tokens, prompts and models."""

import numpy as np
import pandas as pd
import streamlit as st

from backend.figures.similarity import CLICKABLE_CELLS, cell_of, display_order, similarity_figure
from backend.jobs.base import JobSpec
from backend.views import similarity as similarity_view
from backend.views.probes import default_pool
from pages import _ui

NAMES = {
    "layer-cka": "layer × layer: CKA",
    "layer-cosine": "layer × layer: mean cosine",
    "prompt": "prompt × prompt: cosine",
    "token": "token × token: cosine",
    "model-cka": "model × model: CKA",
    "run": "run × run: sampled generations",
}
HELP = {
    "layer-cka": "Each cell compares two layers on the same units with linear CKA (1 = the same "
    "representation up to rotation and scale, 0 = unrelated). Bright blocks are groups of "
    "layers that agree; a sharp edge is where the representation changes fast.",
    "layer-cosine": "Mean cosine between the same unit's vectors at two layers: how far each "
    "vector turns between layers (cosine ignores length, and is not rotation-invariant).",
    "prompt": "Each cell is the cosine between two prompts' pooled vectors at one layer, ordered "
    "so that similar prompts sit together (or by label); the strip on top shows the labels. "
    "Blocks along the diagonal are clusters; a lone line is an outlier.",
    "token": "Cosine between every pair of tokens of one prompt at one layer.",
    "model-cka": "Layer of this model (rows) against layer of another (columns), same units. "
    "Networks trained from different seeds share subspaces, not neurons; CKA ignores "
    "rotations, so it can see that. A second seed keeps a bright diagonal; an untrained "
    "twin falls off after the embedding.",
}
HELP["run"] = (
    "The sampled runs of one prompt (Generation page) against each other: cosine between "
    "their hidden states at one layer and one generation step, after subtracting the "
    "prompt-end state they all share. Runs that settled on the same "
    "continuation form a bright block."
)
UNIT_NAMES = {"tokens": "tokens", "last": "prompts (last token)", "mean": "prompts (mean)"}


def _run_by_run(s, model_id: str) -> None:
    """Run x run cosine of one sampled prompt at (layer, step); the data lives on the
    Generation page, this is its similarity view."""
    req = similarity_view.sampled_requests(s, model_id)
    if req.empty:
        st.info(
            "No sampled generations for this model yet: sample a prompt on the "
            "**Generation** page first."
        )
        st.page_link("pages/generation.py", label="Open the Generation page")
        return
    names = req["name"].tolist()
    i = _ui.qp_select(
        "Sampled prompt", list(range(len(req))), "request", format_func=lambda k: names[k]
    )
    ss, k = similarity_view.run_set(s, model_id, req, i)
    if k is None:
        st.info("This prompt has fewer than two sampled runs.")
        return
    n_l, n_s = ss.prompts[k].commitment.similarity.shape
    a, b = st.columns(2)
    with a:
        layer = _ui.qp_int("Layer", "layer", n_l - 1, 0, n_l - 1)
    with b:
        step = _ui.qp_int(
            "Generation step (0 = last prompt token)", "step", min(1, n_s - 1), 0, n_s - 1
        )
    rr = similarity_view.run_matrix(s, ss, k, layer, step)
    _ui.show_figure(
        similarity_figure(rr),
        "sim_run",
        "similarity-run",
        data=pd.DataFrame(rr.values, index=rr.rows, columns=rr.cols).reset_index(),
    )
    st.caption(
        f"Layer {layer}, step {step}: cosine of what each run added to its hidden state "
        "since the prompt's last token. Blank rows: runs that ended before this step."
    )


st.title("Similarity")
present, sel, s = _ui.presenting(), _ui.selection(), _ui.store()
legacy = st.query_params.get("kind")
if legacy in similarity_view.ALIASES:  # old permalinks: kind=layer-cka-debiased
    st.query_params["kind"], st.query_params["debiased"] = similarity_view.ALIASES[legacy], "1"

if present:  # secondary settings fold away on a projector (the URL still sets them)
    c1 = st.container()
    c2, c3, c4 = st.expander("Heatmap settings", expanded=False).columns(3)
else:
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
with c1:
    kind = _ui.qp_select("Heatmap", [*similarity_view.KINDS, "run"], "kind", format_func=NAMES.get)
with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        HELP[kind] + " Colour scales are fixed (0…1 for CKA, −1…1 for cosine), so two "
        "heatmaps can be compared by eye. Pitfall: pooled vectors often share one big "
        "direction (anisotropy), which makes every cosine look high; **Centre** removes "
        "it."
    )
if kind == "run":  # needs only the sampled prompt, not the whole set's runs
    if sel.model_id is None:
        st.info(f"**{_ui.md(sel.model)}** has nothing in the cache yet.")
    else:
        _run_by_run(s, sel.model_id)
    st.stop()
runs = _ui.require_runs(sel)
if runs is None or runs.empty:
    st.stop()
n_layers = s.get_model(sel.model_id)["n_layers"]
req = {"kind": kind, "model_id": sel.model_id, "set_name": sel.set_name}
with c2:
    if kind in ("layer-cka", "layer-cosine", "model-cka"):
        req["units"] = _ui.qp_radio(
            "Units",
            list(similarity_view.UNITS),
            "units",
            horizontal=False,
            format_func=UNIT_NAMES.get,
            help="Token units skip special tokens such as <bos>.",
        )
    elif kind == "prompt":
        req["units"] = _ui.qp_radio(
            "Pool prompts by",
            ["last", "mean"],
            "units",
            default=default_pool(s.get_model(sel.model_id) or {}),
            horizontal=False,
            help="mean by default for encoders (their last token is [SEP]), else last",
        )
    if kind in ("prompt", "token"):
        req["layer"] = _ui.qp_int("Layer", "layer", n_layers, 0, n_layers)
with c3:
    if kind in ("layer-cka", "model-cka"):
        req["debiased"] = _ui.qp_toggle(
            "Debiased CKA",
            "debiased",
            help="Unbiased HSIC: less inflated when there are few "
            "units compared with the model's width.",
        )
    if kind in ("prompt", "token"):
        req["center"] = _ui.qp_toggle("Centre", "center", help="Subtract the mean vector first.")
    if kind == "prompt":
        req["order"] = _ui.qp_radio(
            "Order", list(similarity_view.ORDERS), "order", horizontal=False
        )
with c4:
    if kind == "token":
        labels = {int(r.idx): f"{r.idx}: {r.text[:60]}" for r in runs.itertuples()}
        pick = _ui.qp_select("Prompt", list(labels), "prompt", format_func=labels.get)
        req["run_id"] = runs.loc[runs["idx"] == pick, "run_id"].iloc[0]
    if kind == "model-cka":
        choices = [m for m in _ui.model_choices(s) if m != sel.model]
        default = "demo-seed1" if "demo-seed1" in choices else None
        other = _ui.qp_select("Compare with", choices, "other", default=default)
        if other is None:
            st.info("Only one model is known; run a second model on this set first.")
            st.stop()

if kind == "model-cka":
    row = s.find_model(other)
    other_runs = s.set_runs(sel.set_name, row["model_id"]) if row else pd.DataFrame()
    if len(other_runs) < len(runs):
        st.info(
            f"**{_ui.md(other)}** has activations for {len(other_runs)} of the {len(runs)} prompts "
            f"of **{_ui.md(sel.set_name)}**; both models need the same prompts."
        )
        if st.button(
            f"Compute {_ui.md(sel.set_name)} on {_ui.md(other)}", type="primary", key="sim_other"
        ):
            _ui.submit(JobSpec(model=other, set_name=sel.set_name))
        for p in _ui.worker().active_jobs():
            _ui.job_panel(p.job_id)
        st.stop()
    req["other_model_id"] = row["model_id"]


request = similarity_view.Request(**req)
view = _ui.compute("similarity", request, len(runs), level="error")
m = view.matrix
title = ""
if kind == "model-cka":
    row_t, col_t = f"{sel.model} layer", f"{other} layer"
    title = f"{'Debiased linear' if request.debiased else 'Linear'} CKA: {sel.model} vs {other}"
else:
    row_t = col_t = "layer" if kind.startswith("layer") else ""
data = view.to_frame()
event = _ui.show_figure(
    similarity_figure(m, title, row_t, col_t),
    "sim_fig",
    f"similarity-{kind}",
    data=data.reset_index(names="row"),
    on_select="rerun",
    selection_mode="points",
)
st.caption(view.caption + (" " + m.note if m.note else ""))
if kind == "prompt" and not request.center:
    off = m.values[~np.eye(len(m.values), dtype=bool)]
    if off.size and off.mean() > 0.9:
        st.info(
            f"Every pair of prompts has cosine ≈ {off.mean():.2f}: their vectors share one "
            "big direction. Turn on **Centre** to see the structure under it."
        )

points = (event or {}).get("selection", {}).get("points", []) if event else []
cell = next((p["customdata"] for p in points if p.get("customdata") is not None), None)
if cell is not None:
    i, j = cell_of(cell, m)
elif m.values.size <= CLICKABLE_CELLS:
    st.caption("Click a cell to see the pair.")
    st.stop()
else:  # too many cells for click targets: pick the pair by position in the heatmap
    rows, cols = display_order(m)
    with st.expander("Pick a pair (this heatmap is too large to click)"):
        a, b = st.columns(2)
        pos_r = a.number_input("Row (from the top)", 0, len(rows) - 1, 0, key="sim_pick_r")
        pos_c = b.number_input("Column (from the left)", 0, len(cols) - 1, 0, key="sim_pick_c")
    if pos_r == pos_c == 0:
        st.stop()
    i, j = rows[int(pos_r)], cols[int(pos_c)]
st.subheader("Selected pair")
st.write(f"**{_ui.md(m.rows[i])}** × **{_ui.md(m.cols[j])}**: {m.measure} **{m.values[i, j]:.3f}**")
if kind == "prompt":
    for k in (i, j):
        u = view.units.iloc[k]
        c1, c2 = st.columns([5, 1])
        c1.write(f"{u['idx']}: {u['text']}" + (f" · *{u['label']}*" if u["label"] else ""))
        with c2:
            _ui.prompt_link(u["run_id"], f"open prompt {u['idx']}")
elif kind == "token":
    st.write(f"Tokens at positions {i} and {j} of: {_ui.md(view.units['text'].iloc[0])}")
    _ui.prompt_link(request.run_id)
elif kind != "model-cka" and i != j:
    st.write(
        f"The units whose vectors differ most between layer {m.rows[i]} and layer {m.cols[j]}:"
    )
    turning = similarity_view.turning_units(s, request, view, int(m.rows[i]), int(m.cols[j]))
    for u in turning.itertuples():
        c1, c2 = st.columns([5, 1])
        tok = f" · position {u.pos}" if request.units == "tokens" else ""
        c1.write(f"cosine {u.cosine:+.2f} · {u.idx}: {_ui.md(u.text)}{_ui.md(tok)}")
        with c2:
            _ui.prompt_link(u.run_id, f"open prompt {u.idx}")
