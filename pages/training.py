"""Training: the same views with the training step as one more axis."""

import streamlit as st

from backend import models
from backend.errors import LayerScopeError
from backend.figures import training as training_figure
from backend.jobs.base import JobSpec
from backend.views import training
from pages import _ui

st.title("Training")
present = _ui.presenting()
sel = _ui.selection()
s = _ui.store()

with st.expander("What am I looking at?", expanded=present):
    st.markdown(
        "The same model saved at several points of its training (**checkpoints**, each its "
        "own model `name@step<N>`), and the per-model views computed on each, with the "
        "**training step** on x. **Probe**: cross-validated accuracy of a linear probe per "
        "layer, next to the same probe on shuffled labels. **Behaviour**: does the model do "
        "the task — the share of prompts × answer pairs where the right answer (the verb form "
        "that agrees) is the more likely one — and its loss on held-out text. **CKA**: how "
        "similar each layer is to the same layer of the final model (and of the previous "
        "checkpoint). **Layer statistics**: massive activations (largest |value| / median), "
        "effective rank and anisotropy. Pitfall: a representation can be decodable before "
        "the model uses it — compare the blue and red lines."
    )

if sel.set_name is None:
    st.info("Pick a prompt set in the sidebar.")
    st.stop()
family = models.family(sel.model)
try:
    refs = training.checkpoint_refs(family, "all", s)
except LayerScopeError:  # neither bundled checkpoints nor a family in the cache
    st.info(
        f"**{_ui.md(family)}** has no training checkpoints here. The bundled **demo** has "
        "nine; for a hub model such as Pythia, extract its revisions first: `python -m backend "
        "extract --model EleutherAI/pythia-160m --checkpoints step1000,step3000 --set …`."
    )
    st.stop()
req = training.Request(set_name=sel.set_name, checkpoints=tuple(refs))
have, missing = training.coverage(s, req)
unmeasured = [r for r, mid in have.items() if training.behaviour_of(s, mid, sel.set_name) is None]
if missing or unmeasured:
    todo = sorted(set(missing) | set(unmeasured), key=refs.index)
    st.info(
        f"{len(missing)} of {len(refs)} checkpoints of **{_ui.md(family)}** have no activations "
        f"of **{_ui.md(sel.set_name)}** yet"
        + (f", {len(unmeasured)} no measured behaviour" if unmeasured else "")
        + f": {_ui.md(', '.join(todo))}."
    )
    jobs = _ui.worker().active_jobs()
    if jobs:
        _ui.job_panel(jobs[0].job_id)
    elif st.button(
        f"Compute {_ui.md(sel.set_name)} on {len(todo)} checkpoints", type="primary", key="tr_job"
    ):
        spec = JobSpec(family, sel.set_name, kind="checkpoints", options={"checkpoints": refs})
        _ui.submit(spec)
        st.rerun()
    if len(have) < 2:
        st.stop()

n_layers = int(s.get_model(next(iter(have.values())))["n_layers"])
c1, c2 = st.columns(2)
with c1:
    layer = _ui.qp_select(
        "Trajectory layer",
        [-1, *range(n_layers + 1)],
        "layer",
        default=-1,
        format_func=lambda v: "best probe layer (final model)" if v < 0 else f"layer {v}",
        help="The layer whose PCA is animated over checkpoints.",
    )
with c2:
    colour = _ui.qp_radio("Colour", ["label", "group"], "color")
req = training.Request(
    set_name=sel.set_name, checkpoints=tuple(refs), layer=None if layer < 0 else layer
)
n_measured = len(have) - len(unmeasured)
res = _ui.compute("training", req, (tuple(sorted(have.values())), n_measured))
on = res.onsets()
table = res.to_frame()

st.subheader("When does the label become decodable, and when does the model use it?")
_ui.show_figure(
    training_figure.behaviour_figure(res), "tr_behaviour", f"training-behaviour-{sel.set_name}",
    data=res.behaviour_frame(),
)  # fmt: skip
lvl = on["level"]
st.markdown(
    f"Decodable (the Probes view's verdict) from **step {on['decodable']}**; best-layer probe "
    f"accuracy ≥ {lvl} from **step {on['probe']}**; answer accuracy ≥ {lvl} from **step "
    f"{on['behaviour']}**; CKA of layer {on['cka_layer']} to the final model ≥ {lvl} from "
    f"**step {on['cka']}** (each: the first checkpoint from which it stays there)."
)
_ui.show_figure(
    training_figure.probe_figure(res), "tr_probe", f"training-probe-{sel.set_name}", data=table
)
st.subheader("Similarity to the final model")
_ui.show_figure(
    training_figure.cka_figure(res), "tr_cka", f"training-cka-{sel.set_name}", data=table
)
st.caption(
    f"Linear CKA over {res.n_cka_units:,} {res.request.cka_units} units of the set, layer k of "
    "each checkpoint against layer k of the final one (the diagonal of the Similarity view's "
    "model × model CKA)."
)
st.subheader("Layer statistics over training")
_ui.show_figure(
    training_figure.stats_figure(res), "tr_stats", f"training-stats-{sel.set_name}", data=table
)
st.subheader("Trajectories across training")
_ui.show_figure(
    training_figure.trajectory_over_training(res, colour),
    "tr_traj",
    f"training-trajectory-{sel.set_name}",
)
if res.missing:
    st.caption(f"Not shown (no activations yet): {_ui.md(', '.join(res.missing))}.")
