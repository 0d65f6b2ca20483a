"""The fast tier's budget plugin (tests/_budget.py): CPU seconds of non-slow tests, over the
budget -> the session fails; slow tests do not count; no budget set -> only a report."""

import pytest

from tests.conftest import ROOT

BURN = """
import time, pytest

def burn(s):
    t = time.process_time()
    while time.process_time() - t < s:
        pass

def test_fast():
    burn(0.3)

@pytest.mark.slow
def test_slow():
    burn(0.6)
"""


@pytest.fixture
def run(pytester, monkeypatch):
    """A pytest run of BURN in its own process (its totals are its own)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(BURN)
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n    browser: browser\n")

    def go(budget):
        if budget is None:
            monkeypatch.delenv("LAYERSCOPE_FAST_BUDGET_S", raising=False)
        else:
            monkeypatch.setenv("LAYERSCOPE_FAST_BUDGET_S", str(budget))
        return pytester.runpytest_subprocess("-p", "tests._budget")

    return go


def test_over_budget_fails_the_session(run):
    r = run(0.1)
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*fast tier: 1 tests*budget 0 s CPU*"])


@pytest.mark.slow
def test_within_budget_passes_and_slow_tests_do_not_count(run):
    r = run(0.5)  # the fast test burns 0.3 s, the slow one 0.6 s more
    assert r.ret == 0
    r.stdout.fnmatch_lines(["*fast tier: 1 tests*"])


@pytest.mark.slow
def test_without_a_budget_it_only_reports(run):
    r = run(None)
    assert r.ret == 0
    r.stdout.fnmatch_lines(["*(no budget set)*"])
