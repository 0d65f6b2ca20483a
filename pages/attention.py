"""Attention: every layer × head pattern of one prompt, attention sinks and entropy."""

import streamlit as st

from backend.figures.attention import heads_figure, pattern_figure
from backend.views import attention
from pages import _ui

st.title("Attention")
present = _ui.presenting()
sel = _ui.selection(need_set=False)

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "Each head's attention weights for one prompt, computed on demand with the model's "
        "eager attention. **Sink share**: the mass a head puts on the first token, averaged "
        "over the later queries — many heads park most of their attention there when they "
        "have nothing to do. **Entropy**: how spread a head's attention is (0 = one token). "
        "Hover a head to see the tokens it attends to most; click it (or pick a layer and "
        "head below) to see its full pattern (queries down, keys across)."
    )

prompt = _ui.qp_text("Prompt", "prompt", "the cat near the dogs often")
key = ("attention", sel.model, prompt)
held = st.session_state.get("att_result")
res = _ui.computed_on_click(
    "att_compute",
    "Running the model with eager attention…",
    lambda: attention.compute(None, attention.Request(model=sel.model, prompt=prompt)),
    "Press **Compute** to read every head's attention for this prompt.",
    stored=held[1] if held is not None and held[0] == key else None,
)
st.session_state["att_result"] = (key, res)  # kept for reruns (layer / head pickers)

event = _ui.show_figure(
    heads_figure(res), "att_heads", "attention-heads", data=res.to_frame(),
    on_select="rerun", selection_mode="points",
)  # fmt: skip
points = (event or {}).get("selection", {}).get("points", []) if event else []
picked = next((p["customdata"] for p in points if p.get("customdata")), None)
if picked is not None:  # a clicked head: enlarged below (its pickers follow)
    for k, v in zip(("att_layer", "att_head"), picked):
        st.session_state.pop(f"qp_{k}", None)  # the slider takes the URL's value again
        st.query_params[k] = str(int(v))
if res.note:
    st.warning(_ui.md(res.note))
c = st.columns(2)
with c[0]:
    layer = _ui.qp_int("Layer", "att_layer", res.layers[0], res.layers[0], res.layers[-1])
with c[1]:
    head = _ui.qp_int("Head", "att_head", 0, 0, res.attention.shape[1] - 1)
_ui.show_figure(pattern_figure(res, layer, head), "att_pattern", f"attention-L{layer}-H{head}")
st.caption(
    f"{len(res.tokens)} tokens of {_ui.md(prompt)}: layer {layer}, head {head} puts "
    f"{res.sink_share[res.layers.index(layer), head]:.2f} of its attention on the first token."
)
