"""Features page through AppTest on the demo: opening trains nothing; Train is a job; then the
browser shows the quality numbers, the latents and a feature's contexts."""

import pytest

from backend import models
from tests.pages.conftest import open_page, using_db, wait_jobs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("demo" not in models.bundled_models(), reason="no demo model"),
]


@pytest.fixture(scope="module")
def feat_db(tmp_path_factory):
    from backend.cli import main

    db = tmp_path_factory.mktemp("feat") / "f.duckdb"
    assert main(["extract", "--db", str(db), "--model", "demo", "--set", "agreement"]) == 0
    return db


@pytest.fixture
def env(feat_db, monkeypatch):
    yield from using_db(feat_db, monkeypatch)


def ok(at):
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_train_on_click_then_browse(env):
    from pages import _ui

    q = {"model": "demo", "set": "agreement", "layer": "2", "latents": "256", "k": "8"}
    at = open_page("features", q)
    ok(at)
    assert any("No dictionary of layer 2" in i.value for i in at.info)
    assert not _ui._worker(_ui.db_path()).recent()  # opening the link started nothing
    at.button(key="feat_train").click().run()
    wait_jobs(300)
    at = open_page("features", q)
    ok(at)
    labels = {m.label: m.value for m in at.metric}
    assert float(labels["held-out FVU"]) <= 0.25 and float(labels["mean L0"]) <= 8
    assert at.get("plotly_chart")  # the latents and the histogram
    md = " ".join(m.value for m in at.markdown)
    assert "AUROC on the last token" in md and "open prompt" in md
    # the default feature is the top of the AUROC sort: it separates the label
    assert "vs rest 1.000" in md or "vs rest 0.9" in md
    assert "loss recovered" not in md  # the spliced loss waits for a click (loads the model)
    at.button(key="feat_splice").click().run()
    ok(at)
    assert "loss recovered" in " ".join(m.value for m in at.markdown)

    # the Prompt page lists each token's top features from that dictionary
    run_id = _ui.store().set_runs("agreement", _ui.store().find_model("demo")["model_id"])
    at = open_page("prompt", {"run": run_id["run_id"].iloc[0]})
    ok(at)
    col = "top features (activation)"
    table = next(d.value for d in at.dataframe if col in d.value.columns)
    assert len(table) >= 2 and table[col].str.len().min() > 0


def test_imported_without_a_dictionary_says_how(env):
    at = open_page("features", {"model": "demo", "set": "agreement", "dict": "imported"})
    ok(at)
    assert any("features import" in i.value for i in at.info)


def test_trajectories_and_patching_use_a_feature(env):
    from backend.cli import main

    argv = ["features", "train", "--model", "demo", "--set", "agreement", "--layer", "2"]
    assert main([*argv, "--db", str(env), "--json"]) == 0  # no-op when the first test trained
    q = {"model": "demo", "set": "agreement", "color": "feature", "flayer": "2", "feature": "4"}
    at = open_page("trajectories", q)
    ok(at)
    assert any("feature 4's activation at layer 2" in c.value for c in at.caption)
    at = open_page("trajectories", {**q, "feature": "9999"})
    assert not at.exception and any("does not exist" in i.value for i in at.info)

    # Patching: ablate that latent in the clean run, position by position (on a click)
    q = {"model": "demo", "set": "agreement", "component": "feature", "flayer": "2", "feature": "4"}
    at = open_page("patching", q)
    ok(at)
    at.button(key="patch_compute").click().run()
    ok(at)
    caps = [c.value for c in at.caption] + [i.value for i in at.info]
    assert any("Largest effect of ablating feature 4" in c for c in caps), caps
