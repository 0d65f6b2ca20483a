"""Property-based (Hypothesis): every page opened with generated query strings (odd, huge,
negative, NaN, traversing, markup and URL values for the keys the pages read) raises nothing,
loads no model and starts no job. Deterministic, a fixed budget of examples per page (slow
tier: each example is one AppTest run)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import models
from tests.pages.conftest import open_page, using_db

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("demo" not in models.bundled_models(), reason="no demo model"),
]

PAGES = sorted(
    p.stem for p in (Path(__file__).parents[2] / "pages").glob("*.py") if p.stem[0] != "_"
)
EXAMPLES = 4  #: per page
COUNTS: dict[str, int] = {}
KEYS = ["run", "layer", "layers", "kind", "method", "unit", "pool", "dims", "n", "pos",
        "alphas", "direction", "prompt", "clean", "corrupted", "answer", "against", "cell",
        "lens", "positions", "regex", "versus", "folds", "baseline", "other", "present",
        "story", "engine", "workers", "att_layer", "att_head", "highlight", "nruns", "metric",
        "component", "debiased", "center", "step"]  # fmt: skip
VALUES = ["", "0", "1", "-1", "nan", "inf", "1e308", "99999999999", "x" * 400, "a,b",
          "../../etc/passwd", "/etc/passwd.npy", "http://evil.example/x", "[a](http://e)",
          "<b>b</b>", "=1+1", "demo", "all", "true"]  # fmt: skip


@pytest.fixture(scope="module")
def page_db(tmp_path_factory):
    from backend.cli import main

    tmp = tmp_path_factory.mktemp("pageprops")
    rows = "".join(f"the cat {i} runs,{'ab'[i % 2]}\n" for i in range(6))
    (tmp / "s.csv").write_text("text,label\n" + rows)
    db = tmp / "p.duckdb"
    argv = ["extract", "--db", str(db), "--model", "demo", "--prompts", str(tmp / "s.csv")]
    assert main([*argv, "--set", "s", "--label-column", "label"]) == 0
    return db


queries = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["demo", "gpt2", "http://evil.example", ""]),
        "set": st.sampled_from(["s", "agreement", "../x", ""]),
    },
    optional={k: st.sampled_from(VALUES) for k in KEYS},
)


@pytest.mark.parametrize("page", PAGES)
def test_generated_query_strings_never_raise_load_or_start(page, page_db, monkeypatch):
    from backend import models as M

    def refuse(*a, **k):
        raise AssertionError("a page load tried to load a model")

    monkeypatch.setattr(M, "_load_model", refuse)
    monkeypatch.setattr(M, "_hub_snapshot", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = using_db(page_db, monkeypatch)
    next(env)
    COUNTS[page] = 0

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(queries)
    def check(query):
        from pages import _ui

        COUNTS[page] += 1
        at = open_page(page, query)
        assert not at.exception, (query, [e.message for e in at.exception])
        w = _ui.worker()
        assert not w.active_jobs() and not w.recent(), query

    check()


def test_zz_report_generated_cases_per_page(capsys):
    with capsys.disabled():
        print("\ngenerated query strings per page:", dict(COUNTS), "total", sum(COUNTS.values()))
