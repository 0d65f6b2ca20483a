"""Logit lens: what each layer would predict if the model stopped there."""

import streamlit as st

from backend.errors import LayerScopeError
from backend.figures.lens import lens_curves, lens_figure, summary_figure
from backend.views import lens
from pages import _ui

present, sel, runs = _ui.open_view("Logit lens")
s = _ui.store()

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "Every cell applies the model's **own final normalisation and unembedding** to the "
        "hidden state at that layer and position, and shows the most likely **next** token "
        "(colour = its probability; hover for the top 5, the KL divergence to the final "
        "layer and the rank of the final answer). The last row is exactly the model's output. "
        "The red bar marks the **commitment depth**: the first layer from which the final "
        "answer stays on top. Pitfall: early layers were never trained to be read this way, "
        "so their guesses are rough (a tuned lens, not built yet, would be more faithful)."
    )

info = s.get_model(sel.model_id) or {}
if not info.get("has_lm_head", True):
    st.info(
        f"The logit lens does not apply to **{_ui.md(sel.model)}**: it has no language-model head "
        "(an encoder such as BERT). The other views work on it."
    )
    st.stop()
try:
    lm = _ui.loaded_model(sel.model)
except LayerScopeError as e:
    _ui.message(e)
    st.stop()

labels = [f"{r.idx}: {r.text[:70]}" for r in runs.itertuples()]
ids = runs["run_id"].tolist()
qp_run = st.query_params.get("run")
pick = st.selectbox(
    "Prompt",
    range(len(runs)),
    index=ids.index(qp_run) if qp_run in ids else 0,
    format_func=lambda i: labels[i],
    key="lens_prompt",
)
run_id = ids[pick]
st.query_params["run"] = run_id

try:
    one = lens.compute_run(s, lm, run_id)
except LayerScopeError as e:
    _ui.message(e)
    st.stop()
res, toks, names = one.lens, one.tokens, one.names
_ui.show_figure(lens_figure(res, toks, names), "lens_fig", "logit-lens", data=one.to_frame())
last = len(toks) - 1
answer = names[res.top_ids[-1, last, 0]]
st.markdown(
    f"After the last token **{_ui.md(repr(toks[last]))}** the model's answer is "
    f"**{_ui.md(repr(answer))}** "
    f"(p = {res.top_probs[-1, last, 0]:.2f}); it is on top from **layer "
    f"{res.commitment[last]}** on. {len(res.layers)} layers × {len(toks)} positions."
)

pos = _ui.qp_int("Position for the curves", "pos", last, 0, last)
st.plotly_chart(lens_curves(res, pos), key="lens_curves")
st.caption(
    "Blue: over this prompt's positions (mean KL and entropy, median rank). Red dashes: "
    f"position {pos} ({_ui.md(repr(toks[pos]))})."
)

st.subheader(f"Across the set: {_ui.md(sel.set_name)}")
where = _ui.qp_radio(
    "Positions",
    ["last", "all"],
    "lens_positions",
    help="last: the next-token prediction at the end of each prompt; all: "
    "every position of every prompt",
)


summ_result = _ui.lens_set(sel.model, lens.Request(sel.model_id, sel.set_name, where), len(runs))
summ = summ_result.summary
_ui.show_figure(
    summary_figure(summ, sel.set_name),
    "lens_summary",
    f"lens-{sel.set_name}",
    data=summ_result.to_frame(),
)
st.caption(
    f"Half of the {summ.n_positions:,} positions have committed to their final answer "
    f"by layer {summ_result.half_committed_layer()}."
)
