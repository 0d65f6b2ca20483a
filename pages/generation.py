"""Generation: sample several runs of a prompt, see when they settle and what predicts outcomes."""

import contextlib

import numpy as np
import pandas as pd
import streamlit as st

from backend import catalog, models
from backend.errors import LayerScopeError
from backend.figures.generation import (
    commitment_heatmap,
    correlation_heatmap,
    scatter_figure,
    separation_figure,
    strip_figure,
    tree_figure,
)
from backend.figures.similarity import similarity_figure
from backend.jobs.base import JobSpec
from backend.views import generation as generation_view
from pages import _ui

st.title("Generation")
present = _ui.presenting()
sel = _ui.selection()
s = _ui.store()
if sel.set_name is None:
    st.stop()
with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "The same prompt is sampled several times. For each **layer** and **generation step** "
        "the heatmap shows how similar the runs' hidden states are (mean cosine over pairs of "
        "runs, of what each run added to its hidden state since the prompt's last token, so the "
        "large direction every residual stream shares does not make everything look alike): red = the runs are in the same "
        "state (the model has *settled*), blue/white = they went different ways. Step 0 is the "
        "last prompt token, identical in every run (blank). The dashed line marks where their tokens "
        "first differ.\n\n"
        "Across a set, commitment is compared with **consistency** (how often two runs reach "
        "the same answer). Published work finds that early commitment predicts consistent "
        "behaviour: it says whether a model has settled, *not* whether it is right.\n\n"
        "**Outcome separation** (CLUE-style) summarises each run by how its hidden state moved "
        "(last generated step minus prompt end) and asks whether that change lies nearer to the "
        "runs that succeeded or to those that failed *on other prompts* (leave one prompt "
        "out). Pitfall: with few prompts or one-sided outcomes these numbers are noisy; read "
        "the run counts.\n\n"
        "On the demo model (ambiguity set, 8 samples, 8 new tokens, layer 1, step 1): fact and "
        "counting prompts 0.99, random colour lists 0.70, 'repeat' prompts 0.57 — the small "
        "model never learnt to copy, so its runs diverge although the language determines "
        "them; commitment tracks behaviour, not the label. Commitment vs consistency over the "
        "200 prompts: Pearson 0.61 [0.56, 0.66], Spearman 0.83."
    )


c = st.columns(5)
S = generation_view.Sampling  # the defaults are Sampling's own (the CLI's too)
fields = [
    ("Samples", "n", S.samples, 2, 32, None),
    ("New tokens", "new", S.max_new_tokens, 1, 64, None),
    ("Temperature", "temp", S.temperature, 0.05, 3.0, 0.05),
    ("Top-p", "top_p", S.top_p, 0.05, 1.0, 0.05),
    ("Seed", "seed", S.seed, 0, 10**6, None),
]
sampling = generation_view.Sampling(
    *(
        _ui.qp_number(label, key, default, lo, hi, step, where=col, widget_key=f"gen_{key}")
        for col, (label, key, default, lo, hi, step) in zip(c, fields)
    )
)
dtype = (
    "float32"  # a model not in the cache has nothing sampled; resolving it could mean a download
)
if sel.model_id is not None:
    with contextlib.suppress(LayerScopeError):  # the model's own dtype, as the job uses
        dtype = str(models.pick_dtype("auto", model=sel.model)).removeprefix("torch.")
settings = sampling.key() | {"dtype": dtype}

prompts_df = s.get_set(sel.set_name) if sel.set_name in set(s.list_sets()["set_name"]) else None
if prompts_df is None or prompts_df.empty:
    if sel.set_name in catalog.demo_sets():  # bundled: loading it is cheap and computes nothing
        if st.button(f"Load the demo set {_ui.md(sel.set_name)}", type="primary", key="gen_load"):
            catalog.ensure_set(s, sel.set_name)
            st.rerun()
        st.info(f"The bundled set **{_ui.md(sel.set_name)}** is not loaded yet (no model runs).")
    else:
        st.info(
            f"No prompt set **{_ui.md(sel.set_name)}** in the cache: create it on the Run "
            "page, or pick a demo set (e.g. **ambiguity**)."
        )
        st.page_link("pages/run.py", label="open the Run page")
    st.stop()
texts = list(dict.fromkeys(prompts_df["text"]))
has_labels = prompts_df["label"].notna().any()

with st.expander("Answers and outcomes", expanded=False):
    o = st.columns(3)
    regex = (
        o[0].text_input(
            "Answer pattern (regex; group 1 if any)",
            st.query_params.get("regex", ""),
            key="gen_regex",
            help="Default: the whole continuation is the answer (runs agree when they generate the same text). E.g. `^(\\S+)` = the first word.",
        )
        or None
    )
    st.query_params["regex"] = regex or ""
    versus = has_labels and o[1].toggle(
        "Judge answers against the set's label",
        st.query_params.get("versus") == "1",
        key="gen_versus",
        help="Outcome = correct / wrong (answer equals the label). Off: the "
        "answer itself is the outcome; success = agreeing with the prompt's majority answer.",
    )
    st.query_params["versus"] = "1" if versus else "0"
    centres = {
        "start": "what each run added since the prompt end",
        "set": "centred on the set's mean state",
        "none": "raw states",
    }
    with o[2]:
        centre = _ui.qp_radio(
            "Compare",
            list(centres),
            "centre",
            format_func=centres.get,
            horizontal=False,
            help="Raw residual streams share one large "
            "direction, so raw cosines sit near 1. The default subtracts each "
            "run's prompt-end state (identical across runs), so commitment "
            "compares what the generations added. The set mean favours "
            "prompts far from it.",
        )

mrow = s.find_model(sel.model)
try:  # not cached: the runs change while a sampling job is running
    ss = (
        generation_view.compute(
            s,
            generation_view.Request(
                model_id=mrow["model_id"],
                set_name=sel.set_name,
                sampling=sampling,
                dtype=dtype,
                regex=regex,
                versus_label=versus,
                centre=centre,
            ),
        ).sampled
        if mrow
        else None
    )
except LayerScopeError as e:
    _ui.error_box(e)
    st.stop()
sampled = {p.text: i for i, p in enumerate(ss.prompts)} if ss else {}

b1, b2 = st.columns([3, 2])
one = _ui.qp_select(
    "Prompt", texts, "prompt", format_func=lambda t: ("● " if t in sampled else "○ ") + t
)
if b1.button("Sample this prompt", type="primary", key="gen_one"):
    _ui.submit(
        JobSpec(
            model=sel.model,
            set_name=sel.set_name,
            kind="generate",
            options=settings | {"samples": sampling.samples, "prompts": [one]},
        )
    )
missing = len(texts) - len(sampled)
if b2.button(
    f"Sample the whole set ({len(texts)} prompts, {missing} not sampled yet)",
    key="gen_all",
    disabled=missing == 0,
):
    _ui.submit(
        JobSpec(
            model=sel.model,
            set_name=sel.set_name,
            kind="generate",
            options=settings | {"samples": sampling.samples},
        )
    )
for p in _ui.worker().active_jobs():
    _ui.job_panel(p.job_id)

# -- one prompt -------------------------------------------------------------------------------
if one not in sampled:
    st.info(
        "No samples for this prompt with these settings yet: press **Sample this prompt** "
        "(● marks prompts already sampled with these settings)."
    )
else:
    it = ss.prompts[sampled[one]]
    com = it.commitment
    st.subheader(f"“{_ui.md(one)}” — {len(it.run_ids)} runs")
    div = com.divergence_step
    st.caption(
        f"Consistency {it.consistency:.2f} (share of pairs of runs with the same outcome); "
        + (
            "the runs never diverge."
            if div is None
            else f"tokens diverge at generated token {div} (step {div + 1} is the first state that "
            "has read different tokens)."
        )
        + (" Some runs hit the token limit." if it.truncated else "")
    )
    heat = pd.DataFrame(com.similarity, index=pd.Index(range(len(com.similarity)), name="layer"))
    _ui.show_figure(
        commitment_heatmap(com.similarity, None if div is None else div + 1, spread=True),
        "gen_heat",
        "commitment",
        data=heat.reset_index(),
    )
    runs = pd.DataFrame(
        {
            "run": range(len(it.run_ids)),
            "seed": it.seeds,
            "continuation": [generation_view.join_tokens(g) for g in it.continuations],
            "answer": it.answers,
            "outcome": it.outcomes,
            "open": [_ui.prompt_url(r) for r in it.run_ids],
        }
    )
    st.dataframe(
        runs,
        hide_index=True,
        column_config={"open": st.column_config.LinkColumn("prompt page", display_text="open")},
    )
    tree = generation_view.prefix_tree(it.continuations)
    _ui.show_figure(tree_figure(tree), "gen_tree", "prefix-tree")
    st.caption(tree["note"])
    if st.button("When was each token decided? (logit lens on every run)", key="gen_strip"):
        lm = _ui.loaded_model(sel.model)  # a click: the model loads only now
        strips = [generation_view.commitment_strip(s, lm, r) for r in it.run_ids]
        _ui.show_figure(
            strip_figure(strips, ss.n_layers - 1),
            "gen_strip_fig",
            "decided-at",
            data=pd.concat([x.assign(run=k) for k, x in enumerate(strips)]),
        )
        probs = [x["p_token"].tolist() for x in strips]
        _ui.show_figure(
            tree_figure(generation_view.prefix_tree(it.continuations, probabilities=probs)),
            "gen_tree_p",
            "prefix-tree-probabilities",
        )
        st.caption(generation_view.TREE_NOTE_P)
    n_l, n_s = com.similarity.shape
    cl, cs = st.columns(2)
    with cl:
        layer = _ui.qp_int("Run × run similarity at layer", "rr_layer", n_l - 1, 0, n_l - 1)
    with cs:
        step = _ui.qp_int("… and step", "rr_step", min(1, n_s - 1), 0, n_s - 1)
    rr = generation_view.run_by_run(s, ss, sampled[one], layer, step)
    _ui.show_figure(
        similarity_figure(rr),
        "gen_rr",
        "run-similarity",
        data=pd.DataFrame(rr.values, index=rr.rows, columns=rr.cols).reset_index(),
    )

# -- across the set ---------------------------------------------------------------------------
if ss is None or len(ss.prompts) < 3:
    st.info(
        f"{len(sampled)} of {len(texts)} prompts sampled with these settings: sample at "
        "least 3 to compare commitment with consistency across the set."
    )
    st.stop()
st.subheader(f"Across the set: {len(ss.prompts)} of {len(texts)} prompts sampled")
sims = ss.sims()
cons = np.array([p.consistency for p in ss.prompts])
min_prompts = max(3, len(ss.prompts) // 2)  # cells most runs reach: no 13-prompt "best"
grid = generation_view.correlation_grid(sims, cons, min_prompts)
held = ss.held_out()
start = (
    (held.layer, held.step)
    if held.layer is not None
    else (ss.n_layers - 1, min(1, sims.shape[2] - 1))
)
c1, c2 = st.columns(2)
with c1:
    cl = _ui.qp_int("Layer", "set_layer", start[0], 0, ss.n_layers - 1)
with c2:
    cs = _ui.qp_int(
        "Step",
        "set_step",
        start[1],
        0,
        sims.shape[2] - 1,
        help="Step 0 is the last prompt token, identical in every run: pick ≥ 1.",
    )
table = ss.table(cl, cs)
stats = ss.statistics(cl, cs)
corr, part = stats.raw, stats.partial
if corr.available:
    title = (
        f"Commitment at layer {cl}, step {cs} vs consistency ({corr.n} prompts): "
        f"ρ = {generation_view.fmt(corr.spearman)}, r = {generation_view.fmt(corr.pearson)}; "
        f"partial r = {generation_view.fmt(part.r)} (surface agreement removed)"
    )
else:
    title = f"Commitment at layer {cl}, step {cs} vs consistency ({corr.n} prompts)"
_ui.show_figure(
    scatter_figure(table, title),
    "gen_scatter",
    "commitment-vs-consistency",
    data=table.drop(columns=["run_id"]).assign(surface_agreement=ss.surface()[:, cs]),
)
d = stats.to_dict()
st.markdown(
    f"**Raw:** {_ui.md(generation_view.correlation_text(d['correlation']))}  \n"
    f"**Beyond surface agreement:** partial r = {generation_view.fmt(part.r)} "
    f"[{generation_view.fmt(part.ci_low)}, {generation_view.fmt(part.ci_high)}] — commitment at step {cs} has read the "
    "sampled tokens, so part of it re-measures whether the runs emitted the same tokens; the "
    "partial correlation controls for that token overlap (as the published measure does)."
)
summary = generation_view.label_summary(table)
st.dataframe(summary.round(3), hide_index=True)
if held.layer is not None:
    st.caption(
        f"Best cell, chosen on a random half of the prompts ({held.n_select}) and reported on "
        f"the other half ({held.n_test}): layer {held.layer}, step {held.step} — held-out "
        f"r = {generation_view.fmt(held.r)}, partial r = {generation_view.fmt(held.partial_r)} (r on the choosing half "
        f"{generation_view.fmt(held.r_select)}: the maximum of ~{grid.r.size} cells is biased upward). "
        f"Cells that fewer than {min_prompts} prompts reach are blank. Layer 0 is the "
        "embedding of the token just read: there, commitment is token agreement."
    )
_ui.show_figure(
    correlation_heatmap(grid.r),
    "gen_grid",
    "commitment-correlation-grid",
    data=pd.DataFrame(grid.r).rename_axis("layer").reset_index(),
)

# -- outcome separation -----------------------------------------------------------------------
st.subheader("Outcome separation: does a run's hidden-state change give its outcome away?")
success, meaning = ss.success()
if success.all() or not success.any():
    st.info(
        f"Every run has the same outcome ({meaning}: {bool(success[0])}); separation needs "
        "runs that succeed and runs that fail. Try judging against the label, an answer "
        "pattern, a higher temperature, or a set with ambiguous prompts."
    )
    st.stop()
try:
    sep = ss.separation()
except ValueError as e:
    _ui.message(e)
    st.stop()
st.caption(
    f"Success = {meaning}: {int(success.sum())} of {len(success)} runs. "
    f"{int(sep.judged.sum())} runs judged (their prompt's neighbours had both outcomes)."
)
_ui.show_figure(
    separation_figure(sep),
    "gen_sep",
    "outcome-separation",
    data=pd.DataFrame({"layer": range(ss.n_layers), "accuracy": sep.accuracy, "auroc": sep.auroc}),
)
sl = _ui.qp_int(
    "Misjudged runs at layer",
    "sep_layer",
    sep.best_layer if sep.best_layer is not None else ss.n_layers - 1,
    0,
    ss.n_layers - 1,
)
wrong = sep.misjudged(sl)
runs_df = ss.runs()
if len(wrong):
    bad = runs_df.iloc[wrong].assign(
        predicted=np.where(sep.predicted(sl)[wrong], "success", "failure"),
        margin=np.round(sep.score[sl, wrong], 3),
        open=[_ui.prompt_url(r) for r in runs_df["run_id"].iloc[wrong]],
    )
    bad = bad.iloc[np.argsort(-np.abs(bad["margin"].to_numpy()), kind="stable")]
    st.markdown(
        f"**{len(wrong)} runs the signature gets wrong at layer {sl}** "
        f"(accuracy {sep.accuracy[sl]:.2f}, AUROC {generation_view.fmt(sep.auroc[sl])}), the most "
        f"confident mistakes first:"
    )
    st.dataframe(
        bad.drop(columns=["run_id"]),
        hide_index=True,
        column_config={"open": st.column_config.LinkColumn("prompt page", display_text="open")},
    )
else:
    st.success(f"At layer {sl} the signature judges every judged run correctly.")
