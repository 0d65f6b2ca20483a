"""Patching and Attention pages on the demo model (AppTest): opening a link computes nothing,
the Compute button does, and a stored patching result shows at once on the next visit."""

import pytest

from backend import models
from tests.pages.conftest import open_page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("demo" not in models.bundled_models(), reason="no demo model"),
]


def _ok(at):
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_patching_computes_on_click_only_and_then_from_the_store(app_db):
    at = open_page("patching", {"model": "demo"})
    _ok(at)
    assert not at.get("plotly_chart")
    assert any("Compute" in i.value for i in at.info)
    at.button(key="patch_compute").click().run()
    _ok(at)
    assert len(at.get("plotly_chart")) == 1
    text = " ".join(c.value for c in at.caption)
    assert "clean" in text and "corrupted" in text
    again = open_page("patching", {"model": "demo"})  # same link: the stored result, no click
    _ok(again)
    assert len(again.get("plotly_chart")) == 1
    assert "stored result" in " ".join(c.value for c in again.caption)


def test_attention_computes_on_click_only(app_db):
    at = open_page("attention", {"model": "demo"})
    _ok(at)
    assert not at.get("plotly_chart")
    at.button(key="att_compute").click().run()
    _ok(at)
    assert len(at.get("plotly_chart")) == 2  # heads, one pattern


def test_steering_computes_on_click_only_and_draws_both_curves(app_db):
    from backend.cli import main

    argv = ["extract", "--db", str(app_db), "--model", "demo", "--set", "agreement", "--json"]
    assert main(argv) == 0
    q = {"model": "demo", "set": "agreement", "layer": "2", "n": "4", "alphas": "-1,0,1"}
    at = open_page("steering", q)
    _ok(at)
    assert not at.get("plotly_chart")
    assert any("Compute" in i.value for i in at.info)
    at.button(key="steer_compute").click().run()
    _ok(at)
    assert len(at.get("plotly_chart")) == 1
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 3
    again = open_page("steering", q)  # the stored result, no click
    _ok(again)
    assert "stored result" in " ".join(c.value for c in again.caption)
