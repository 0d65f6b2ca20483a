"""Logit lens: what each layer would predict if the model stopped there."""

import pandas as pd
import streamlit as st

from backend.errors import LayerScopeError
from backend.figures.lens import (
    lens_curves,
    lens_figure,
    summary_figure,
    tuned_curve_figure,
    tuned_kl_figure,
)
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
        "so their guesses are rough. The **tuned lens** (Belrose et al. 2023) first maps each "
        "layer through an affine translator trained on this set's cached states to match the "
        "final layer; its KL to the final layer is measured on held-out prompts."
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

kind = _ui.qp_radio(
    "Lens",
    list(lens.LENS_KINDS),
    "lens",
    help="logit: the model's final norm and unembedding on each layer as is; tuned: each "
    "layer translated first by an affine map trained on this set (Belrose et al. 2023)",
)
tuned = None
if kind == "tuned":
    tuned = lens.load_tuned(s, sel.model_id, sel.set_name)
    if tuned is None:  # opening a link never trains: only the button does
        est = lens.train_seconds(s, sel.model_id, sel.set_name, lm.info.vocab_size)
        st.info(
            f"No tuned lens for **{_ui.md(sel.model)}** on **{_ui.md(sel.set_name)}** yet. "
            "Training fits one affine translator per layer on this set's cached states "
            f"(up to {lens.TUNED_SETTINGS['steps']} steps, stopped early when the held-out KL "
            "stops improving; a quarter of the prompts held out) and "
            "stores it for next time."
        )
        if st.button(
            f"Train a tuned lens on this set (at most ≈{est:.0f} s: it stops early)",
            key="lens_train",
        ):
            with st.spinner("Training the tuned lens…"):
                try:
                    tuned = lens.train_tuned(s, lm, sel.model_id, sel.set_name)
                except LayerScopeError as e:
                    _ui.message(e)
        if tuned is None:
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


@st.cache_data(show_spinner="Reading out the prompt…", max_entries=32)
def _lens_run(model_ref: str, run_id: str, kind: str, set_name: str):
    """One prompt's lens: cached, so moving the position slider redraws without a readout."""
    lm_ = _ui.loaded_model(model_ref)
    return lens.compute_run(_ui.store(), lm_, run_id, kind=kind, set_name=set_name)


try:
    one = _lens_run(sel.model, run_id, kind, sel.set_name)
except LayerScopeError as e:
    _ui.message(e)
    st.stop()
res, toks, names = one.lens, one.tokens, one.names
if one.note:
    st.warning(_ui.md(one.note))
_ui.show_figure(lens_figure(res, toks, names), "lens_fig", f"{kind}-lens", data=one.to_frame())
st.caption(
    "Cell = the top next-token guess at that layer; '= tie' = a near tie; the red bar = the "
    "commitment depth.",
    help=_ui.gloss("tie", "commitment depth"),
)
if tuned is not None:
    _ui.show_figure(
        tuned_kl_figure(tuned.layers, tuned.kl_logit, tuned.kl_tuned, tuned.n_test),
        "lens_tuned_kl",
        f"tuned-lens-kl-{sel.set_name}",
        data=lens.tuned_kl_frame(tuned),
    )
    if len(tuned.curve_step):
        _ui.show_figure(
            tuned_curve_figure(tuned.curve_step, tuned.curve_kl, tuned.steps),
            "lens_tuned_curve",
            f"tuned-lens-curve-{sel.set_name}",
            data=pd.DataFrame({"step": tuned.curve_step, "heldout_kl": tuned.curve_kl}),
        )
last = len(toks) - 1
answer = names[res.top_ids[-1, last, 0]]
st.markdown(
    f"After the last token **{_ui.md(repr(toks[last]))}** the model's answer is "
    f"**{_ui.md(repr(answer))}** "
    f"(p = {res.top_probs[-1, last, 0]:.2f}); {one.commitment_text(last)}. "
    f"{len(res.layers)} layers × {len(toks)} positions."
)

pos = _ui.qp_int("Position for the curves", "pos", last, 0, last)
_ui.chart(lens_curves(res, pos), key="lens_curves")
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


summ_result = _ui.lens_set(
    sel.model,
    lens.Request(
        model=sel.model, model_id=sel.model_id, set_name=sel.set_name, positions=where, kind=kind
    ),
    len(runs),
)
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
    + (
        f" Tuned lens: over the {summ_result.tuned.n_test} held-out prompts only (the other "
        f"{summ_result.tuned.n_train} trained it; in sample, top-1 = final at the first layer "
        f"{summ_result.summary_train.agreement[0]:.2f} vs {summ.agreement[0]:.2f} held out)."
        if summ_result.summary_train is not None
        else ""
    )
)
