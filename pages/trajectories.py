"""Trajectories: how prompts or tokens move through the layers, in one projected space."""

import numpy as np
import pandas as pd
import streamlit as st

from backend import units
from backend.analysis.projection import DESCRIPTIONS, project, silhouette_per_layer
from backend.figures.trajectory import silhouette_figure, trajectory_figure
from pages import _ui

st.title("Trajectories")
present = _ui.presenting()
sel = _ui.selection()
runs = _ui.require_runs(sel)
if runs is None or runs.empty:
    st.stop()
s = _ui.store()
info = s.get_model(sel.model_id)
n_layers = info["n_layers"]

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "Each point is one **unit** — a prompt (its last-token or mean vector) or a single token "
        "— at one **layer**; a grey line joins the same unit across layers (its trajectory). "
        "All layers are projected into **one shared space**, so you can watch the cloud move. "
        "Use the slider or ▶ to step through layers; colours show the label of each prompt. "
        "Pitfall: a 2-D projection throws most dimensions away — two groups that overlap here "
        "may still be separable; the silhouette chart below measures separation in the full "
        "space.")

c1, c2, c3, c4 = st.columns(4)
with c1:
    unit = _ui.qp_radio("Units", ["prompt", "token"], "unit",
                        format_func=lambda u: {"prompt": "prompts", "token": "tokens"}[u])
with c2:
    method = _ui.qp_select("Projection", list(DESCRIPTIONS), "method")
with c3:
    dims = _ui.qp_radio("Dimensions", [2, 3], "dims")
with c4:
    colour = _ui.qp_select("Colour by", ["label", "group", "layer", "position", "token"],
                           "color")
st.caption(DESCRIPTIONS[method])
if not present:
    lo, hi = _ui.qp_slider("Layer range", "layers", (0, n_layers), 0, n_layers)
    a1, a2, a3 = st.columns(3)
    pool = a1.radio("Pool prompts by", ["last", "mean"], horizontal=True, key="traj_pool",
                    disabled=unit != "prompt")
    standardize = a2.toggle("Standardise each layer", key="traj_std",
                            help="Norms grow with depth; standardising stops late layers from "
                                 "dominating PCA.")
    max_runs = a3.number_input("Token units: prompts", 1, len(runs), min(20, len(runs)),
                               key="traj_max_runs")
else:
    lo, hi, pool, standardize, max_runs = 0, n_layers, "last", False, min(20, len(runs))
layers = list(range(lo, hi + 1))

if unit == "prompt":
    x, meta = units.prompt_units(s, runs, layers, pool)
else:
    runs_l = units.with_token_labels(s, sel.set_name, runs.head(int(max_runs)))
    x, meta = units.token_units(s, runs_l, layers)
n_points = x.shape[0] * x.shape[1]
if n_points > 100_000:
    keep = st.slider("Too many points for a smooth view: units to sample", 100,
                     x.shape[1], 100_000 // x.shape[0], key="traj_sample")
    idx = np.random.default_rng(0).choice(x.shape[1], keep, replace=False)
    x, meta = x[:, idx], meta.iloc[idx].reset_index(drop=True)
    st.warning(f"Showing a random sample of {keep:,} of the units.")


@st.cache_data(show_spinner="Projecting…", max_entries=32)
def _project(key: str, _x, layers, method, dims, standardize):
    return project(_x, layers, method, dims, standardize, seed=0)


key = f"{sel.model_id}|{sel.set_name}|{unit}|{pool}|{layers}|{max_runs}|{standardize}"
try:
    proj = _project(key, x, layers, method, int(dims), standardize)
except ValueError as e:
    st.error(str(e))
    st.stop()
fig = trajectory_figure(proj, meta, colour, layer=layers[-1])
event = _ui.show_figure(fig, "traj_fig", f"trajectories-{sel.set_name}", on_select="rerun",
                        data=pd.concat([meta, pd.DataFrame(
                            proj.coords[-1], columns=list("xyz")[: int(dims)])], axis=1))
st.caption(f"{x.shape[1]:,} {unit} units × {len(layers)} layers = {n_points:,} points, "
           "none dropped" if n_points <= 100_000 else "sampled, see above")

labels = meta["label"].fillna("")
if labels.nunique() > 1:
    sil = silhouette_per_layer(x, labels.to_numpy())
    st.plotly_chart(silhouette_figure(layers, sil), key="traj_sil")
    st.caption(f"Silhouette of the labels at each layer (1 = perfectly separated, 0 = mixed): "
               f"layer {layers[0]}: {sil[0]:.2f} → layer {layers[-1]}: {sil[-1]:.2f}.")

points = (event or {}).get("selection", {}).get("points", []) if event else []
if points:
    picked = sorted({int(p["customdata"]) for p in points if "customdata" in p})
    st.subheader(f"{len(picked)} selected units")
    for i in picked[:30]:
        r = meta.iloc[i]
        c1, c2 = st.columns([4, 1])
        c1.write(f"**{r['label'] or ''}** · {r['text']}" + (f" · token `{r['token']}`"
                                                            if r["pos"] >= 0 else ""))
        with c2:
            _ui.prompt_link(r["run_id"])
else:
    st.caption("Click or lasso points to list their prompts.")
