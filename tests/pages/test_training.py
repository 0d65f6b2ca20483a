"""Training page (AppTest): opening it computes nothing; its button runs one checkpoints job;
then the behaviour, probe, CKA, statistics and trajectory charts are drawn."""

import pytest

from backend import models
from tests.pages.conftest import open_page, using_db, wait_jobs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not models.checkpoints("demo"), reason="no bundled demo checkpoints"),
]


@pytest.fixture
def env(tmp_path, monkeypatch):
    from backend.demo.sets import load_demo_set
    from backend.store import Store

    db = tmp_path / "app.duckdb"
    with Store(db) as s:  # a short agreement set keeps nine checkpoints quick
        s.save_prompt_set("agreement", load_demo_set("agreement").head(40))
    yield from using_db(db, monkeypatch)


def test_training_page_offers_the_job_then_draws_every_chart(env):
    from pages import _ui

    query = {"model": "demo", "set": "agreement"}
    at = open_page("training", query)
    assert not at.exception, at.exception
    assert any("have no activations" in i.value for i in at.info)
    assert not _ui.worker().active_jobs() and not at.get("plotly_chart")  # a link computes nothing
    at.button(key="tr_job").click().run()
    wait_jobs(600)
    at = open_page("training", query, timeout=600)
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 5
    said = " ".join(m.value for m in at.markdown)
    assert "Decodable (the Probes view's verdict) from **step" in said
    assert not at.info  # every checkpoint has runs and behaviour now
    box = at.selectbox(key="qp_layer")
    assert box.value == -1 and "best probe layer" in box.format_func(-1)
    at = box.select(2).run(timeout=600)
    assert not at.exception, at.exception
    assert at.query_params["layer"] in ("2", ["2"]) and "at layer 2" in " ".join(
        str(c.proto.spec) for c in at.get("plotly_chart")
    )
