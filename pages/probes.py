"""Probes: at which layer is a label linearly decodable, against proper controls."""

import io
from dataclasses import replace

import numpy as np
import streamlit as st

from backend.figures.probes import confusion_figure, errors_figure, probe_figure, score_figure
from backend.jobs.base import JobSpec
from backend.views import probes
from pages import _ui

MAX_TOKEN_UNITS = 20_000  # token probes: keep the first prompts up to this many tokens

present, sel, runs = _ui.open_view("Probes")
s = _ui.store()
n_layers = int(s.get_model(sel.model_id)["n_layers"])

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "A **linear probe** is a small classifier trained on one layer's vectors to predict a "
        "label. **Blue**: its accuracy on prompts it never saw (k-fold cross-validation split "
        "by prompt, so tokens of one prompt never sit on both sides), with a 95% interval from a "
        "bootstrap over prompts of the out-of-fold predictions (widened by the folds' "
        "variability). **Grey dots**: the same probe trained on **shuffled labels** — what a "
        "probe can fit to noise (for imbalanced token labels this is about the majority rate). "
        "**Purple dash-dots** (token units): the **control task** (Hewitt & Liang 2019) — each "
        "token type gets a random label with the same distribution, so a probe scores well "
        "only by memorising words; selectivity against it is what the representation adds "
        "beyond word identity. **Red dashes**: the same probe on a **random-init baseline** "
        "(the untrained twin) — what the architecture and the words give for free. Only the gap "
        "above both says the *trained* model built the label. Pitfall: decodable is not the "
        "same as used by the model."
    )

c1, c2 = st.columns(2)
with c1:
    unit = _ui.qp_radio(
        "Units",
        ["prompt", "token"],
        "unit",
        help="prompt: one vector per prompt (the set's label); token: every "
        "token with the set's per-token labels (e.g. bracket depth)",
    )
model_row = s.get_model(sel.model_id)
with c2:
    pool = _ui.qp_radio(
        "Pool",
        list(probes.POOLS),
        "pool",
        default=probes.default_pool(model_row),
        help="how a prompt unit is pooled; default: mean for encoder models (their last "
        "token is a separator such as [SEP]; [CLS]/[SEP] left out), last token for causal "
        "models; mean-all: every token incl. specials, as sentence-transformers pools",
    )
# secondary settings fold away in presenter mode (the URL still sets them)
with st.expander("Probe settings", expanded=not present):
    d1, d2 = st.columns(2)
    with d1:
        method = _ui.qp_radio(
            "Probe",
            ["logistic", "ridge"],
            "probe",
            help="logistic regression (C = 0.1), or ridge classifier (faster)",
        )
    with d2:
        folds = _ui.qp_int("Folds", "folds", 5, 3, 10)
    lo, hi = _ui.qp_slider("Layers", "layers", (0, n_layers), 0, n_layers)
    layers = list(range(lo, hi + 1))
    others = [m for m in _ui.model_choices(s) if m != sel.model]
    twin_default = probes.TWINS.get(sel.model)
    baseline = _ui.qp_select(
        "Random-init baseline model",
        ["(none)", *others],
        "baseline",
        default=twin_default if twin_default in others else "(none)",
        help="the same probe on another model: its untrained twin, or any "
        "random-init model of the same shape",
    )


max_runs = None
if unit == "token":
    max_runs = int(np.searchsorted(runs["n_tokens"].cumsum().to_numpy(), MAX_TOKEN_UNITS) + 1)
req = probes.Request(
    model_id=sel.model_id,
    set_name=sel.set_name,
    unit=unit,
    pool=pool,
    folds=folds,
    method=method,
    layers=tuple(layers),
    max_runs=max_runs,
)
base_row = s.find_model(baseline) if baseline != "(none)" else None
if baseline != "(none)" and (
    base_row is None or len(s.set_runs(sel.set_name, base_row["model_id"])) < len(runs)
):
    st.info(
        f"The baseline **{_ui.md(baseline)}** has no activations for **{_ui.md(sel.set_name)}** yet."
    )
    if st.button(f"Compute {_ui.md(sel.set_name)} on {_ui.md(baseline)}", key="probe_twin"):
        _ui.submit(JobSpec(model=baseline, set_name=sel.set_name))
    for p in _ui.worker().active_jobs():
        _ui.job_panel(p.job_id)
    base_row = None
if base_row is not None:
    req = replace(req, baseline_model_id=base_row["model_id"], baseline_name=baseline)
result = _ui.compute("probes", req, len(runs))
res, twin, meta = result.probe, result.baseline, result.meta
table = result.to_frame()
_ui.show_figure(
    probe_figure(res, twin, baseline), "probe_fig", f"probe-{sel.model}-{sel.set_name}", data=table
)

best, first = res.best_layer(), res.first_decodable()
bi = res.layers.index(best)
verdict = (
    f"Decodable from **layer {first}** (its interval clears the majority class and the "
    f"shuffled control by 0.05)."
    if first is not None
    else "**Not decodable** above both controls at any layer."
)
gap = (
    f" The same probe on **{_ui.md(baseline)}** peaks at {twin.accuracy.max():.2f}: the trained "
    f"model is **{res.accuracy.max() - twin.accuracy.max():+.2f}** above it."
    if twin
    else ""
)
st.markdown(
    f"{verdict} Best layer {best}: accuracy {res.accuracy[bi]:.2f} "
    f"[{res.ci_low[bi]:.2f}, {res.ci_high[bi]:.2f}], macro-F1 {res.macro_f1[bi]:.2f}, "
    f"shuffled control {res.control[bi]:.2f}, majority {res.majority:.2f}.{gap}"
)
n_used, n_asked = result.n_prompts, result.n_prompts_asked
left_out = (
    f" ({n_asked - n_used} left out: their per-token labels do not match their tokens)"
    if unit == "token" and n_used < n_asked
    else ""
)
spread = (
    f" (mean of {res.control_task_draws.shape[1]} seeded draws, SD {res.control_task_sd[bi]:.3f})"
    if res.control_task_sd is not None
    else ""
)
task = (
    f" Control task (random label per token type) at layer {best}: "
    f"{res.control_task[bi]:.2f}{spread}; "
    f"**selectivity against it {res.control_selectivity[bi]:+.2f}** "
    f"(against the shuffled control {res.selectivity[bi]:+.2f})."
    if res.control_task is not None
    else ""
)
pooled = f" Pooled: {probes.pool_label(pool, model_row)}." if unit == "prompt" else ""
st.caption(
    f"{len(res.y):,} {unit} units from {n_used:,} of {n_asked:,} prompts{left_out}, "
    f"{len(res.classes)} classes, {folds}-fold CV split by prompt, {method} probe. "
    f"95% interval: {_ui.md(res.interval_method)}.{pooled}{task}"
)

if result.warning:
    st.warning(_ui.md(result.warning))

st.subheader("Error analysis")
layer = _ui.qp_int("Inspect layer", "layer", best, min(res.layers), max(res.layers))
li = res.layers.index(layer)
steerable = len(res.classes) == 2 and unit == "prompt"  # the probe's weights as a direction
if steerable and st.button(f"Steer with this direction (layer {layer})", key="probe_steer"):
    q = {"model": sel.model, "set": sel.set_name, "layer": str(layer), "direction": "probe"}
    st.switch_page("pages/steering.py", query_params=q)
a, b = st.columns(2)
with a:
    _ui.chart(confusion_figure(res, layer), key="probe_cm")
with b:
    _ui.chart(score_figure(res, layer), key="probe_scores")

groups = result.group_accuracy(layer)
if len(groups):
    st.caption(
        f"Accuracy by group at layer {layer}: "
        + " · ".join(f"{g.group} {g.accuracy:.2f} (n={g.n})" for g in groups.itertuples())
    )
wrong = result.misclassified(layer)
back = {  # a prompt link opens on this probe and layer (unit prompt: its verdict row)
    "model": sel.model, "set": sel.set_name, "layer": layer, "pool": pool, "probe": method,
    "folds": folds, "layers": f"{lo}:{hi}",
}  # fmt: skip
st.markdown(
    f"**Misclassified at layer {layer}: {len(wrong)} of {len(res.y):,}** "
    "(most confident mistakes first; open one on the Prompt page)"
)
if len(wrong) == 0:
    st.success("The probe gets every unit right at this layer.")
else:
    st.dataframe(
        wrong.assign(open=[_ui.prompt_url(r, **back) for r in wrong["run_id"]]).drop(
            columns="run_id"
        ),
        hide_index=True,
        column_config={
            "open": st.column_config.LinkColumn("open", display_text="prompt ↗"),
            "score": st.column_config.ProgressColumn(
                "score", min_value=0.0, max_value=1.0, format="%.2f"
            ),
        },
        key="probe_wrong",
        height=min(38 + 35 * len(wrong), 400),
    )
    _ui.prompt_link(wrong["run_id"].iloc[0], "open the most confident mistake", **back)

errors = result.layer_errors(layer)
if len(errors):  # where in the layers each goes wrong, from the stored out-of-fold scores
    n_wrong = int((errors["at_layer"] == "wrong").sum())
    never = int(errors["settles"].isna().sum())
    _ui.show_figure(
        errors_figure(errors, layer),
        "probe_errors",
        f"probe-errors-{sel.model}-{sel.set_name}-L{layer}",
        data=errors,
    )
    shown = (
        f"{n_wrong}" if n_wrong == len(wrong) else f"the {n_wrong} most confident of {len(wrong)}"
    )
    st.caption(
        f"{shown} wrong and {len(errors) - n_wrong} borderline (margin below 0.1) at layer "
        f"{layer}, each across every layer; ordered by the first layer from which it stays "
        f"right ({never} are still wrong at the last layer, at the bottom). The CSV has each "
        "one's margin per layer.",
        help=_ui.gloss("margin"),
    )

with st.expander("Probe weights (fitted on all units, raw-space: score = h · w + b)"):
    buf = io.BytesIO()
    np.save(buf, res.weights)
    names = result.weight_rows()
    st.caption(
        f"Shape {res.weights.shape} = layers {res.layers[0]}–{res.layers[-1]} × "
        f"{_ui.md(', '.join(names))} × d_model. The CSV has the layer, class and bias per row."
    )
    w = result.weights_frame()
    d1, d2 = st.columns(2)
    d1.download_button(
        "weights .npy",
        buf.getvalue(),
        f"probe-weights-{sel.model}-{sel.set_name}.npy",
        key="probe_w_npy",
    )
    d2.download_button(
        "weights + bias .csv",
        _ui.csv_bytes(w),
        f"probe-weights-{sel.model}-{sel.set_name}.csv",
        key="probe_w_csv",
    )
