"""Probes: at which layer is a label linearly decodable, against proper controls."""

import io

import numpy as np
import pandas as pd
import streamlit as st

from backend import readouts
from backend.analysis.probes import confusion
from backend.errors import LayerScopeError
from backend.figures.probes import confusion_figure, probe_figure, score_figure
from backend.worker import JobSpec
from pages import _ui

st.title("Probes")
present = _ui.presenting()
sel = _ui.selection()
runs = _ui.require_runs(sel)
if runs is None or runs.empty:
    st.stop()
s = _ui.store()

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "A **linear probe** is a small logistic-regression classifier trained on one layer's "
        "vectors to predict a label. Blue: its accuracy on prompts it never saw (k-fold, split "
        "by prompt), with a 95% interval across folds. Grey dots: the same probe trained on "
        "**shuffled labels** — what a probe can memorise from noise. Red dashes: the same probe "
        "on the **untrained twin** of the model — what the architecture gives for free. Only "
        "the gap above both controls says the *trained* model represents the label. Pitfall: "
        "decodable is not the same as used by the model.")

c1, c2, c3, c4 = st.columns(4)
with c1:
    unit = _ui.qp_radio("Units", ["prompt", "token"], "unit",
                        help="token: per-token labels (e.g. bracket depth)")
with c2:
    pool = _ui.qp_radio("Pool", ["last", "mean"], "pool")
with c3:
    folds = _ui.qp_int("Folds", "folds", 5, 3, 10)
with c4:
    method = _ui.qp_radio("Probe", ["logistic", "ridge"], "probe")
others = [m for m in _ui.model_choices(s) if m != sel.model]
twin_default = readouts.TWINS.get(sel.model)
baseline = _ui.qp_select("Random-init baseline model", ["(none)"] + others, "baseline",
                         default=twin_default if twin_default in others else "(none)")


@st.cache_data(show_spinner="Training probes…", max_entries=32)
def _probe(model_id, set_name, unit, pool, folds, method, n_runs):
    return readouts.probe(_ui.store(), set_name, model_id, unit, pool, folds, method,
                          max_runs=60 if unit == "token" else None)


try:
    res, meta = _probe(sel.model_id, sel.set_name, unit, pool, folds, method, len(runs))
except LayerScopeError as e:
    st.error(str(e))
    st.stop()

twin = None
if baseline != "(none)":
    row = s.find_model(baseline)
    if row is None or len(s.set_runs(sel.set_name, row["model_id"])) < len(runs):
        st.info(f"The baseline **{baseline}** has no activations for this set yet.")
        if st.button(f"Compute {sel.set_name} on {baseline}", key="probe_twin"):
            _ui.submit(JobSpec(model=baseline, set_name=sel.set_name))
        for p in _ui.worker().active_jobs():
            _ui.job_panel(p.job_id)
    else:
        twin, _ = _probe(row["model_id"], sel.set_name, unit, pool, folds, method, len(runs))

table = pd.DataFrame({"layer": res.layers, "accuracy": res.accuracy, "ci_low": res.ci_low,
                      "ci_high": res.ci_high, "macro_f1": res.macro_f1, "control": res.control,
                      "selectivity": res.selectivity})
if twin is not None:
    table["baseline_accuracy"] = twin.accuracy
_ui.show_figure(probe_figure(res, twin, baseline), "probe_fig", f"probe-{sel.set_name}",
                data=table)
best = res.best_layer()
gap = f", {res.accuracy.max() - twin.accuracy.max():+.2f} over {baseline}'s best" if twin else ""
st.caption(f"{len(res.y):,} {unit} units, {len(res.classes)} classes, {folds} folds. Best layer "
           f"{best}: {res.accuracy.max():.2f} (control {res.control[res.layers.index(best)]:.2f}"
           f"{gap}).")

layer = _ui.qp_int("Inspect layer", "layer", best, min(res.layers), max(res.layers))
a, b = st.columns(2)
with a:
    st.plotly_chart(confusion_figure(confusion(res, layer), res.classes, layer), key="probe_cm")
with b:
    st.plotly_chart(score_figure(res, layer), key="probe_scores")

li = res.layers.index(layer)
wrong = np.flatnonzero(res.pred[li] != res.y)
st.subheader(f"Misclassified at layer {layer}: {len(wrong)} of {len(res.y)}")
if len(wrong) == 0:
    st.success("The probe gets every unit right at this layer.")
for i in wrong[:50]:
    r = meta.iloc[i]
    c1, c2 = st.columns([5, 1])
    conf = res.scores[li, i, res.pred[li, i]]
    c1.write(f"true **{res.classes[res.y[i]]}**, predicted **{res.classes[res.pred[li, i]]}** "
             f"({conf:.2f}) · {r['text']}" + (f" · token `{r['token']}`" if r["pos"] >= 0 else ""))
    with c2:
        _ui.prompt_link(r["run_id"])
if len(wrong) > 50:
    st.caption(f"… and {len(wrong) - 50} more (export the table above for all).")

buf = io.BytesIO()
np.save(buf, res.weights)
st.download_button("Probe weights (.npy: layers × classes × d_model)", buf.getvalue(),
                   f"probe-weights-{sel.set_name}.npy", key="probe_w_npy")
w = pd.DataFrame([{"layer": L, "class": (res.classes[c] if res.weights.shape[1] > 1
                                         else f"{res.classes[1]} vs {res.classes[0]}"),
                   **{f"w{j}": v for j, v in enumerate(res.weights[i, c])}}
                  for i, L in enumerate(res.layers) for c in range(res.weights.shape[1])])
st.download_button("Probe weights (CSV)", w.to_csv(index=False).encode(),
                   f"probe-weights-{sel.set_name}.csv", key="probe_w_csv")
