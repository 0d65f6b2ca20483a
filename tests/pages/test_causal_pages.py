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
    # another setting: the heatmap of the previous one is gone until Compute (the result is
    # keyed on every setting), and the first one comes back from the store
    again.radio(key="qp_component").set_value("attn").run()
    _ok(again)
    assert not again.get("plotly_chart") and again.query_params["component"] == "attn"
    assert any("Press **Compute**" in i.value for i in again.info)
    again.radio(key="qp_component").set_value("resid").run()
    assert len(again.get("plotly_chart")) == 1


def test_patching_atp_draws_the_estimated_grid(app_db):
    at = open_page("patching", {"model": "demo", "method": "atp"})
    _ok(at)
    at.button(key="patch_compute").click().run()
    _ok(at)
    (chart,) = at.get("plotly_chart")
    assert "AtP estimate" in chart.proto.spec
    assert not at.dataframe  # the exact check waits for its own click
    at.button(key="patch_verify").click().run()
    _ok(at)
    text = " ".join(m.value for m in at.markdown)
    assert "top **10** cells by |AtP|" in text and "Spearman" in text
    (table,) = at.dataframe
    assert len(table.value) == 10 and "exact recovery" in table.value.columns


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


def test_patching_pairs_show_the_mean_and_a_cell_opens_its_distribution(app_db):
    q = {"model": "demo", "pairs": "agreement", "component": "attn", "cell": "2,6"}
    at = open_page("patching", q)
    _ok(at)
    assert not at.get("plotly_chart")  # a link computes nothing, not even the cell
    at.button(key="patch_compute").click().run()
    _ok(at)
    assert len(at.get("plotly_chart")) == 1
    text = " ".join(c.value for c in at.caption)
    assert "Mean recovery over **25** pairs" in text and "bootstrap over 25 pairs" in text
    fig = at.get("plotly_chart")[0].proto.spec
    assert "n = 25 pairs" in fig and "attention output" in fig
    at.button(key="patch_cell_go").click().run()  # the cell named in the link, on the click
    _ok(at)
    assert [c.key for c in at.get("plotly_chart")][-1] == "patch_cell_fig"
    assert "layer 2, position 6 patched" in " ".join(c.value for c in at.caption)


def test_probes_button_opens_steering_with_the_probe_direction(app_db):
    from backend.cli import main

    argv = ["extract", "--db", str(app_db), "--model", "demo", "--set", "agreement", "--json"]
    assert main(argv) == 0
    at = open_page("probes", {"model": "demo", "set": "agreement", "baseline": "(none)",
                              "layer": "2"})  # fmt: skip
    _ok(at)
    at.button(key="probe_steer").click().run()
    _ok(at)
    assert at.query_params["direction"] in ("probe", ["probe"])
    assert at.query_params["layer"] in ("2", ["2"])
    assert any(t.value == "probe" for t in at.text_input)  # the Steering page, prefilled


def test_steering_page_stores_the_steered_runs_as_sets(app_db):
    from backend.cli import main

    argv = ["extract", "--db", str(app_db), "--model", "demo", "--set", "agreement", "--json"]
    assert main(argv) == 0
    q = {"model": "demo", "set": "agreement", "layer": "2", "n": "3", "alphas": "0,1"}
    at = open_page("steering", q)
    at.button(key="steer_compute").click().run()
    _ok(at)
    at.button(key="steer_store").click().run()
    _ok(at)
    text = " ".join(m.value for m in at.success).replace("\\", "")
    assert "agreement+steer(L2 means 0)" in text and "agreement+steer(L2 means 1)" in text
