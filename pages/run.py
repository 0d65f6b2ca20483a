"""Run page: choose a model and prompts, see the cost, submit, watch the job."""

import streamlit as st

from backend import catalog, models, prompts
from backend.commands._common import human_bytes
from backend.errors import LayerScopeError
from backend.jobs.base import JobSpec
from backend.jobs.extract import estimate
from pages import _ui

st.title("LayerScope")
st.caption(
    "Run a model on prompts; every layer's hidden state of every token is cached, "
    "so each view opens instantly afterwards."
)
s = _ui.store()

if s.summary()["runs"] == 0 and not _ui.worker().active_jobs():
    with st.container(border=True):
        st.subheader("New here? Try the demo")
        st.write(
            "Runs the bundled **demo** model (a small GPT-2 trained by LayerScope on a "
            "synthetic language with known grammar) on the **agreement** prompt set. "
            "Takes a few seconds on a laptop."
        )
        if st.button("Try the demo", type="primary", key="try_demo"):
            st.session_state["sel_model"], st.session_state["sel_set"] = "demo", "agreement"
            _ui.submit(JobSpec(model="demo", set_name="agreement"))
            st.rerun()

left, right = st.columns(2)
with left:
    st.subheader("1 · Model")
    choices = _ui.model_choices(s)
    pick = st.selectbox("Bundled or cached model", choices, key="run_model_pick")
    typed = st.text_input(
        "…or a hub id (e.g. gpt2, EleutherAI/pythia-70m@main) or a local directory",
        key="run_model_typed",
    ).strip()
    model = typed or pick
    try:
        models.resolve(model)
    except LayerScopeError as e:
        _ui.message(e, "error")
    with st.expander("Advanced"):
        dtype = st.selectbox(
            "dtype",
            ["auto", "float32", "bfloat16", "float16"],
            help="auto = bfloat16 where the CPU has AMX/AVX512-bf16, else float32",
        )
        device = st.selectbox("device", models.available_devices())
        max_tokens = st.number_input("max tokens per prompt (0 = no limit)", 0, 100_000, 0)

with right:
    st.subheader("2 · Prompts")
    mode = st.radio("Source", ["Demo set", "Type", "Upload"], horizontal=True, key="run_mode")
    set_name, table = None, None
    try:
        if mode == "Demo set":
            demos = catalog.demo_sets()
            set_name = st.selectbox(
                "Demo set", list(demos), format_func=lambda n: n, key="run_demo_set"
            )
            if set_name:
                st.caption(demos[set_name])
        elif mode == "Type":
            set_name = st.text_input("Set name", "my-prompts", key="run_typed_name")
            text = st.text_area(
                "One prompt per line",
                key="run_typed_text",
                placeholder="the dogs near the cat\nthe cat near the dogs",
            )
            if text.strip():
                table = prompts.from_lines(text)
        else:
            up = st.file_uploader("CSV, JSONL or TXT", type=["csv", "jsonl", "json", "txt"])
            if up is not None:
                raw = prompts.read_table(up.getvalue(), up.name)
                cols = list(raw.columns)
                c1, c2, c3 = st.columns(3)
                tcol = c1.selectbox("text", cols, index=cols.index(prompts.guess_text_column(raw)))
                lcol = c2.selectbox("label", [None] + cols)
                gcol = c3.selectbox("group", [None] + cols)
                table = prompts.select_columns(raw, tcol, lcol, gcol)
                set_name = st.text_input("Set name", up.name.rsplit(".", 1)[0], key="run_up_name")
        if table is not None:
            st.caption(f"{len(table)} prompts")
            st.dataframe(table.head(5), hide_index=True)
    except LayerScopeError as e:
        _ui.message(e, "error")

st.subheader("3 · Cost and submit")
spec = JobSpec(
    model=model,
    set_name=set_name or "",
    dtype=dtype,
    device=device,
    max_tokens=int(max_tokens) or None,
)
try:
    if not set_name:
        raise LayerScopeError("Choose or name a prompt set.")
    if table is not None:
        s.save_prompt_set(set_name, table, source=mode.lower())
    else:
        catalog.ensure_set(s, set_name)
    est = estimate(s, spec)
    c = st.columns(5)
    c[0].metric("Prompts", est.runs)
    c[1].metric("Already cached", est.cached_runs)
    c[2].metric("Tokens to compute", f"{est.tokens:,}")
    c[3].metric("On disk", human_bytes(est.bytes))
    c[4].metric(
        "Estimated time",
        "0 s"
        if est.tokens == 0
        else (f"{est.seconds:.0f} s" if est.seconds else "unknown (first run)"),
    )
    if est.truncated:
        st.warning(
            f"{est.truncated} prompts are longer than {spec.max_tokens} tokens and will "
            "be truncated (each run is flagged)."
        )
    if st.button(
        "Compute activations",
        type="primary",
        disabled=est.tokens == 0 and est.cached_runs == est.runs and est.runs > 0,
        key="run_submit",
    ):
        st.session_state["sel_model"], st.session_state["sel_set"] = model, set_name
        _ui.submit(spec)
    if est.runs and est.cached_runs == est.runs:
        st.success("Everything is cached: open a view from the sidebar.")
except LayerScopeError as e:
    _ui.message(e, "error")

jobs = _ui.worker().recent()
if jobs:
    st.subheader("Jobs")
    for p in jobs[:5]:
        _ui.job_panel(p.job_id, links=True)
