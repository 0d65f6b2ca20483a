"""Attribution: who wrote this answer — the next-token logit split into what each layer, head
and bias term contributed, and the token × layer graph of where the information came from."""

import pandas as pd
import streamlit as st

from backend.errors import LayerScopeError
from backend.figures.attribution import components_figure, graph_figure, heads_figure
from backend.views import attribution
from pages import _ui

st.title("Attribution")
present = _ui.presenting()
sel = _ui.selection(need_set=False)

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "The model's logit for the **answer** token at one position (minus the **against** "
        "token's, if given) split into what each part of the model wrote into the residual "
        "stream: the embeddings, each layer's attention and MLP output, and the bias terms. "
        "With the final normalisation's scale frozen at this run the logit is linear in the "
        "stream, so the parts **add up exactly** to the model's number (the title says both). "
        "Each attention term splits further by **head**. The **graph** (Ferrando & Voita "
        "2024) has a node per token and layer; an edge says how large a share of a position's "
        "attention update came from a source token (or from its own residual stream), and "
        "edges below the threshold are dropped. Red: the route into the answer's node. Click "
        "a node to list what flowed into it and the logit lens there (its top tokens). "
        "Pitfall: a direct contribution is not the whole effect — a head can matter through "
        "the layers after it; check with Patching."
    )

prompt = _ui.qp_text("Prompt", "prompt", "the teacher above the boys always")
c = st.columns(4)
answer = _ui.qp_text("Answer token", "answer", "helps", help="default: the top-1", where=c[0])
against = _ui.qp_text("Against token (optional)", "against", "help", where=c[1])
position = _ui.qp_number("Position (-1 = last)", "position", -1, -512, 511, where=c[2])
threshold = _ui.qp_number("Graph threshold", "threshold", 0.04, 0.0, 0.99, 0.01, where=c[3])
try:
    req = attribution.Request(model=sel.model, prompt=prompt, answer=answer or None,
                              against=against or None, position=int(position),
                              threshold=float(threshold))  # fmt: skip
except LayerScopeError as e:
    _ui.message(e)
    st.stop()

held = st.session_state.get("attr_result")
res = _ui.computed_on_click(
    "attr_compute",
    "Running the model and splitting the logit…",
    lambda: attribution.compute(None, req),
    "Press **Compute** to split this logit into its parts.",
    stored=held[1] if held is not None and held[0] == req else None,
)
st.session_state["attr_result"] = (req, res)  # kept for reruns (a node click)

_ui.show_figure(components_figure(res), "attr_parts", "attribution-components",
                data=res.to_frame())  # fmt: skip
st.caption(
    f"{_ui.md(res.target_label)} after {_ui.md(repr(res.tokens[res.position]))} (position "
    f"{res.position}): the model gives **{res.logit_diff:.4f}**, the parts sum to "
    f"**{res.total:.4f}** (difference {abs(res.total - res.logit_diff):.1e})."
)
heads = pd.DataFrame(res.to_dict()["heads"])
_ui.show_figure(heads_figure(res), "attr_heads", "attribution-heads", data=heads)
event = _ui.show_figure(graph_figure(res), "attr_graph", "attribution-graph",
                        on_select="rerun", selection_mode="points")  # fmt: skip
points = (event or {}).get("selection", {}).get("points", []) if event else []
node = next((tuple(p["customdata"]) for p in points if p.get("customdata")), None)
if node is not None:
    st.query_params["node"] = f"{node[0]},{node[1]}"
elif st.query_params.get("node"):  # a link to a node: shown once the result is computed
    try:
        node = tuple(int(v) for v in st.query_params["node"].split(","))[:2]
    except ValueError:
        node = None
if node is not None and not (
    len(node) == 2 and 0 <= node[0] <= len(res.attn) and 0 <= node[1] < len(res.tokens)
):
    node = None
if node is not None:
    rows = [{"from layer": e.source[0], "from token": res.tokens[e.source[1]], "kind": e.kind,
             "share": round(e.weight, 4)}
            for e in res.graph.edges if e.target == node]  # fmt: skip
    st.markdown(f"Into layer **{node[0]}**, token {_ui.md(repr(res.tokens[node[1]]))}:")
    if rows:
        st.dataframe(pd.DataFrame(rows).sort_values("share", ascending=False), hide_index=True)
    else:
        st.info("No edge into this node carries the threshold's share.")
    top = res.node_lens.get((int(node[0]), int(node[1])))
    if top:
        st.markdown("The logit lens at this node (final norm and unembedding of its stream):")
        st.dataframe(pd.DataFrame([{"token": t, "p": round(q, 4)} for t, q in top]),
                     hide_index=True, key="attr_node_lens")  # fmt: skip
links = attribution.patch_links(res)
if links:
    st.markdown(
        "**Patch an edge exactly** — the residual stream at the source node of one of the "
        "strongest cross-token edges, clean = this prompt"
        + ("" if "corrupted" in links[0]["query_params"] else
           " (type a corrupted prompt with the same number of tokens there)") + ":"
    )  # fmt: skip
    for link in links:
        st.page_link("pages/patching.py", label=link["label"], icon=":material/healing:",
                     query_params=link["query_params"])  # fmt: skip
else:
    st.page_link("pages/patching.py", label="Check a cell by patching it exactly",
                 icon=":material/healing:")  # fmt: skip
