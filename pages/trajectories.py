"""Trajectories: how prompts or tokens move through the layers, in one projected space."""

from dataclasses import replace

import numpy as np
import pandas as pd
import streamlit as st

from backend.errors import LayerScopeError
from backend.figures.trajectories import (
    COLOURINGS,
    highlight_unit,
    silhouette_figure,
    trajectory_figure,
)
from backend.jobs.base import JobSpec
from backend.views import trajectories as trajectories_view
from backend.views.probes import default_pool
from pages import _ui

present, sel, runs = _ui.open_view("Trajectories")
s = _ui.store()
n_layers = s.get_model(sel.model_id)["n_layers"]

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "Each point is one **unit** — a prompt (its last-token or mean vector) or a single "
        "token — at one **layer**; a grey line joins the same unit across layers (its "
        "trajectory). All layers share **one projected space**, so you can watch the cloud "
        "move: use the slider or ▶ under the plot. Pitfall: a 2-D picture throws most "
        "dimensions away — groups that overlap here may still be separable; the chart below "
        "the plot measures separation in the full space."
    )

c = st.columns(4)
with c[0]:
    unit = _ui.qp_radio(
        "Units",
        ["prompt", "token"],
        "unit",
        format_func={"prompt": "prompts", "token": "tokens"}.get,
    )
with c[1]:
    method = _ui.qp_select("Projection", trajectories_view.METHODS, "method")
with c[2]:
    dims = _ui.qp_radio("Dimensions", [2, 3], "dims", format_func=lambda d: f"{d}D")
with c[3]:
    colour = _ui.qp_select("Colour by", COLOURINGS, "color")
st.caption(trajectories_view.DESCRIPTIONS[method])
# standardised by default: residual norms grow with depth, and unstandardised PCA shrinks
# layer 0 to one dot next to the late layers (nothing "mixed" to see where the story starts)
# one pooling rule on every page: mean for encoders (their last token is [SEP]), else last
pool = default_pool(_ui.store().get_model(sel.model_id) or {})
standardize, max_runs = True, min(20, len(runs))
lines = method not in ("umap", "aligned-umap")  # joint-UMAP lines are a tangle: on request
if not present:
    lo, hi = _ui.qp_slider("Layer range", "layers", (0, n_layers), 0, n_layers)
    a = st.columns(4)
    with a[0]:
        pool = (
            _ui.qp_radio(
                "Pool prompts by",
                ["last", "mean"],
                "pool",
                default=pool,
                help="A prompt's vector at a layer: its last token, or the mean over its tokens "
                "(the default for encoders, whose last token is [SEP]).",
            )
            if unit == "prompt"
            else pool
        )
    with a[1]:
        standardize = _ui.qp_toggle(
            "Standardise each layer",
            "std",
            default=True,
            help="On by default: norms grow with depth, so without it the late layers "
            "dominate the projection and layer 0 collapses to a dot.",
        )
    with a[2]:
        lines = st.toggle(
            "Trajectory lines",
            value=lines,
            key=f"traj_lines_{method}",
            help="Off by default for UMAP: each layer is embedded jointly and the lines "
            "between them cross everywhere.",
        )
    with a[3]:
        if unit == "token":
            max_runs = _ui.qp_int("Prompts (token units)", "nruns", max_runs, 1, len(runs))
else:
    lo, hi = 0, n_layers
req = trajectories_view.Request(
    model_id=sel.model_id,
    set_name=sel.set_name,
    layers=tuple(range(lo, hi + 1)),
    method=method,
    unit=unit,
    pool=pool,
    dims=int(dims),
    standardize=standardize,
    max_runs=int(max_runs),
)
try:
    n_all = trajectories_view.count_units(
        s, req
    )  # no vector read: too many points ask for a sample first
except LayerScopeError as e:  # user-caused: one readable sentence
    _ui.error_box(e)
    st.stop()
if n_all * len(req.layers) > trajectories_view.MAX_POINTS:
    keep = st.slider(
        "More than 100,000 points: units to draw (random sample)",
        100,
        n_all,
        trajectories_view.MAX_POINTS // len(req.layers),
        key="traj_sample",
    )
    req = replace(req, sample=int(keep))
slow = method in trajectories_view.SLOW_METHODS
# a slow method comes from the store cache or a worker job; its units (and their scores) are
# the PCA view's, so that view is computed now and shown until the job is done
result = _ui.compute("trajectories", replace(req, method="pca") if slow else req, len(runs))
meta = result.meta


@st.fragment(run_every=0.5)
def _job_progress(job_id: str) -> None:
    p = _ui.worker().progress(job_id)
    if p is None or not p.active:
        st.rerun(scope="app")
        return
    st.progress(
        p.tokens_done / 100,
        text=f"{method}: {p.message or p.status} ({p.tokens_done}%, {p.seconds:.0f} s)",
    )
    if st.button("Cancel", key=f"traj_cancel_{job_id}"):
        _ui.worker().cancel(job_id)


proj = trajectories_view.cached(s, req, meta) if slow else result.projection
if proj is None:  # a slow method not computed yet: a worker job, PCA meanwhile
    jobs = st.session_state.setdefault("traj_jobs", {})
    key = trajectories_view.cache_key(req, meta)
    p = _ui.worker().progress(jobs[key]) if key in jobs else None
    if p is None:  # opening a link never starts work: a click does
        st.info(
            f"{method} is not cached for these {meta.shape[0]:,} units × {len(req.layers)} "
            "layers yet. It runs in the background (the first UMAP of a server start also "
            "compiles numba code, ~30 s); PCA is shown meanwhile."
        )
        if st.button(f"Compute {method}", type="primary", key="traj_start"):
            jobs[key] = _ui.submit(
                JobSpec(
                    model=sel.model,
                    set_name=sel.set_name,
                    kind="trajectories",
                    options=trajectories_view.job_spec_options(req),
                )
            )
            p = _ui.worker().progress(jobs[key]) if jobs[key] else None
    if p is not None and p.active:
        waiting = (
            " It first waits for umap-learn's one-time compilation (running in the "
            "background since the server started)."
            if _ui.WARM["umap"] in ("pending", "running") and p.tokens_done == 0
            else ""
        )
        st.info(
            f"Computing {method} in the background (cached once done); showing PCA "
            f"meanwhile — pick PCA or aligned PCA above to work on now.{waiting}"
        )
        _job_progress(jobs[key])
    elif p is not None and p.status in ("cancelled", "failed"):
        st.warning(
            f"{method} {p.status}{': ' + p.message if p.status == 'failed' else ''}. Showing PCA."
        )
        if st.button(f"Compute {method} again", key="traj_retry"):
            del jobs[key]
            st.rerun()
    proj = trajectories_view.cached(s, req, meta) or result.projection

if colour == "feature":  # a latent's activation at a layer (a dictionary from the Features page)
    from backend.views import features as features_view

    f = st.columns(2)
    with f[0]:
        f_layer = _ui.qp_int("Dictionary layer", "flayer", min(2, n_layers), 0, n_layers)
    with f[1]:
        f_id = int(_ui.qp_number("Feature", "feature", 0, 0, 1 << 17, step=1))
    try:
        acts = features_view.unit_activations(s, sel.model_id, sel.set_name, meta, f_layer, f_id)
        meta = meta.assign(feature=acts)
        st.caption(f"Colour: feature {f_id}'s activation at layer {f_layer} (each unit's token).")
    except LayerScopeError as e:
        _ui.message(e)
        colour = "label"
fig = trajectory_figure(proj, meta, colour, show_lines=lines, marker_size=6)
# ?highlight=<run id> (the Prompt page's link): that prompt's path, in black
marked = st.query_params.get("highlight")
if marked:
    units = np.flatnonzero(meta["run_id"].to_numpy() == marked)
    if len(units):
        text = str(meta["text"].iloc[units[0]])
        highlight_unit(fig, proj, units, f"this prompt: {text[:40]}")
    else:
        st.caption("The highlighted prompt is not among the units drawn here.")
axes = list("xyz")[: proj.dims]
table = pd.concat(
    [
        meta.assign(layer=layer, **dict(zip(axes, proj.coords[i].T)))
        for i, layer in enumerate(proj.layers)
    ],
    ignore_index=True,
)
event = _ui.show_figure(
    fig,
    "traj_fig",
    f"trajectories-{sel.set_name}",
    on_select="rerun",
    data=table[["run_id", "pos", "token", "label", "group", "layer", *axes, "text"]],
)
sampled = f"a random sample of {proj.n_units:,} of {n_all:,} units" if req.sample else "all drawn"
st.caption(  # how the units were read, when sampled, is the caption above (_ui.compute)
    f"{proj.n_units:,} {unit} units × {len(proj.layers)} layers = {proj.n_points:,} "
    f"points, {sampled}. {proj.description}"
)

if result.silhouette is not None:
    sil, agree, chance = result.silhouette, result.agreement, result.chance
    _ui.chart(silhouette_figure(proj.layers, sil, agree, chance), key="traj_sil")
    st.caption(
        f"Separation of the labels in the full space (not the 2-D picture): silhouette "
        f"{sil[0]:.2f} at layer {proj.layers[0]} → {sil[-1]:.2f} at layer "
        f"{proj.layers[-1]} (0 = mixed, 1 = apart); same-label share of the 10 nearest "
        f"neighbours {agree[0]:.2f} → {agree[-1]:.2f} (chance {chance:.2f})."
    )

points = (event or {}).get("selection", {}).get("points", []) if event else []
picked = sorted({int(p["customdata"]) for p in points if "customdata" in p})
if picked:
    sel_units = meta.iloc[picked]
    st.subheader(f"{len(picked)} selected units from {sel_units['run_id'].nunique()} prompts")
    st.dataframe(
        sel_units[["label", "group", "token", "pos", "text"]],
        hide_index=True,
        height=min(35 * (len(picked) + 1), 300),
    )
    for r in sel_units.drop_duplicates("run_id").head(10).itertuples():
        _ui.prompt_link(r.run_id, label=f"open prompt: {_ui.md(r.text[:70])}")
else:
    st.caption(
        "Lasso points (2D) to list their prompts and tokens; to pick a single point, choose "
        "Pan or Zoom in the chart's toolbar, then click it."
    )
