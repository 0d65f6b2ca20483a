"""Prompt page: the error-analysis landing spot for one run — its sets, label and group, tokens,
norms, the probe's verdict on it, and links to every view of it."""

import numpy as np
import pandas as pd
import streamlit as st

from backend.errors import LayerScopeError
from backend.figures.prompt import norms_figure
from backend.views import prompt
from pages import _ui


def _probe_row(s, run, info, set_name: str, run_id: str, n_layers: int) -> None:
    """The probe's out-of-fold verdict on this prompt at every layer, at once when the Probes
    page has fitted the same probe (its settings come in the link), else on one click; the
    layer the user came from is marked."""
    from backend.views import probes

    qp = st.query_params
    lo, hi = 0, n_layers
    if ":" in qp.get("layers", ""):
        try:
            lo, hi = sorted(max(0, min(int(v), n_layers)) for v in qp["layers"].split(":")[:2])
        except ValueError:
            lo, hi = 0, n_layers
    try:
        req = probes.Request(
            model_id=run["model_id"],
            set_name=set_name,
            pool=qp.get("pool", probes.default_pool(info)),
            method=qp.get("probe", "logistic"),
            folds=int(qp.get("folds", 5)) if qp.get("folds", "5").isdigit() else 5,
            layers=tuple(range(lo, hi + 1)),
        )
        result = probes.cached(s, req)
    except LayerScopeError as e:
        _ui.message(e)
        return
    layer = _ui.qp_int("Probe layer", "layer", hi, lo, hi)
    stored = result is not None
    if result is None:
        if not st.button("What does the probe say about this prompt?", key="prompt_probe"):
            return
        result = _ui.compute("probes", req, None)
    verdicts = probes.prompt_row(result, run_id)
    if verdicts.empty:
        st.info("This prompt is not among the probe's units.")
        return
    at = verdicts[verdicts["layer"] == layer].iloc[0]
    right = verdicts.loc[verdicts["verdict"] == "right", "layer"].tolist()
    st.markdown(
        f"At layer {layer} the probe (trained on the other folds, never on this prompt) "
        f"predicts **{_ui.md(at.predicted)}** with score {at.score:.2f}: **{at.verdict}**. "
        f"Right at {len(right)} of {len(verdicts)} layers."
    )
    shown = verdicts.assign(at=np.where(verdicts["layer"] == layer, "◀ inspected", ""))
    st.dataframe(
        shown,
        hide_index=True,
        column_config={"at": st.column_config.TextColumn(" ")},
        height=min(38 + 35 * len(shown), 320),
        key="prompt_verdicts",
    )
    st.caption(
        f"Every layer at once: {_ui.md(req.method)} probe, {req.folds} folds, "
        f"{_ui.md(req.pool)} pooling" + (" (stored by the Probes page)." if stored else "."),
        help=_ui.gloss("margin"),
    )


st.title("Prompt")
s = _ui.store()
run_id = st.query_params.get("run")
if run_id is None:
    sel = _ui.selection()
    runs = _ui.require_runs(sel)
    if runs is None or runs.empty:
        st.stop()
    labels = [
        f"{r.idx}: {r.text[:80]}" + (f"  [{r.label}]" if r.label else "") for r in runs.itertuples()
    ]
    pick = st.selectbox("Prompt", range(len(runs)), format_func=lambda i: labels[i])
    run_id = runs["run_id"].iloc[pick]

try:  # not cached: a run deleted on the Library page must not show from a cache
    view = prompt.compute(s, prompt.Request(run_id=run_id))
except LayerScopeError as e:
    _ui.message(e, "error")
    st.stop()
run, info, toks = view.run, view.model, view.tokens

st.caption(
    f"model **{_ui.md(info.get('ref', '?'))}** · {run['kind']} run {_ui.md(run_id)} · "
    f"{run['n_tokens']} tokens · {view.n_layers} layers (0 = embeddings)"
    + (" · **truncated**" if run["truncated"] else "")
)
chips = " ".join(
    f"<span style='padding:2px 4px;margin:1px;border-radius:4px;background:"
    f"{'#eee' if sp else '#dbeafe'};font-family:monospace'>{_ui.html_text(t)}</span>"
    for t, sp in zip(toks["token"], toks["is_special"])
)
st.markdown(chips, unsafe_allow_html=True)

fig = norms_figure(view.norms, toks["pos"], toks["token"])
_ui.chart(fig, key="prompt_norms")
st.caption(
    "Norms usually grow with depth; a token far brighter than its neighbours at every "
    "layer (often the first) is a typical attention sink with massive activations."
)

# -- where this prompt sits in the views ------------------------------------------------------
sets = view.sets
model_ref = info.get("ref", "demo")
if len(sets):
    st.subheader("In the views")
    names = sets["set_name"].tolist()
    came_from = st.query_params.get("set")
    pick_set = (
        st.selectbox(
            "Prompt set",
            names,
            index=names.index(came_from) if came_from in names else 0,
            key="prompt_set",
            format_func=lambda n: n,
        )
        if len(sets) > 1
        else sets["set_name"].iloc[0]
    )
    row = sets[sets["set_name"] == pick_set].iloc[0]
    facts = [f"set **{_ui.md(pick_set)}** (prompt {int(row['idx'])})"]
    if isinstance(row["label"], str):
        facts.append(f"label **{_ui.md(row['label'])}**")
    if isinstance(row["group"], str):
        facts.append(f"group **{_ui.md(row['group'])}**")
    st.markdown(" · ".join(facts))
    from backend.views.probes import default_pool

    q = {"model": model_ref, "set": pick_set}
    pool = {"pool": default_pool(info)}  # the pooling every page uses for this model
    cols = st.columns(4)
    cols[0].page_link("pages/lens.py", label="its logit lens", query_params={**q, "run": run_id})
    cols[1].page_link(
        "pages/trajectories.py",
        label="its path in the trajectories",
        query_params={**q, **pool, "highlight": run_id},
    )
    cols[2].page_link("pages/probes.py", label="the set's probes", query_params={**q, **pool})
    cols[3].page_link(
        "pages/similarity.py",
        label="prompt × prompt",
        query_params={**q, "kind": "prompt", "units": pool["pool"]},
    )
    if info.get("has_lm_head", True) and st.button(
        "Its lens row: the next-token guess at the last position, layer by layer",
        key="prompt_lens",
    ):  # loads the model on the click only
        from backend.views import lens

        try:
            one = lens.compute_run(s, _ui.loaded_model(model_ref), run_id, kind="logit")
        except LayerScopeError as e:
            _ui.message(e)
        else:
            res, last = one.lens, len(one.tokens) - 1
            guesses = pd.DataFrame(
                {
                    "layer": list(res.layers),
                    "top guess": [one.names[i] for i in res.top_ids[:, last, 0]],
                    "p": res.top_probs[:, last, 0].round(3),
                    "rank of the final answer": res.final_rank[:, last],
                }
            )
            st.dataframe(guesses, hide_index=True)
            st.caption(f"{_ui.md(one.commitment_text(last))}.")
    with st.expander("Top features of each token (a sparse dictionary of one layer)"):
        from backend.views import features as FV

        top = view.n_layers - 1
        f_layer = st.slider("Dictionary layer", 0, top, min(2, top))
        table = FV.token_features(s, run_id, pick_set, f_layer)
        if table is None:
            st.info(f"No dictionary of layer {f_layer} yet: train one on the Features page.")
        else:
            st.dataframe(table, hide_index=True, key="prompt_features")
        st.page_link(
            "pages/features.py",
            label="the Features page",
            query_params={**q, "layer": str(f_layer)},
        )
    if isinstance(row["label"], str) and run["kind"] == "prompt":
        _probe_row(s, run, info, pick_set, run_id, view.n_layers - 1)
