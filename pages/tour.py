"""Tour: curated stories on the bundled models, one click from nothing to a configured view."""

import streamlit as st

from backend import models
from backend.jobs.base import JobSpec
from backend.tour import STORIES
from pages import _ui

st.title("Tour")
st.caption(
    "Short guided stories for a class or a first look. Each button computes what the "
    "cache lacks (up to a minute the first time on the demo models), then opens the "
    "configured view."
)
_ui.presenting()
s = _ui.store()

if "demo" not in models.bundled_models():
    st.error(
        "The bundled demo models are missing; rebuild them with `python -m backend.demo.train`."
    )
    st.stop()


def missing_pairs(story) -> list[tuple[str, str]]:
    out = []
    for model, set_name in story.needs:
        row = s.find_model(model)
        have = len(s.set_runs(set_name, row["model_id"])) if row else 0
        known = set(s.list_sets()["set_name"])
        want = len(s.get_set(set_name)) if set_name in known else -1
        if want < 0 or have < want:
            out.append((model, set_name))
    return out


pending = st.session_state.get("tour_pending")
for story in STORIES:
    with st.container(border=True):
        st.subheader(story.title)
        st.write(story.narration)
        st.markdown(f"**Notice:** {story.notice}")
        if st.button("Show me", key=f"tour_{story.key}", type="primary"):
            todo = missing_pairs(story)
            if story.page == "training" and todo:  # one job over the checkpoints (+ behaviour)
                refs = [m for m, _ in story.needs]
                _ui.submit(JobSpec("demo", todo[0][1], kind="checkpoints", options={"checkpoints": refs}))  # fmt: skip
                todo = []
            for model, set_name in todo:
                _ui.submit(JobSpec(model=model, set_name=set_name))
            st.session_state["tour_pending"] = pending = story.key
        if pending == story.key:
            todo = missing_pairs(story)
            jobs = _ui.worker().active_jobs()
            if todo and jobs:
                st.info(f"Computing {len(todo)} missing model × set pair(s)…")
                _ui.job_panel(jobs[0].job_id)
            elif todo:
                st.error("Some activations could not be computed; see the Run page's jobs.")
            else:
                st.session_state.pop("tour_pending", None)
                params = {**story.params, "story": story.key}
                if st.session_state.get("_ls_present"):
                    params["present"] = "1"
                st.session_state["sel_model"] = params.get("model")
                st.session_state["sel_set"] = params.get("set")
                st.switch_page(f"pages/{story.page}.py", query_params=params)
