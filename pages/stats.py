"""Layer statistics: norms, massive activations, effective rank, anisotropy."""

import streamlit as st

from backend.figures.stats import stats_figure
from backend.views import stats
from pages import _ui

MAX_RUNS = 200

present, sel, runs = _ui.open_view("Layer statistics")

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "Computed over every token of the set at each layer. **Norm**: how long the hidden "
        "vectors are (they usually grow with depth). **Massive activations**: the largest "
        "single |value| relative to the median |value| — a few dimensions, often on the first "
        "token, become orders of magnitude larger and act as attention sinks (hover for the "
        "dimensions and tokens). **Effective rank**: how many directions the tokens really use "
        "(exp of the entropy of the normalised singular values). **Anisotropy**: the mean cosine "
        "between tokens — near 0 they point every way, near 1 they share one direction. "
        "Pitfall: a high anisotropy makes raw cosine similarities look high everywhere."
    )


result = _ui.compute(
    "stats",
    stats.Request(model_id=sel.model_id, set_name=sel.set_name, max_runs=MAX_RUNS),
    len(runs),
)
st_, table = result.stats, result.to_frame()
_ui.show_figure(
    stats_figure(st_, result.names), "stats_fig", f"layer-stats-{sel.set_name}", data=table
)
st.caption(
    f"Over {len(result.names):,} tokens (special tokens included) of {result.n_prompts} prompts."
)

st.subheader("Largest activations per layer")
layer = _ui.qp_int("Layer", "layer", st_.layers[-1], st_.layers[0], st_.layers[-1])
top = result.top(layer)
st.dataframe(
    top.assign(open=[_ui.prompt_url(r) for r in top["run_id"]]).drop(columns="run_id").round(2),
    hide_index=True,
    key="stats_top",
    column_config={"open": st.column_config.LinkColumn("open", display_text="prompt ↗")},
)
st.dataframe(table.round(3), hide_index=True, key="stats_table")
