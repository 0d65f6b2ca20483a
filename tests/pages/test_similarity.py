"""The Similarity page on a small demo set: every kind renders, refusals are sentences."""

import pandas as pd
import pytest

from backend import models
from backend.demo.sets import load_demo_set
from tests.pages.conftest import open_page, using_db, wait_jobs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("demo" not in models.bundled_models(), reason="no demo model"),
]
SET = "mini"


@pytest.fixture(scope="module")
def sim_db(tmp_path_factory):
    from backend.cli import main

    tmp = tmp_path_factory.mktemp("sim")
    df = load_demo_set("agreement").groupby("label").head(12)[["text", "label"]]
    df.to_csv(tmp / f"{SET}.csv", index=False)
    db = tmp / "sim.duckdb"
    for model, extra in (
        ("demo", []),
        ("demo-untrained", []),
        ("demo-seed1", ["--max-tokens", "3"]),
    ):
        assert (
            main(
                [
                    "extract",
                    "--db",
                    str(db),
                    "--model",
                    model,
                    "--prompts",
                    str(tmp / f"{SET}.csv"),
                    "--label-column",
                    "label",
                    "--json",
                    *extra,
                ]
            )
            == 0
        )
    return db


@pytest.fixture
def env(sim_db, monkeypatch):
    yield from using_db(sim_db, monkeypatch)


def page(**query):
    at = open_page("similarity", {"model": "demo", "set": SET, **query})
    assert not at.exception, [e.message for e in at.exception]
    return at


def captions(at) -> str:
    return " | ".join(c.value for c in at.caption)


@pytest.mark.parametrize(
    "query,expect",
    [
        ({"kind": "layer-cka"}, "token units from 24 prompts"),
        ({"kind": "layer-cka", "units": "last", "debiased": "1"}, "24 prompts (last token)"),
        ({"kind": "layer-cosine", "units": "mean"}, "24 prompts (mean over tokens)"),
        ({"kind": "prompt", "layer": "3", "order": "label"}, "Layer 3."),
        ({"kind": "prompt", "center": "1"}, "Centred"),
        ({"kind": "token", "layer": "2"}, "tokens of prompt 0, layer 2."),
        ({"kind": "model-cka", "other": "demo-untrained", "units": "last"}, "24 prompts (last"),
    ],
)
def test_every_kind_renders_with_its_caption(env, query, expect):
    at = page(**query)
    assert not at.error, [e.value for e in at.error]
    assert expect in captions(at)
    assert at.query_params["kind"] == query["kind"]


def test_legacy_debiased_permalink_maps_to_the_toggle(env):
    at = page(kind="layer-cka-debiased")
    assert at.selectbox(key="qp_kind").value == "layer-cka"
    assert at.toggle(key="qp_debiased").value is True


def test_label_order_groups_the_labels(env):
    at = page(kind="prompt", layer="4", order="label")
    assert not at.error

    def strip(at) -> list[str]:
        """The label of each row, in display order (the label strip's hover text)."""
        import json

        fig = json.loads(at.get("plotly_chart")[0].proto.spec)
        for tr in fig["data"]:
            text = tr.get("text")
            if text and str(text[0][0]).startswith("label "):
                return [t.removeprefix("label ") for t in text[0]]
        raise AssertionError("no label strip in the figure")

    by_label = strip(at)
    blocks = [lab for k, lab in enumerate(by_label) if k == 0 or by_label[k - 1] != lab]
    assert len(blocks) == len(set(by_label)) >= 2, "each label is one contiguous block"
    at.radio(key="qp_order").set_value("cluster").run()
    assert not at.exception and not at.error
    assert sorted(strip(at)) == sorted(by_label)  # the same units, reordered


def test_models_without_shared_units_are_refused_with_a_sentence(env):
    at = page(kind="model-cka", other="demo-seed1", units="tokens")  # truncated to 3 tokens
    assert [e.value for e in at.error]
    assert "do not share their units" in at.error[0].value


def test_missing_runs_of_the_other_model_offer_a_job(env, sim_db, tmp_path, monkeypatch):
    import shutil

    from backend.store import Store

    db2 = tmp_path / "copy.duckdb"  # a copy of the DB without demo-untrained's runs
    shutil.copy(sim_db, db2)
    with Store(db2) as s:
        s.delete_model_runs(s.find_model("demo-untrained")["model_id"])
    monkeypatch.setenv("LAYERSCOPE_DB", str(db2))
    at = page(kind="model-cka", other="demo-untrained")
    assert any("has activations for 0 of the 24" in i.value for i in at.info)
    at.button(key="sim_other").click().run()
    wait_jobs()
    at.run()
    assert not at.exception and not at.error
    assert "token units from 24 prompts" in captions(at)


def test_cli_twin_prints_the_matrix_and_its_labels(sim_db, tmp_path, capsys):
    import json
    import shutil

    from backend.cli import main

    db = tmp_path / "cli.duckdb"  # the CLI may extract missing runs: keep the module DB as is
    shutil.copy(sim_db, db)
    args = ["similarity", "--db", str(db), "--model", "demo", "--set", SET]
    assert main([*args, "--kind", "layer-cka", "--units", "last", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert pd.DataFrame(out["matrix"]).shape == (5, 5) and out["rows"] == ["0", "1", "2", "3", "4"]
    assert out["range"] == [0.0, 1.0] and out["measure"] == "CKA"
    assert out["matrix"][2][2] == pytest.approx(1.0)
    assert main([*args, "--kind", "prompt", "--layer", "4", "--order", "label", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(out["rows"]) == 24 and out["range"] == [-1.0, 1.0]
    labels = [out["row_labels"][i] for i in out["order"]]
    assert labels == sorted(labels)
    assert main([*args, "--kind", "model-cka", "--other-model", "demo-untrained"]) == 0
    text = capsys.readouterr().out
    assert "model-cka (CKA, fixed range 0..1), 5 x 5" in text


def test_presenter_mode_folds_the_secondary_settings_but_keeps_them(env):
    """On a projector only the heatmap choice stays in view; the others sit in a folded
    'Heatmap settings' expander and still follow the URL."""
    at = page(kind="layer-cka", debiased="1", present="1")
    assert not at.exception and not at.error
    (box,) = [e for e in at.expander if e.label == "Heatmap settings"]
    assert box.proto.expanded is False
    assert box.toggle(key="qp_debiased").value is True
    plain = page(kind="layer-cka")
    assert not [e for e in plain.expander if e.label == "Heatmap settings"]
