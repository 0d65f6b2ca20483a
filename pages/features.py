"""Features: a sparse dictionary (TopK SAE) of one layer, trained on the cache, and its latents."""

import streamlit as st

from backend.errors import LayerScopeError
from backend.figures.features import histogram_figure, latents_figure
from backend.jobs.base import JobSpec
from backend.views import dictionaries as D
from backend.views import features as FV
from pages import _ui

present, sel, runs = _ui.open_view("Features")
s = _ui.store()
n_layers = int(s.get_model(sel.model_id)["n_layers"])

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "A **sparse autoencoder** (TopK, Gao et al. 2024) rewrites each token's hidden state at "
        "one layer as a sum of a few (**k**) directions out of many (**latents**): the "
        "**features**. It is trained on this set's cached states (special tokens excluded), and "
        "measured on held-out prompts: **FVU** is the share of the variance it fails to "
        "reconstruct (0 = perfect), **L0** the mean number of active latents per token, **dead** "
        "the share of latents never active. Each point below is a latent: how often it fires "
        "(density) against how well its activation on a prompt's last token separates one label "
        "from the rest (AUROC, 0.5 = not at all). Pitfall: a feature that tracks a label is a "
        "hypothesis about what the model represents, not proof that it uses it; the logit "
        "effects are a direct-path approximation that ignores every later layer."
    )

c1, c2, c3, c4 = st.columns(4)
with c1:
    layer = _ui.qp_int("Layer", "layer", min(2, n_layers), 0, n_layers)
with c2:
    latents = _ui.qp_select("Latents", [64, 128, 256, 512, 1024, 2048, 4096], "latents", 256)
with c3:
    k = _ui.qp_select("k (active per token)", [1, 2, 4, 8, 16, 32, 64], "k", 8)
with c4:
    source = _ui.qp_radio("Dictionary", ["trained", "imported"], "dict")
c5, c6 = st.columns(2)
with c5:
    sort = _ui.qp_radio(
        "Sort latents by",
        list(FV.SORTS),
        "sort",
        default="auroc",
        format_func={"density": "density", "max_act": "max activation", "auroc": "label AUROC"}.get,
    )
with c6:
    feature = _ui.qp_select(
        "Feature", ["top of the list", *range(latents)], "feature", "top of the list"
    )
seed = 0
imported = source == "imported"
have = D.load(s, sel.model_id, layer, None if imported else sel.set_name, latents, k, seed)

if have is None and imported:
    st.info(
        f"No dictionary imported for layer {layer} yet: `python -m backend features import "
        f"--model {_ui.md(sel.model)} --layer {layer} --from DIR` (SAELens layout)."
    )
    st.stop()
if have is None:
    jobs = st.session_state.setdefault("feat_jobs", {})
    key = (sel.model_id, sel.set_name, layer, latents, k, seed)
    p = _ui.worker().progress(jobs[key]) if jobs.get(key) else None
    if p is None or not p.active:
        if p is not None and p.status == "failed":
            st.error(f"Training failed: {_ui.md(p.message)}")
        st.info(
            f"No dictionary of layer {layer} with {latents} latents and k = {k} trained on "
            f"**{_ui.md(sel.set_name)}** yet. Training reads the cached states (no model), "
            "holds out a quarter of the prompts, and is kept in the cache."
        )
        if st.button("Train", type="primary", key="feat_train"):
            jobs[key] = _ui.submit(
                JobSpec(
                    model=sel.model,
                    set_name=sel.set_name,
                    kind="features",
                    options={
                        "model_id": sel.model_id,
                        "layer": layer,
                        "latents": latents,
                        "k": k,
                        "seed": seed,
                    },
                )
            )
            st.rerun()
        st.stop()

    @st.fragment(run_every=0.5)
    def _progress(job_id: str) -> None:
        q = _ui.worker().progress(job_id)
        if q is None or not q.active:
            st.rerun(scope="app")
            return
        st.progress(
            q.tokens_done / 100,
            text=f"Training: {q.message or q.status} ({q.tokens_done}%, {q.seconds:.0f} s)",
        )
        if st.button("Cancel", key=f"feat_cancel_{job_id}"):
            _ui.worker().cancel(job_id)

    _progress(jobs[key])
    st.stop()

req = FV.Request(
    model_id=sel.model_id,
    set_name=sel.set_name,
    layer=layer,
    latents=latents,
    k=k,
    seed=seed,
    imported=imported,
    feature=None if feature == "top of the list" else int(feature),
    sort=sort,
)
result = _ui.compute("features", req, (len(runs), have.info.get("seconds"), have.info.get("from")))
info, table, d = result.info, result.table, result.detail

if info.get("fvu") is not None:
    m = st.columns(4)
    m[0].metric("held-out FVU", f"{info['fvu']:.4f}")
    m[1].metric("mean L0", f"{info['l0']:.2f}")
    m[2].metric("dead fraction", f"{info['dead_fraction']:.3f}")
    m[3].metric("held-out tokens", f"{info['n_heldout_tokens']:,}")
    st.caption(
        f"Trained on {info['n_train_tokens']:,} tokens ({info['steps']} steps, "
        f"{info['seconds']:.1f} s), hook {info['hook_name']}, seed {info['seed']}."
    )
else:
    st.caption(f"Imported from {_ui.md(info.get('from'))} ({info['hook_name']}).")

spliced = info.get("splice")
if spliced is None and st.button("Measure the spliced loss (loads the model)", key="feat_splice"):
    try:
        with st.spinner("Running the held-out prompts three ways…"):
            spliced = D.splice(s, have, _ui.loaded_model(sel.model), sel.set_name)
    except LayerScopeError as e:
        _ui.message(e)
if spliced is not None:
    rec = spliced["loss_recovered"]
    st.markdown(
        f"Next-token loss on {spliced['n_prompts']} held-out prompts: clean "
        f"**{spliced['clean']:.4f}**, with the reconstruction spliced in at layer {layer} "
        f"**{spliced['spliced']:.4f}**, with the layer's mean **{spliced['mean_ablated']:.4f}**: "
        f"loss recovered **{'n/a' if rec is None else f'{rec:.1%}'}** "
        "((ablated − spliced) / (ablated − clean))."
    )

_ui.show_figure(
    latents_figure(table, d.feature if d else None),
    "feat_latents",
    f"features-{sel.set_name}-layer{layer}",
    data=table,
)
st.dataframe(table.head(100).round(4), hide_index=True, key="feat_table")
sp = result.sparse_probe
if sp and "skipped" not in sp:
    st.markdown(
        f"**Sparse probe** on the {len(sp['latents'])} latents with the largest label AUROC on "
        f"the training prompts ({', '.join(map(str, sp['latents']))}), {sp['method']}, "
        f"{sp['folds']}-fold on {sp['n_eval_prompts']} held-out prompts' last tokens: accuracy "
        f"**{sp['accuracy']:.3f}** [{sp['interval'][0]:.3f}, {sp['interval'][1]:.3f}], "
        f"shuffled-label control {sp['control']:.3f}, majority {sp['majority']:.3f}."
    )
if d is None:
    st.stop()

st.subheader(f"Feature {d.feature}")
assoc = "; ".join(
    f"{_ui.md(lab)} vs rest {v:.3f} [{lo:.3f}, {hi:.3f}]" for lab, (v, lo, hi) in d.auroc.items()
)
st.markdown(
    f"Active on **{d.density:.2%}** of tokens, largest activation **{d.max_act:.2f}**."
    + (f" AUROC on the last token (95% bootstrap over prompts): {assoc}." if assoc else "")
)
_ui.chart(histogram_figure(d.hist_counts, d.hist_edges, d.feature), key="feat_hist")

st.markdown("**Top-activating contexts**")
vmax = max(float(d.contexts["activation"].max()), 1e-9) if len(d.contexts) else 1.0
for row in d.contexts.itertuples():
    alpha = 0.25 + 0.75 * row.activation / vmax
    words = [
        f"<span style='background:rgba(220,38,38,{alpha:.2f});border-radius:3px;padding:0 2px'>"
        f"<b>{_ui.html_text(t)}</b></span>"
        if p == row.pos
        else _ui.html_text(t)
        for p, t in sorted(row.tokens.items())
    ]
    link = f"[open prompt ↗]({_ui.prompt_url(row.run_id)})"
    st.markdown(f"`{row.activation:8.3f}` {' '.join(words)} · {link}", unsafe_allow_html=True)


def _logits():
    return FV.logit_effects(_ui.loaded_model(sel.model), d.decoder_row)


st.markdown("**Logit effects** (direct-path approximation: decoder row · final norm · W_U)")
top, bottom = _ui.computed_on_click(
    "feat_logits", "Loading the model…", _logits, "Compute loads the model to read them."
)
if not top:
    st.info("This model has no language-model head: no logit effects.")
else:
    st.markdown("up: " + ", ".join(f"{_ui.md(t)} {v:+.2f}" for t, v in top))
    st.markdown("down: " + ", ".join(f"{_ui.md(t)} {v:+.2f}" for t, v in bottom))
