"""Run, Library and Prompt pages through AppTest: render, submit a job, bad input, nothing lost."""

import pytest

from backend import models
from tests.pages.conftest import open_page, wait_jobs


def _walk(block):
    """Every element under ``block``, in drawing order."""
    for child in block.children.values():
        if hasattr(child, "children"):
            yield from _walk(child)
        else:
            yield child


def no_exception(at):
    assert not at.exception, [e.message for e in at.exception]


@pytest.mark.parametrize("page", ["run", "library", "prompt"])
def test_pages_render_on_an_empty_cache(app_db, page):
    at = open_page(page)
    no_exception(at)


@pytest.mark.slow
def test_submit_typed_prompts_on_a_local_model_then_library_and_prompt(app_db, tiny_model_dir):
    at = open_page("run")
    at.text_input(key="run_model_typed").input(str(tiny_model_dir("gpt2"))).run()
    at.radio(key="qp_source").set_value("Type").run()
    at.text_input(key="run_typed_name").input("mine").run()
    at.text_area(key="run_typed_text").input("the cat runs\nthe dogs near the cat run").run()
    no_exception(at)
    labels = {m.label: m.value for m in at.metric}
    assert labels["Prompts"] == "2" and labels["Already cached"] == "0"
    at.button(key="run_submit").click().run()
    no_exception(at)
    wait_jobs()
    at.run()
    no_exception(at)
    assert any("done — 2 runs computed" in s.value for s in at.success)
    assert {m.label: m.value for m in at.metric}["Already cached"] == "2"
    # the job this tab started is said at the top, above the settings (not below the fold)
    order = [(e.type, getattr(e, "value", None)) for e in _walk(at.main)]
    done = next(i for i, (t, v) in enumerate(order) if t == "success" and "done" in str(v))
    model = next(i for i, (t, v) in enumerate(order) if v == "1 · Model")
    assert done < model

    lib = open_page("library")
    no_exception(lib)
    assert "mine" in lib.dataframe[1].value["set_name"].tolist()

    from backend.store import Store

    with Store(app_db):  # the app process is this process; read through a new instance
        pass


def test_run_page_warns_before_the_job_when_most_tokens_are_unknown(app_db, tiny_model_dir):
    """A held-out set for a word-level model: > 50% <unk> and prompts that tokenize alike are
    said above the submit button, before any job runs."""
    from pages import _ui

    at = open_page("run")
    at.text_input(key="run_model_typed").input(str(tiny_model_dir("gpt2"))).run()
    at.radio(key="qp_source").set_value("Type").run()
    at.text_area(key="run_typed_text").input("the cat runs\nthe zebra gallops").run()
    no_exception(at)
    assert not any("unknown" in w.value for w in at.warning)  # 2 of 6 tokens: fine
    assert any("33% unknown, 2 distinct token sequences" in c.value for c in at.caption)
    text = "the zebra gallops\nthe giraffe gallops\nthe lion sleeps\nzebras gallop"
    at.text_area(key="run_typed_text").input(text).run()
    no_exception(at)
    warned = " ".join(w.value for w in at.warning).replace("\\", "")  # 8 of 11 are <unk>
    assert "Check the prompts" in warned and "73% of the prompts' tokens are unknown" in warned
    assert "2 of 4 prompts (50%) tokenize exactly like another prompt" in warned
    assert not _ui.worker().recent()  # warned before any job
    est = next(m for m in at.metric if m.label == "Estimated time")  # not cut to "unkno…"
    assert est.value == "—" and "first job measures its speed" in est.proto.help


def test_bad_model_and_bad_file_are_messages(app_db):
    at = open_page("run")
    at.text_input(key="run_model_typed").input("./no/such/model").run()
    no_exception(at)
    assert any("No model directory" in e.value for e in at.error)
    at.text_input(key="run_model_typed").input("").run()
    at.radio(key="qp_source").set_value("Type").run()
    at.text_area(key="run_typed_text").input("   \n  ").run()
    no_exception(at)


def test_prompt_page_with_unknown_run_says_so(app_db):
    at = open_page("prompt", {"run": "nope"})
    no_exception(at)
    # the view's sentence, markdown-escaped whole by _ui.message (\' renders as ')
    assert any("No run 'nope'" in e.value.replace("\\", "") for e in at.error)


@pytest.mark.slow
@pytest.mark.skipif("demo" not in models.bundled_models(), reason="bundled demo model missing")
def test_try_the_demo_completes(app_db):
    at = open_page("run")
    at.button(key="try_demo").click().run()
    no_exception(at)
    wait_jobs(300)
    at.run()
    no_exception(at)
    assert any("done — " in s.value for s in at.success)
    p = open_page("prompt", {"model": "demo", "set": "agreement"})
    no_exception(p)
    assert len(p.get("plotly_chart")) == 1


@pytest.mark.slow
def test_finished_jobs_are_static_rows_naming_kind_model_and_set(app_db):
    """Three jobs, one cancelled: each row names what it did; no Cancel button and no
    polling fragment once finished; a cancelled job is not an error."""
    from backend.jobs.base import JobSpec
    from pages import _ui

    at = open_page("run")
    w = _ui.worker()
    a = w.submit(JobSpec(model="demo", set_name="agreement"))
    b = w.submit(JobSpec(model="demo-untrained", set_name="agreement"))
    c = w.submit(JobSpec(model="demo-seed1", set_name="agreement"))
    w.cancel(c)
    wait_jobs(300)
    at.run()
    no_exception(at)
    rows = [s.value for s in at.success]
    why = [(w.progress(j).status, w.progress(j).message) for j in (a, b, c)]
    assert any("Extract · agreement on demo" in r for r in rows), (rows, why)
    assert any("Extract · agreement on demo\\-untrained" in r for r in rows), rows
    assert any("cancelled" in i.value for i in at.info) and not at.error
    assert not [x for x in at.button if x.key and x.key.startswith("_cancel_")]
    assert {w.progress(j).status for j in (a, b)} == {"done"}


@pytest.mark.slow
def test_typing_writes_no_set_until_submit_and_replacing_asks(app_db):
    from pages import _ui

    at = open_page("run")
    at.radio(key="qp_source").set_value("Type").run()
    at.text_input(key="run_typed_name").input("mine2").run()
    at.text_area(key="run_typed_text").input("the cat runs\nthe cat runs\nthe dogs run").run()
    no_exception(at)
    assert {m.label: m.value for m in at.metric}["Prompts"] == "2"
    assert any("1 repeated prompt(s) kept once" in c.value for c in at.caption)
    assert "mine2" not in set(_ui.store().list_sets()["set_name"])  # nothing written yet
    at.text_area(key="run_typed_text").input("").run()
    assert not at.metric and any("No prompts yet" in e.value for e in at.error)
    # a set of that name exists: submitting must ask before replacing it
    _ui.store().save_prompt_set("mine2", __import__("pandas").DataFrame({"text": ["x y"]}))
    at.text_area(key="run_typed_text").input("the cat runs").run()
    assert at.button(key="run_submit").disabled
    at.checkbox(key="run_replace").check().run()
    assert not at.button(key="run_submit").disabled
    at.button(key="run_submit").click().run()
    no_exception(at)
    wait_jobs()
    assert _ui.store().get_set("mine2")["text"].tolist() == ["the cat runs"]


def test_a_cache_held_by_another_process_is_a_page_message(app_db):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(app_db)!r}); "
            "print('ok', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        at = open_page("run")
        no_exception(at)
        text = " ".join(e.value for e in at.error)
        assert "open in another process" in text and "LAYERSCOPE_DB=" in text, text
    finally:
        holder.kill()


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("importlib").util.find_spec("ray") is None, reason="Ray not installed"
)
def test_run_page_runs_a_set_on_the_ray_engine(app_db, tiny_model_dir):
    """Engine = ray (from the URL, like every choice): the job runs on a real local Ray
    cluster and the set's runs land in the cache, read like the local engine's."""
    import ray

    at = open_page("run", {"engine": "ray", "workers": "1"})
    at.text_input(key="run_model_typed").input(str(tiny_model_dir("gpt2"))).run()
    at.radio(key="qp_source").set_value("Type").run()
    at.text_input(key="run_typed_name").input("on-ray").run()
    at.text_area(key="run_typed_text").input("the cat runs\nthe dogs near the cat run").run()
    no_exception(at)
    assert at.radio(key="qp_engine").value == "ray" and at.number_input(key="qp_workers")
    try:
        at.button(key="run_submit").click().run()
        wait_jobs(timeout=300)
    finally:
        ray.shutdown()
    at.run()
    no_exception(at)
    assert any("done — 2 runs computed" in s.value for s in at.success), [e.value for e in at.error]
    assert {m.label: m.value for m in at.metric}["Already cached"] == "2"


def test_engine_choice_without_ray_is_one_message(monkeypatch):
    import importlib.util

    from backend.errors import LayerScopeError
    from backend.jobs.base import engine_options

    assert engine_options("local") == {}
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "ray" else real(n, *a)
    )
    with pytest.raises(LayerScopeError, match=r"requirements-scale\.txt"):
        engine_options("ray", 2)
    with pytest.raises(LayerScopeError, match="Unknown engine"):
        engine_options("spark")


def test_run_resolves_at_slash_run_and_every_page_replaces_history(app_db):
    """/run is a page (a hidden twin of the default page at /), and each script run carries
    the script that turns Streamlit's query-string pushState into replaceState."""
    at = open_page("run")
    script = [h.proto.body for h in at.sidebar.get("html")]  # (AppTest shows a repeated
    assert len(script) == 1 and "h.replaceState(state, title, url)" in script[0]  # message once)
    assert "next.pathname === window.location.pathname" in script[0]
    urls = {i.get("url_pathname"): i.get("script_path") for i in at._registered_pages.values()}
    assert urls[""].endswith("pages/run.py") and urls["run"].endswith("pages/run.py")
    at.switch_page("pages/run.py").run()  # AppTest prefers the page whose URL is the file's
    no_exception(at)
    assert at.title[0].value == "LayerScope"


def test_query_params_are_written_only_when_they_change(app_db, monkeypatch):
    """Each write sends the whole query string to the browser: an unchanged value sends
    nothing."""
    import streamlit as st

    from pages import _ui

    sent = []
    monkeypatch.setattr(st.query_params.__class__, "__setitem__", lambda s, k, v: sent.append(k))
    monkeypatch.setattr(st.query_params.__class__, "get", lambda s, k, d=None: "same")
    _ui.set_param("x", "same")
    _ui.set_param("x", "other")
    assert sent == ["x"]


def test_a_compute_click_queues_its_own_job_while_another_runs(app_db, monkeypatch):
    """Two tabs: a job runs for one set; in this tab, a view of another set is not handed that
    job, and its Compute click queues its own job, which the page then shows."""
    import threading

    from backend import catalog
    from backend.jobs import kinds
    from backend.jobs.base import JobSpec
    from pages import _ui

    release = threading.Event()

    def held(ctx):  # a job that runs until the test lets it finish
        release.wait(60)
        return {"runs": 0, "cached_runs": 0, "tokens": 0}

    monkeypatch.setitem(kinds.JOB_KINDS, "extract", held)
    at = open_page("stats", {"model": "demo", "set": "sentiment"})
    w = _ui.worker()
    catalog.ensure_set(_ui.store(), "agreement")
    other = w.submit(JobSpec(model="demo", set_name="agreement"))  # "the other tab"
    try:
        at.run()
        no_exception(at)
        assert not at.get("progress")  # not the other tab's job
        assert any("1 other job(s) running or queued" in c.value for c in at.caption)
        at.button(key="_compute_runs").click().run()
        no_exception(at)
        mine = [p for p in w.active_jobs() if p.set_name == "sentiment"]
        assert len(mine) == 1 and w.ahead(mine[0].job_id) == 1 and w.ahead(other) == 0
        bars = [b.proto.text for b in at.get("progress")]
        assert len(bars) == 1 and "sentiment on demo — queued behind 1 other job(s)" in bars[0]
    finally:
        release.set()
        wait_jobs()
    assert {w.progress(j).status for j in (other, mine[0].job_id)} == {"done"}


def test_an_uploaded_set_previews_label_and_group_before_the_text(app_db):
    at = open_page("run")
    at.radio(key="qp_source").set_value("Upload").run()
    long = "the cat near the big red dog sits on the mat and the dogs run " * 4
    csv = f"text,label,group\n{long},sg,a\nthe dogs run,pl,b\n".encode()
    at.file_uploader[0].upload("mine.csv", csv, "text/csv").run()
    no_exception(at)
    preview = at.dataframe[0].value
    assert list(preview.columns)[:3] == ["label", "group", "text"] and len(preview) == 2


@pytest.mark.slow
def test_a_stored_set_is_a_source_another_model_runs_without_a_new_upload(app_db, tiny_model_dir):
    import pandas as pd

    from pages import _ui

    at = open_page("run")
    assert "Stored set" not in at.radio(key="qp_source").options  # none stored yet
    table = pd.DataFrame({"text": ["the cat runs", "the dogs run"], "label": ["sg", "pl"]})
    _ui.store().save_prompt_set("uploaded-before", table, source="upload")
    at = open_page("run", {"source": "Stored set"})
    no_exception(at)
    assert at.selectbox(key="qp_stored_set").value == "uploaded-before"
    assert list(at.dataframe[0].value.columns) == ["label", "text"]
    at.text_input(key="run_model_typed").input(str(tiny_model_dir("llama"))).run()
    assert {m.label: m.value for m in at.metric}["Prompts"] == "2"
    assert not at.checkbox  # nothing to replace: the stored set is used as it is
    at.button(key="run_submit").click().run()
    no_exception(at)
    wait_jobs()
    at.run()
    assert any("done — 2 runs computed" in x.value for x in at.success)


def test_progress_says_what_it_waits_for(app_db, monkeypatch):
    """Before the first batch: loading the model; then N of M prompts and the tokens."""
    import threading

    from backend.jobs import kinds
    from pages import _ui

    step, go_on, release = threading.Event(), threading.Event(), threading.Event()

    def held(ctx):
        p = ctx.progress
        p.runs_total, p.runs_cached = 10, 2
        step.set()
        go_on.wait(60)
        p.tokens_total, p.tokens_done, p.runs_done = 100, 30, 3
        release.wait(60)
        return {"runs": 3, "cached_runs": 2, "tokens": 30}

    monkeypatch.setitem(kinds.JOB_KINDS, "extract", held)
    at = open_page("stats", {"model": "demo", "set": "sentiment"})
    try:
        at.button(key="_compute_runs").click().run()
        assert step.wait(60)
        at.run()
        (bar,) = [b.proto.text for b in at.get("progress")]
        assert bar.endswith("running: loading the model and reading the prompts"), bar
        go_on.set()
        import time

        (job,) = _ui.worker().active_jobs()
        end = time.monotonic() + 30
        while job.runs_done != 3 and time.monotonic() < end:
            time.sleep(0.05)
        at.run()
        (bar,) = [b.proto.text for b in at.get("progress")]
        assert "running: 3 of 8 prompts · 30 / 100 tokens" in bar, bar
    finally:
        go_on.set()
        release.set()
        wait_jobs()
    assert not _ui.worker().active_jobs()
