"""Layer statistics: norms, massive activations, effective rank, anisotropy."""

import pandas as pd
import streamlit as st

from backend import readouts
from backend.figures.stats import stats_figure
from pages import _ui

st.title("Layer statistics")
present = _ui.presenting()
sel = _ui.selection()
runs = _ui.require_runs(sel)
if runs is None or runs.empty:
    st.stop()

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "Computed over every token of the set at each layer. **Norm**: how long the hidden "
        "vectors are (they usually grow with depth). **Massive activations**: the largest "
        "single |value| relative to the median — a few dimensions, often on the first token, "
        "become orders of magnitude larger and act as attention sinks (hover for the dimension "
        "and token). **Effective rank**: how many directions the tokens really use "
        "(exp of the entropy of the singular values). **Anisotropy**: the mean cosine between "
        "tokens — near 0 they point every way, near 1 they share one direction. Pitfall: a "
        "high anisotropy makes raw cosine similarities look high everywhere.")


@st.cache_data(show_spinner="Computing statistics…", max_entries=16)
def _stats(model_id, set_name, n_runs):
    return readouts.stats(_ui.store(), set_name, model_id)


st_, names = _stats(sel.model_id, sel.set_name, len(runs))
table = pd.DataFrame({"layer": st_.layers, "norm_median": st_.norm_quantiles[:, 2],
                      "max_abs": st_.max_abs, "median_abs": st_.median_abs,
                      "massive_ratio": st_.massive_ratio, "massive_dim": st_.massive_dim,
                      "massive_token": [names[u] for u in st_.massive_unit],
                      "effective_rank": st_.effective_rank, "anisotropy": st_.anisotropy})
_ui.show_figure(stats_figure(st_, names), "stats_fig", f"layer-stats-{sel.set_name}", data=table)
st.caption(f"Over {len(names):,} tokens of {min(len(runs), 200)} prompts.")
st.dataframe(table.round(3), hide_index=True)
