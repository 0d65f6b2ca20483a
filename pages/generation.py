"""Generation: sample several runs of a prompt and see when they settle."""

import pandas as pd
import streamlit as st

from backend import generation_views, models
from backend.analysis.commitment import correlate, correlation_grid
from backend.analysis.similarity import cosine_matrix
from backend.figures.commitment import commitment_heatmap, correlation_heatmap, scatter_figure
from backend.figures.similarity import similarity_figure
from backend.analysis.similarity import SimilarityMatrix
from backend.generate import Sampling
from backend.worker import JobSpec
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
        "runs): red = the runs are in the same state (the model has *settled*), blue/white = "
        "they went different ways. The dashed line marks where their tokens first differ. "
        "Across a set, commitment is compared with **consistency** (how often two runs reach "
        "the same outcome). Published work finds that early commitment predicts consistent "
        "behaviour — it says whether a model has settled, not whether it is right. On the demo "
        "model: counting and copying prompts stay near 1; random colour lists fall apart.")

c = st.columns(5)
n = c[0].number_input("Samples", 2, 32, 8, key="gen_n")
new = c[1].number_input("New tokens", 1, 32, 8, key="gen_new")
temp = c[2].number_input("Temperature", 0.05, 3.0, 1.0, 0.05, key="gen_temp")
top_p = c[3].number_input("Top-p", 0.05, 1.0, 1.0, 0.05, key="gen_top_p")
seed = c[4].number_input("Seed", 0, 10**6, 0, key="gen_seed")
sampling = Sampling(int(n), int(new), float(temp), float(top_p), int(seed))
dtype = str(models.pick_dtype("auto")).removeprefix("torch.")
settings = sampling.key() | {"dtype": dtype}

prompts_df = s.get_set(sel.set_name) if sel.set_name in set(s.list_sets()["set_name"]) else None
if prompts_df is None or prompts_df.empty:
    st.info("Load the set first (Run page), e.g. the demo set **ambiguity**.")
    st.stop()
labels = dict(zip(prompts_df["text"], prompts_df["label"]))
mrow = s.find_model(sel.model)
items = generation_views.prompt_samples(s, mrow["model_id"], settings) if mrow else []
done = {it.text for it in items}
b1, b2 = st.columns(2)
one = b1.selectbox("Prompt", prompts_df["text"].tolist(), key="gen_prompt")
if b1.button("Sample this prompt", type="primary", key="gen_one"):
    _ui.submit(JobSpec(model=sel.model, set_name=sel.set_name, kind="generate",
                       options=settings | {"samples": sampling.samples, "prompts": [one]}))
if b2.button(f"Sample the whole set ({len(prompts_df)} prompts)", key="gen_all"):
    _ui.submit(JobSpec(model=sel.model, set_name=sel.set_name, kind="generate",
                       options=settings | {"samples": sampling.samples}))
for p in _ui.worker().active_jobs():
    _ui.job_panel(p.job_id)

it = next((x for x in items if x.text == one), None)
if it is None:
    st.info("No samples for this prompt with these settings yet: press **Sample this prompt**.")
else:
    st.subheader(f"“{one}” — {len(it.run_ids)} runs")
    _ui.show_figure(commitment_heatmap(it.commitment.similarity, it.commitment.divergence_step),
                    "gen_heat", "commitment", data=pd.DataFrame(it.commitment.similarity))
    st.dataframe(pd.DataFrame({"run": range(len(it.generated)),
                               "continuation": [" ".join(g) for g in it.generated],
                               "outcome": it.outcomes}), hide_index=True)
    st.caption(f"Consistency {it.consistency:.2f}; tokens diverge at step "
               f"{it.commitment.divergence_step}.")
    layer = st.slider("Run × run similarity at layer", 0, it.states.shape[1] - 1,
                      it.states.shape[1] - 1, key="gen_rr_layer")
    step = st.slider("… and step", 0, it.states.shape[2] - 1, min(1, it.states.shape[2] - 1),
                     key="gen_rr_step")
    names = tuple(f"run {i}" for i in range(len(it.run_ids)))
    rr = SimilarityMatrix(cosine_matrix(it.states[:, layer, step]), names, names, "run", -1, 1)
    st.plotly_chart(similarity_figure(rr), key="gen_rr")

if len(items) >= 3:
    st.subheader(f"Across the set: {len(items)} prompts sampled")
    nl = min(x.commitment.similarity.shape[0] for x in items)
    ns = min(x.commitment.similarity.shape[1] for x in items)
    cl = st.slider("Layer", 0, nl - 1, nl - 1, key="gen_set_layer")
    cs = st.slider("Step", 0, ns - 1, min(1, ns - 1), key="gen_set_step")
    table = generation_views.summary_table(items, labels, cl, cs)
    corr = correlate(table["commitment"], table["consistency"])
    st.plotly_chart(scatter_figure(table, f"Commitment at layer {cl}, step {cs} vs consistency: "
                                   f"r = {corr.pearson:.2f} [{corr.ci_low:.2f}, "
                                   f"{corr.ci_high:.2f}], ρ = {corr.spearman:.2f}"),
                    key="gen_scatter")
    means = table.groupby("label")["commitment"].mean().round(3).to_dict()
    st.caption(f"Mean commitment by label: {means}. Step 0 is the last prompt token, identical "
               "in every run; pick step ≥ 1.")
    grid = correlation_grid([x.commitment.similarity[:nl, :ns] for x in items],
                            table["consistency"].tolist())
    st.plotly_chart(correlation_heatmap(grid), key="gen_grid")
