"""Steering: add a direction to the residual stream after one layer while generating."""

import pandas as pd
import streamlit as st

from backend.errors import LayerScopeError
from backend.figures.steering import steering_figure
from backend.views import steering, steering_runs
from pages import _ui

present, sel, runs = _ui.open_view("Steering")
s = _ui.store()

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "While the model generates, a vector **α · direction · typical norm** is added to the "
        "residual stream after the chosen **layer**, at every position. The direction is the "
        "difference of the two labels' mean last-token states (**means**), a seeded random one "
        "(**random**), or a `.npy` file; α is in units of the layer's typical residual norm "
        "(median over the prompt's tokens), so α = 1 adds a vector as long as a typical state. "
        "The **flip rate** is the share of the set's prompts whose first generated token "
        "changes from the unsteered one; the dotted / dashed lines, per label, the share "
        "whose first token becomes one of the *other* label's answers (the tokens the "
        "unsteered model starts only that label's prompts with: on the agreement set, the "
        "verb's number). A random direction of the same norm is the control: a direction "
        "only *does* something specific when it flips more than the control at "
        "the same α. Pitfall: a large α breaks any model; compare at small α."
    )

n_layers = int((s.find_model(sel.model) or {}).get("n_layers") or 4)
c = st.columns(3)
with c[0]:
    layer = _ui.qp_int("Layer", "layer", min(2, n_layers), 0, n_layers)
up = st.file_uploader("Or a direction of your own (.npy of d_model values)", type=["npy"])
if up is not None:
    try:
        name = steering.save_direction(_ui.db_path(), up.getvalue())
    except LayerScopeError as e:
        _ui.message(e)
        st.stop()
    if st.session_state.get("steer_npy") != name:  # a new upload becomes the direction
        st.session_state["steer_npy"] = name
        st.session_state.pop("qp_direction", None)
        st.query_params["direction"] = name
direction = _ui.qp_text(
    "Direction (means, probe, random or an uploaded file's name)", "direction", "means", where=c[1]
)
alphas_text = _ui.qp_text("α (comma-separated)", "alphas", "-2,-1,-0.5,0,0.5,1,2", where=c[2])
max_prompts = _ui.qp_int("Prompts of the set (the first N)", "n", 32, 1, max(1, len(runs)))
max_new = 6

try:
    alphas = tuple(float(x) for x in alphas_text.split(",") if x.strip())
    direction = direction.strip() or "means"
    if direction not in steering.DIRECTIONS:
        direction = steering.uploaded_direction(_ui.db_path(), direction)
    req = steering.Request(
        model=sel.model,
        set_name=sel.set_name,
        layer=int(layer),
        direction=direction,
        alphas=alphas,
        max_new_tokens=max_new,
        max_prompts=int(max_prompts),
    )
    result = steering.cached(s, req)
except ValueError:
    _ui.message(LayerScopeError("α takes comma-separated numbers, e.g. -2,-1,0,1,2."))
    st.stop()
except LayerScopeError as e:
    _ui.message(e)
    st.stop()

result = _ui.computed_on_click(
    "steer_compute",
    "Generating with every α, for the direction and the random control…",
    lambda: steering.compute(s, req, lm=_ui.loaded_model(sel.model)),
    "Press **Compute** to steer the set's prompts (the result is stored).",
    stored=result,
)

if result.flip_rate is not None:
    fig = steering_figure(result)
    _ui.chart(fig, key="steer_fig")
    st.caption(
        "Solid: flip rate (any change of the first token); dotted / dashed: the share turned "
        "into the other label's answer. The random control can flip many tokens and still "
        "turn none into the other answer.",
        help=_ui.gloss("flip rate", "random control"),
    )
st.caption(
    f"Layer {req.layer}; direction norm {result.direction_norm:.3f} (the control has the same); "
    f"{len(result.prompts)} prompts" + (" (stored result)." if result.from_cache else ".")
)
i = st.selectbox(
    "Continuations of",
    range(len(result.prompts)),
    format_func=lambda k: result.prompts[k],
    key="steer_prompt",
)
st.dataframe(pd.DataFrame(result.continuations_frame(i)), hide_index=True)

if st.button("Store the steered runs (every layer; one prompt set per α)", key="steer_store"):
    try:
        with st.spinner("Generating again with every layer recorded…"):
            stored = steering_runs.store_runs(s, req, lm=_ui.loaded_model(sel.model))
    except LayerScopeError as e:
        _ui.message(e)
        st.stop()
    st.success(
        "Stored as prompt sets: "
        + ", ".join(f"α = {a:g}: **{_ui.md(n)}**" for a, n in stored.items())
        + ". Pick one in the sidebar (e.g. on Trajectories) next to the α = 0 set: plain "
        "generation."
    )
