"""Activation patching: which (layer, position) of the clean run brings its answer back."""

from dataclasses import replace

import pandas as pd
import streamlit as st

from backend.errors import LayerScopeError
from backend.figures.patching import distribution_figure, patching_figure
from backend.views import patching
from pages import _ui

#: a minimal pair the demo model gets right: 'smiles' (singular) vs 'fall' (plural) on top
CLEAN, CORRUPTED = "the cat near the dogs often", "the cats near the dog often"
ONE = "this pair only"

st.title("Patching")
present = _ui.presenting()
sel = _ui.selection(need_set=False)
s = _ui.store()

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "Two prompts with the same number of tokens differ minimally (**clean** and "
        "**corrupted**). The metric is the logit difference between an **answer** token and an "
        "**against** token at the last position (default: each prompt's own top-1 next token), "
        "or the probability of the answer. Each cell runs the corrupted prompt with one "
        "**layer** and **position** of the residual stream (or of block L's attention or MLP "
        "output) replaced by the clean run's, and shows the **recovery** = (patched − "
        "corrupted) / (clean − corrupted): 0 = nothing came back, 1 = the clean behaviour is "
        "fully restored by that one vector (red). Layer 0 is the embedding output. "
        "**Pairs**: the mean recovery over a bundled set's minimal pairs shaped like the typed "
        "one (same number of tokens, same differing positions), each with its own answer, and "
        "a 95% bootstrap interval over pairs on hover. **Click a cell** to see the patched "
        "next-token distribution. On the demo the number of the subject is carried at the "
        "subject's position in the early layers and moves to the last position later. "
        "Pitfall: recovery says what is *sufficient* in this pair, not everything the model uses. "
        "**AtP** (attribution patching) estimates every cell at once as (clean − corrupted "
        "activation) · gradient of the metric on the corrupted run: fast, first-order, and "
        "wrong where a softmax saturates; check the cells that matter with the exact method."
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
c = st.columns(4)
with c[0]:
    metric = _ui.qp_radio(
        "Metric",
        list(patching.METRICS),
        "metric",
        format_func=lambda m: {"logit-diff": "logit difference", "prob": "p(answer)"}[m],
        help=_ui.gloss("logit difference"),
    )
with c[1]:
    component = _ui.qp_radio(
        "Patch",
        ["resid", "attn", "mlp", "feature"],
        "component",
        format_func=lambda m: {
            "resid": "residual",
            "attn": "attention out",
            "mlp": "MLP out",
            "feature": "ablate a feature",
        }[m],
    )
with c[2]:
    paired = patching.paired_sets()
    pairs_from = _ui.qp_select("Mean over the minimal pairs of", [ONE, *paired], "pairs")
with c[3]:
    method = _ui.qp_radio(
        "Method",
        list(patching.METHODS),
        "method",
        format_func=lambda m: {"exact": "exact (a pass per cell)", "atp": "AtP (one backward)"}[m],
    )

f_layer = f_id = f_set = None
if component == "feature":  # one latent of a layer's dictionary (the Features page trains it)
    st.caption(
        "Ablate one feature: the **clean** run with latent F's contribution removed at one "
        "position of layer L (x − z_F·W_dec[F], the dictionary's error term kept); the "
        "dictionary trained on the selected set (default settings), else the imported one."
    )
    c = st.columns(3)
    f_layer = int(_ui.qp_number("Layer", "flayer", 2, 0, 256, step=1, where=c[0]))
    f_id = int(_ui.qp_number("Feature", "feature", 0, 0, 1 << 17, step=1, where=c[1]))
    with c[2]:  # with pairs: the dictionary of the pairs' set
        if pairs_from == ONE:
            f_set = _ui.qp_select("Dictionary trained on", _ui.set_choices(s), "fset", "agreement")
dict_set = pairs_from if pairs_from != ONE else f_set
try:
    req = patching.Request(
        model=sel.model, clean=clean, corrupted=corrupted, answer=answer or None,
        against=against or None,
        metric=metric, component=component,
        set_name=dict_set if component == "feature" else None if pairs_from == ONE else pairs_from,
        pairs=pairs_from != ONE, method=method, feature=f_id,
        layers=None if f_layer is None else (f_layer,),
    )  # fmt: skip
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

event = _ui.show_figure(
    patching_figure(result), "patch_fig", "patching", data=result.to_frame(),
    on_select="rerun", selection_mode="points",
)  # fmt: skip
what = result.metric_label if result.pair_recovery is None else (
    "p(answer)" if result.metric == "prob"
    else "logit(answer) − logit(against), signed towards each pair's clean answer")  # fmt: skip
mean = "mean " if result.pair_recovery is not None else ""
st.caption(
    f"Metric {_ui.md(what)}: {mean}clean **{result.clean_metric:.3f}**, {mean}corrupted "
    f"**{result.corrupted_metric:.3f}**. Clean states: {result.clean_source}"
    + (" (stored result)." if result.from_cache else "."),
    help=_ui.gloss("logit difference", "recovery"),
)
if result.warning:
    st.warning(_ui.md(result.warning))
iv = result.interval()
if iv is not None:
    st.caption(
        f"Mean recovery over **{iv.n_pairs}** pairs of the set {_ui.md(pairs_from)} shaped like "
        f"the typed pair ({result.n_skipped} more skipped: same answer and against, or nothing "
        f"to recover); each pair's own answers; interval: {iv.description}."
    )
rec = result.recovery
li, pi = divmod(int(abs(rec - 1).argmin()), rec.shape[1])
st.markdown(
    f"Closest to full recovery: layer **{result.layers[li]}**, position "
    f"**{result.positions[pi]}** ({_ui.md(repr(result.tokens[result.positions[pi]]))}), "
    f"recovery {rec[li, pi]:.2f}.",
    help=_ui.gloss("recovery", "logit difference"),
)

if result.component == "feature":
    eff = result.patched[0] - result.clean_metric
    p = int(abs(eff).argmax())
    st.caption(
        f"Largest effect of ablating feature {f_id}: position {result.positions[p]} "
        f"({_ui.md(repr(result.tokens[result.positions[p]]))}), metric {eff[p]:+.3f} "
        "(recovery 1 = no effect)."
    )
    st.stop()

# AtP checked: the top-N cells by |AtP| patched exactly, on a click (stored with the result)
if result.method == "atp":
    c = st.columns([1, 2])
    n_top = int(_ui.qp_number("Check the top N cells exactly", "verify", 10, 2, 200, where=c[0]))
    vreq = replace(req, verify=n_top)
    checked = patching.cached(s, vreq)
    if c[1].button(f"Patch the top {n_top} cells by |AtP| exactly", key="patch_verify"):
        try:
            with st.spinner(f"Patching {n_top} cells exactly…"):
                checked = patching.compute(s, vreq, lm=_ui.loaded_model(sel.model))
        except LayerScopeError as e:
            _ui.message(e)
    if checked is not None and checked.agreement is not None:
        a = checked.agreement
        rho = "undefined" if a["spearman"] is None else f"**{a['spearman']:.3f}**"
        st.markdown(
            f"Rank agreement of AtP with exact patching over the top **{a['n']}** cells by "
            f"|AtP| (typed pair): Spearman ρ = {rho}."
        )
        st.dataframe(
            pd.DataFrame(
                [{"layer": la, "position": p, "token": result.tokens[p], "AtP recovery": x,
                  "exact recovery": e} for (la, p), x, e in zip(a["cells"], a["atp"], a["exact"])]
            ),
            hide_index=True,
        )  # fmt: skip

# a clicked cell (or ?cell=L,P): its patched next-token distribution, computed on the click
points = (event or {}).get("selection", {}).get("points", []) if event else []
cell = next((tuple(p["customdata"]) for p in points if p.get("customdata")), None)
clicked = cell is not None
if clicked:
    st.query_params["cell"] = f"{cell[0]},{cell[1]}"
elif st.query_params.get("cell"):  # from a link: computed only on the button
    try:
        cell = tuple(int(v) for v in st.query_params["cell"].split(","))[:2]
    except ValueError:
        cell = None
if cell is None or len(cell) != 2:
    st.caption("Click a cell to see its patched next-token distribution (the typed pair).")
    st.stop()
key = (req, int(cell[0]), int(cell[1]))
held = st.session_state.get("patch_cell")
if not clicked and (held is None or held[0] != key):
    label = f"Next-token distribution with layer {cell[0]}, position {cell[1]} patched"
    clicked = st.button(label, key="patch_cell_go")
    if not clicked:
        st.stop()
if held is None or held[0] != key:
    try:
        with st.spinner("Patching that one cell…"):
            dist = patching.cell_distribution(s, req, *key[1:], lm=_ui.loaded_model(sel.model))
    except LayerScopeError as e:
        _ui.message(e)
        st.stop()
    st.session_state["patch_cell"] = held = (key, dist)
dist = held[1]
_ui.show_figure(
    distribution_figure(dist), "patch_cell_fig", f"patching-L{dist.layer}-P{dist.position}",
    data=dist.to_frame(),
)  # fmt: skip
st.caption(
    f"The typed pair's corrupted prompt with layer {dist.layer}, position {dist.position} "
    f"patched: its top {len(dist.tokens)} next tokens, next to the clean and corrupted runs'."
)
