"""Logit lens: what each layer would predict if the model stopped there."""

import pandas as pd
import streamlit as st

from backend import readouts
from backend.errors import LayerScopeError
from backend.figures.lens import lens_curves, lens_figure
from pages import _ui

st.title("Logit lens")
present = _ui.presenting()
sel = _ui.selection()
runs = _ui.require_runs(sel)
if runs is None or runs.empty:
    st.stop()
s = _ui.store()

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "Every cell applies the model's **own final normalisation and unembedding** to the "
        "hidden state at that layer and position, and shows the most likely **next** token "
        "(colour = its probability; hover for the top 5). The last row is exactly the model's "
        "output. The red bar marks the **commitment depth**: the first layer from which the "
        "final answer stays on top. Pitfall: early layers were never trained to be read this "
        "way, so their guesses are rough (a tuned lens would be more faithful there).")

labels = [f"{r.idx}: {r.text[:70]}" for r in runs.itertuples()]
qp_run = st.query_params.get("run")
ids = runs["run_id"].tolist()
default = ids.index(qp_run) if qp_run in ids else 0
pick = st.selectbox("Prompt", range(len(runs)), index=default, format_func=lambda i: labels[i],
                    key="lens_prompt")
run_id = ids[pick]
st.query_params["run"] = run_id

try:
    lm = _ui.loaded_model(sel.model)
    res = readouts.lens_for_hidden(lm, s.run_layers(run_id))
except LayerScopeError as e:
    st.info(str(e))
    st.stop()
toks = s.tokens(run_id)["token"].tolist()
vocab = readouts.vocab(lm)
grid = pd.DataFrame([{"layer": L, "pos": p, "token": toks[p], "top1": vocab[res.top_ids[li, p, 0]],
                      "p_top1": res.top_probs[li, p, 0], "kl_to_final": res.kl_to_final[li, p],
                      "entropy": res.entropy[li, p], "final_rank": res.final_rank[li, p]}
                     for li, L in enumerate(res.layers) for p in range(len(toks))])
_ui.show_figure(lens_figure(res, toks, vocab), "lens_fig", "logit-lens", data=grid)
last = len(toks) - 1
st.caption(f"{len(res.layers)} layers × {len(toks)} positions. At the last position the final "
           f"answer is '{vocab[res.top_ids[-1, last, 0]]}' "
           f"({res.top_probs[-1, last, 0]:.2f}); it is on top from layer "
           f"{res.commitment[last]} on.")
st.plotly_chart(lens_curves(res), key="lens_curves")
st.caption("Averaged over this prompt's positions: KL divergence of each layer's readout to the "
           "final distribution, its entropy, and the rank of the final top-1 token.")
