"""Attribution page on the demo model (AppTest): opening a link computes nothing, the Compute
button draws the components, the heads and the graph, and the caption says they add up."""

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


def test_attribution_computes_on_click_only(app_db):
    at = open_page("attribution", {"model": "demo"})
    _ok(at)
    assert not at.get("plotly_chart")
    assert any("Compute" in i.value for i in at.info)
    at.button(key="attr_compute").click().run()
    _ok(at)
    assert len(at.get("plotly_chart")) == 3  # components, heads, graph
    text = " ".join(c.value for c in at.caption)
    assert "the parts sum to" in text and "helps" in text


def test_a_token_that_is_not_one_token_is_one_message(app_db):
    at = open_page("attribution", {"model": "demo", "answer": "helps always"})
    at.button(key="attr_compute").click().run()
    assert not at.exception
    assert any("not one token" in m.value for m in [*at.info, *at.warning, *at.error])


def test_a_node_shows_its_logit_lens(app_db):
    at = open_page("attribution", {"model": "demo", "node": "4,5"})
    _ok(at)
    assert not at.get("plotly_chart")  # a link computes nothing
    at.button(key="attr_compute").click().run()
    _ok(at)
    text = " ".join(m.value for m in at.markdown)
    assert "logit lens at this node" in text
    lens = next(d for d in at.dataframe if list(d.value.columns) == ["token", "p"])
    assert len(lens.value) == 3 and lens.value["p"].iloc[0] > 0


def test_patch_an_edge_links_open_the_patching_page_prefilled(app_db):
    at = open_page("attribution", {"model": "demo"})
    at.button(key="attr_compute").click().run()
    _ok(at)
    assert "Patch an edge exactly" in " ".join(m.value for m in at.markdown)
    from backend.views import attribution

    res = at.session_state["attr_result"][1]
    q = attribution.patch_links(res)[0]["query_params"]
    pt = open_page("patching", q)  # what the link opens: prefilled, nothing computed yet
    _ok(pt)
    assert pt.text_input(key="qp_clean").value == q["clean"]
    assert pt.text_input(key="qp_corrupted").value == q["corrupted"]
    assert not pt.get("plotly_chart")
    pt.button(key="patch_compute").click().run()
    _ok(pt)
    layer, pos = q["cell"].split(",")
    assert pt.button(key="patch_cell_go").label.endswith(f"layer {layer}, position {pos} patched")
