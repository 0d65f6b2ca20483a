"""The first page draws before PyTorch is imported: app start imports no torch in the page's
thread (jobs import their capture stack on the worker thread; the warm-up starts after the
first run), the Run page draws its title before its cost estimate loads the tokenizer, and a
page that only reads the cache never imports torch at all."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

#: one fresh process per page: AppTest of app.py on an empty cache, noting whether torch was
#: in sys.modules when the page drew its title and when the script run ended
PROBE = """
import json, sys, time
t0 = time.perf_counter()
import streamlit as st
from streamlit.testing.v1 import AppTest
import pages._ui as ui

seen = {}
real_title, real_warm = st.title, ui.start_warm_up

def title(*a, **k):
    seen.setdefault("torch_at_title", "torch" in sys.modules)
    seen.setdefault("title_s", round(time.perf_counter() - t0, 2))
    return real_title(*a, **k)

def warm():
    seen.setdefault("torch_at_end", "torch" in sys.modules)
    seen.setdefault("end_s", round(time.perf_counter() - t0, 2))

st.title, ui.start_warm_up = title, warm
at = AppTest.from_file("app.py", default_timeout=240)
if sys.argv[1] != "run":  # before a first run: the page file alone, as its first visit
    at.switch_page(f"pages/{sys.argv[1]}.py")  # would run it (app.py adds no import)
at.run()
seen.setdefault("torch_at_end", "torch" in sys.modules)  # (the warm-up is not started here)
seen["exceptions"] = [e.message for e in at.exception]
print("@@" + json.dumps(seen))
"""


def probe(page: str, db) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, page],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LAYERSCOPE_DB": str(db), "PYTHONPATH": str(ROOT)},
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    assert line, out.stderr[-3000:]
    return json.loads(line[-1][2:])


@pytest.mark.slow
def test_the_run_page_draws_before_torch_and_the_library_never_needs_it(tmp_path):
    run = probe("run", tmp_path / "a.duckdb")
    assert run["exceptions"] == [] and run["torch_at_title"] is False, run
    print(f"Run page: title at {run['title_s']} s, script run done at {run.get('end_s')} s")
    lib = probe("library", tmp_path / "b.duckdb")
    assert lib["exceptions"] == [] and lib == {**lib, "torch_at_title": False}, lib
    assert lib["torch_at_end"] is False, lib


def test_app_modules_import_no_torch():
    code = (
        "import sys, pages._ui, backend.jobs.worker, backend.jobs.extract, "
        "backend.capture.sanity; print([m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]
