"""Activation patching: which (layer, position) of the clean run brings its answer back."""

import streamlit as st

from backend.errors import LayerScopeError
from backend.figures.patching import patching_figure
from backend.views import patching
from pages import _ui

#: a minimal pair the demo model gets right: 'smiles' (singular) vs 'fall' (plural) on top
CLEAN, CORRUPTED = "the cat near the dogs often", "the cats near the dog often"

st.title("Patching")
present = _ui.presenting()
sel = _ui.selection(need_set=False)
s = _ui.store()

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "Two prompts with the same number of tokens differ minimally (**clean** and "
        "**corrupted**). The metric is the logit difference between an **answer** token and an "
        "**against** token at the last position (default: each prompt's own top-1 next token). "
        "Each cell runs the corrupted prompt with the residual stream at one **layer** and "
        "**position** replaced by the clean run's, and shows the **recovery** = (patched − "
        "corrupted) / (clean − corrupted): 0 = nothing came back, 1 = the clean behaviour is "
        "fully restored by that one vector (red). Layer 0 is the embedding output. "
        "On the demo the number of the subject is carried at the subject's position in the "
        "early layers and moves to the last position later. Pitfall: recovery says what is "
        "*sufficient* in this pair, not everything the model uses."
    )

c = st.columns(2)
clean = _ui.qp_text("Clean prompt", "clean", CLEAN, where=c[0])
corrupted = _ui.qp_text(
    "Corrupted prompt (same number of tokens)", "corrupted", CORRUPTED, where=c[1]
)
c = st.columns(2)
answer = _ui.qp_text(
    "Answer token (optional)", "answer", "", help="default: the clean run's top-1", where=c[0]
)
against = _ui.qp_text(
    "Against token (optional)", "against", "", help="default: the corrupted run's top-1", where=c[1]
)

try:
    req = patching.Request(sel.model, clean, corrupted, answer or None, against or None)
    result = patching.cached(s, req)  # a stored result shows at once; computing needs a click
except LayerScopeError as e:
    _ui.message(e)
    st.stop()

result = _ui.computed_on_click(
    "patch_compute",
    "Patching every layer × position…",
    lambda: patching.compute(s, req, lm=_ui.loaded_model(sel.model)),
    "Press **Compute** to patch every layer × position (the result is stored).",
    stored=result,
)

_ui.show_figure(patching_figure(result), "patch_fig", "patching", data=result.to_frame())
st.caption(
    f"Metric logit({_ui.md(repr(result.answer))}) − logit({_ui.md(repr(result.against))}): "
    f"clean **{result.clean_metric:.3f}**, corrupted **{result.corrupted_metric:.3f}**. "
    f"Clean states: {result.clean_source}" + (" (stored result)." if result.from_cache else ".")
)
rec = result.recovery
li, pi = divmod(int(abs(rec - 1).argmin()), rec.shape[1])
st.markdown(
    f"Closest to full recovery: layer **{result.layers[li]}**, position "
    f"**{result.positions[pi]}** ({_ui.md(repr(result.tokens[result.positions[pi]]))}), "
    f"recovery {rec[li, pi]:.2f}."
)
