"""Run page: choose a model and prompts, see the cost, submit, watch the job."""

import streamlit as st

from backend import catalog, models, prompts
from backend.budget import human_bytes
from backend.errors import LayerScopeError
from backend.jobs.base import JobSpec, engine_options
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
            "synthetic language with known grammar) on the **agreement** prompt set "
            "(400 short prompts). 20–60 s the first time on a two-core laptop (longer on a "
            "busy one), much of it loading PyTorch; a progress bar shows how far it is."
        )
        if st.button("Try the demo", type="primary", key="try_demo"):
            st.session_state["sel_model"], st.session_state["sel_set"] = "demo", "agreement"
            _ui.submit(JobSpec(model="demo", set_name="agreement"))
            st.rerun()

mine = st.session_state.get("_ls_last_job")  # the job this tab started: at the top, in view
if mine and _ui.worker().progress(mine) is not None:
    with st.container(border=True):
        _ui.job_panel(mine, links=True)

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
    # a hub id not on this machine is fetched (weights included) only when the user asks
    hub_id = typed.split("@")[0].count("/") <= 1 and not typed.startswith((".", "/", "~"))
    remote = hub_id and bool(typed) and st.session_state.get("run_hub_ok") != typed
    remote = remote and not models.on_this_machine(typed)
    if remote:
        st.info(
            f"**{_ui.md(typed)}** is not on this machine: it is downloaded from the Hugging "
            "Face hub, weights included, only when you ask; its cost is shown after that."
        )
        if st.button("Fetch this model from the hub", key="run_hub_fetch"):
            st.session_state["run_hub_ok"] = typed
            st.rerun()
    else:
        try:
            models.resolve(model)
        except LayerScopeError as e:
            _ui.message(e, "error")
    with st.expander("Advanced"):
        dtype = st.selectbox(
            "dtype",
            ["auto", "float32", "bfloat16", "float16"],
            help="auto = the checkpoint's own dtype (bf16 checkpoints compute in float32 on a "
            "CPU without AMX / AVX512-bf16, where bf16 is ~100x slower)",
        )
        device = st.selectbox("device", _ui.devices())
        max_tokens = st.number_input("max tokens per prompt (0 = no limit)", 0, 100_000, 0)
        engine = _ui.qp_radio(
            "Engine",
            ["local", "ray"],
            "engine",
            help="local: this process, states into the DuckDB file. ray: Ray Data actors "
            "(a local cluster, or the address below) write Parquet shards the cache reads; "
            "for sets and models that outgrow one process.",
        )
        ray_workers, ray_address = 1, None
        if engine == "ray":
            ray_workers = int(_ui.qp_number("Ray workers (model actors)", "workers", 1, 1, 64))
            ray_address = (
                st.text_input(
                    "Ray address (empty = start a local cluster)",
                    key="run_ray_address",
                    placeholder="ray://head:10001",
                ).strip()
                or None
            )

with right:
    st.subheader("2 · Prompts")
    demos = catalog.demo_sets()
    stored = [n for n in s.list_sets()["set_name"] if n not in demos]  # typed or uploaded
    sources = ["Demo set", "Type", "Upload"] + (["Stored set"] if stored else [])
    mode = _ui.qp_radio(
        "Source",
        sources,
        "source",
        help="Stored set: a set typed or uploaded before — run another model on it without "
        "uploading it again.",
    )
    set_name, table, dropped = None, None, 0
    try:
        if mode == "Stored set":
            set_name = _ui.qp_select("Stored set", stored, "stored_set")
            have = s.get_set(set_name)
            st.caption(f"{len(have)} prompts, already in the cache — preview:")
            cols = [c for c in ("label", "group", "text") if have[c].notna().any()]
            st.dataframe(have.head(5)[cols], hide_index=True)
        elif mode == "Demo set":
            set_name = _ui.qp_select("Demo set", list(demos), "demo_set", default="agreement")
            if set_name:
                st.caption(demos[set_name])
        elif mode == "Type":
            set_name = st.text_input("Set name", "my-prompts", key="run_typed_name").strip()
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
                lower = {str(c).lower(): c for c in cols}
                c1, c2, c3 = st.columns(3)
                tcol = c1.selectbox(
                    "text",
                    cols,
                    index=cols.index(prompts.guess_text_column(raw)),
                    key=f"run_up_text_{up.name}",
                )
                opt = [None, *cols]
                lcol = c2.selectbox(
                    "label", opt, index=opt.index(lower.get("label")), key=f"run_up_label_{up.name}"
                )
                gcol = c3.selectbox(
                    "group", opt, index=opt.index(lower.get("group")), key=f"run_up_group_{up.name}"
                )
                table = prompts.select_columns(raw, tcol, lcol, gcol)
                dropped = len(raw) - len(table)
                set_name = st.text_input(  # a new file starts from its own name
                    "Set name",
                    prompts.slug(up.name.rsplit(".", 1)[0], "uploaded"),
                    key=f"run_up_name_{up.name}",
                ).strip()
        if table is not None:
            table, repeated = prompts.dedupe(table)
            notes = [f"{len(table)} prompts"]
            if dropped:
                notes.append(f"{dropped} blank row(s) dropped")
            if repeated:
                notes.append(f"{repeated} repeated prompt(s) kept once")
            st.caption(" · ".join(notes) + " — preview:")
            first = [c for c in ("label", "group") if c in table]  # before a long text column
            shown = table.head(5)[first + [c for c in table if c not in first]]
            st.dataframe(
                shown,
                hide_index=True,
                column_config={"text": st.column_config.TextColumn(width="large")},
            )
        elif mode == "Type":
            st.caption("Type at least one prompt.")
    except LayerScopeError as e:
        _ui.message(e, "error")

st.subheader("3 · Cost and submit")
try:
    if remote:
        raise LayerScopeError("Fetch the model from the hub first (step 1) to see the cost.")
    spec = JobSpec(
        model=model,
        set_name=set_name or "",
        dtype=dtype,
        device=device,
        max_tokens=int(max_tokens) or None,
        options=engine_options(
            engine, ray_workers, 1.0 if device.startswith("cuda") else 0.0, ray_address
        ),
    )
    if not set_name:
        raise LayerScopeError("Choose or name a prompt set.")
    if mode not in ("Demo set", "Stored set") and table is None:
        raise LayerScopeError("No prompts yet: type some, or upload a file.")
    if table is not None:
        prompts.validate_set_name(set_name)
    texts = table["text"].tolist() if table is not None else None
    if texts is None:
        catalog.ensure_set(s, set_name)
    with _ui.libraries_spinner():
        est = estimate(s, spec, texts)
        checked = _ui.input_sanity(spec, tuple(texts) if texts is not None else None)
    c = st.columns(5)
    c[0].metric("Prompts", est.runs)
    c[1].metric("Already cached", est.cached_runs)
    c[2].metric("Tokens to compute", f"{est.tokens:,}")
    c[3].metric("On disk", human_bytes(est.bytes))
    c[4].metric(
        "Estimated time",
        "0 s" if est.tokens == 0 else (f"{est.seconds:.0f} s" if est.seconds else "—"),
        help=None
        if est.tokens == 0 or est.seconds
        else "Unknown until this model has run once here: the first job measures its speed.",
    )
    for w in checked.warnings:
        st.warning(f"**Check the prompts:** {_ui.md(w)}.", icon=":material/warning:")
    st.caption(f"Tokenizer check: {_ui.md(checked.summary())}.")
    existing = table is not None and set_name in set(s.list_sets()["set_name"])
    replace_ok = True
    if existing:
        replace_ok = st.checkbox(
            f"Replace the existing set **{_ui.md(set_name)}** (its runs stay cached)",
            key="run_replace",
        )
    if st.button(
        "Compute activations",
        type="primary",
        disabled=not replace_ok,
        key="run_submit",
    ):
        if table is not None:  # the set is written when the user submits, not while typing
            s.save_prompt_set(set_name, table, source=mode.lower())
        st.session_state["sel_model"], st.session_state["sel_set"] = model, set_name
        _ui.submit(spec)
    if est.runs and est.cached_runs == est.runs:
        st.success("Everything is cached: open a view from the sidebar.")
except LayerScopeError as e:
    _ui.message(e, "error")

jobs = [p for p in _ui.worker().recent() if p.job_id != mine]
if jobs:
    st.subheader("Other jobs" if mine else "Jobs")
    for p in jobs[:5]:
        _ui.job_panel(p.job_id, links=True)
