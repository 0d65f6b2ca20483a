"""Layer statistics: norms, massive activations, effective rank, anisotropy."""

import pandas as pd
import streamlit as st

from backend.figures.stats import stats_figure
from backend.views import readouts
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


@st.cache_data(show_spinner="Computing statistics…", max_entries=16)
def _stats(model_id, set_name, n_runs):
    return readouts.stats(_ui.store(), set_name, model_id, MAX_RUNS)


st_, meta = _stats(sel.model_id, sel.set_name, len(runs))
names = meta["name"].tolist()
table = pd.DataFrame(
    {
        "layer": st_.layers,
        "norm_median": st_.norm_quantiles[:, 2],
        "norm_p95": st_.norm_quantiles[:, 4],
        "max_abs": st_.max_abs,
        "median_abs": st_.median_abs,
        "massive_ratio": st_.massive_ratio,
        "massive_dim": st_.massive_dim,
        "massive_token": [names[u] for u in st_.massive_unit],
        "effective_rank": st_.effective_rank,
        "anisotropy": st_.anisotropy,
    }
)
_ui.show_figure(stats_figure(st_, names), "stats_fig", f"layer-stats-{sel.set_name}", data=table)
st.caption(
    f"Over {len(names):,} tokens (special tokens included) of {min(len(runs), MAX_RUNS)} prompts."
)

st.subheader("Largest activations per layer")
layer = _ui.qp_int("Layer", "layer", st_.layers[-1], st_.layers[0], st_.layers[-1])
li = st_.layers.index(layer)
units = st_.top_units[li]
st.dataframe(
    pd.DataFrame(
        {
            "value": st_.top_values[li],
            "× median": abs(st_.top_values[li]) / st_.median_abs[li],
            "dim": st_.top_dims[li],
            "token": [
                f"{p}:{t}" for p, t in zip(meta["pos"].iloc[units], meta["token"].iloc[units])
            ],
            "prompt": meta["text"].iloc[units].to_numpy(),
            "open": [_ui.prompt_url(r) for r in meta["run_id"].iloc[units]],
        }
    ).round(2),
    hide_index=True,
    key="stats_top",
    column_config={"open": st.column_config.LinkColumn("open", display_text="prompt ↗")},
)
st.dataframe(table.round(3), hide_index=True, key="stats_table")
