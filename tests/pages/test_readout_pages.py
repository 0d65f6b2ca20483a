"""Probes, Logit lens and Layer stats pages on the demo models (AppTest)."""

import pytest

from backend import models
from tests.pages.conftest import open_page, using_db

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("demo" not in models.bundled_models(), reason="no demo model"),
]


def _brackets(path, n=60, seed=0):
    """Bracket strings over words the demo vocabulary has; per-token label = nesting depth."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        toks, depth, labels = [], 0, []
        for _ in range(rng.randint(4, 10)):
            t = rng.choice(["[", "]", "x", "c"] if depth else ["[", "x", "c"])  # "c": <unk>
            depth += {"[": 1, "]": -1}.get(t, 0)
            toks.append(t)
            labels.append(str(min(depth, 2)))
        rows.append(f"{' '.join(toks)},{' '.join(labels)}")
    path.write_text("text,token_labels\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    from backend.cli import main

    tmp = tmp_path_factory.mktemp("readouts")
    db = tmp / "r.duckdb"
    for model, set_name in (("demo", "agreement"), ("demo-untrained", "agreement")):
        assert (
            main(["extract", "--db", str(db), "--model", model, "--set", set_name, "--json"]) == 0
        )
    assert (
        main(
            [
                "extract",
                "--db",
                str(db),
                "--model",
                "demo",
                "--prompts",
                str(_brackets(tmp / "brackets.csv")),
                "--set",
                "brackets",
                "--json",
            ]
        )
        == 0
    )
    return db


@pytest.fixture
def env(demo_db, monkeypatch):
    yield from using_db(demo_db, monkeypatch)


def _table(at, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _ok(at):
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_probes_page_shows_where_number_becomes_decodable_against_the_twin(env):
    at = open_page("probes", {"model": "demo", "set": "agreement"})
    _ok(at)
    text = " ".join(m.value for m in at.markdown)
    assert "Decodable from **layer 1**" in text
    assert "demo-untrained" in text.replace("\\", "") and "above it" in text
    fig = at.get("plotly_chart")[0].proto.spec
    assert "same probe on demo-untrained" in fig and "shuffled labels" in fig
    assert {b.proto.label for b in at.get("download_button")} >= {
        "weights .npy",
        "weights + bias .csv",
    }


def test_probes_misclassified_list_links_to_real_prompts(env):
    at = open_page(
        "probes", {"model": "demo", "set": "agreement", "layer": "0", "baseline": "(none)"}
    )
    _ok(at)
    assert any("Misclassified at layer 0" in m.value for m in at.markdown)
    wrong = _table(at, "predicted")
    assert len(wrong) > 50 and wrong["open"].str.startswith("./prompt?run=").all()
    # where in the layers each goes wrong: one heatmap row per wrong or borderline prompt
    errors = next(c for c in at.get("plotly_chart") if c.proto.id and "probe_errors" in c.key)
    import json

    heat = json.loads(errors.proto.spec)["data"][0]
    assert heat["type"] == "heatmap" and len(heat["y"]) == min(80, len(wrong))
    said = " ".join(c.value for c in at.caption)
    assert f"the 80 most confident of {len(wrong)} wrong" in said and "stays right" in said
    from urllib.parse import parse_qsl, urlsplit

    link = dict(parse_qsl(urlsplit(wrong["open"].iloc[0]).query))
    assert link["layer"] == "0" and link["set"] == "agreement" and link["probe"] == "logistic"
    prompt = open_page("prompt", link)
    _ok(prompt)
    said = " ".join(m.value for m in prompt.markdown)
    assert wrong["prompt"].iloc[0].split()[-1] in said
    # the probe's verdict at every layer at once (the Probes page stored the fit), opened at
    # the layer the link came from
    assert prompt.slider(key="qp_layer").value == 0 and "At layer 0 the probe" in said
    assert "**wrong**" in said
    row = next(d.value for d in prompt.dataframe if "verdict" in d.value.columns)
    assert (
        len(row) == int(link["layers"].split(":")[1]) + 1
        and row.loc[row["layer"] == 0, "verdict"].item() == "wrong"
    )
    assert "stored by the Probes page" in " ".join(c.value for c in prompt.caption)


def test_probes_on_per_token_labels(env):
    at = open_page(
        "probes",
        {"model": "demo", "set": "brackets", "unit": "token", "probe": "ridge", "layers": "1:3"},
    )
    _ok(at)
    assert any("token units from 60 of 60 prompts" in c.value for c in at.caption)
    # the control task's selectivity and what the interval is, in the caption
    assert any("selectivity against it" in c.value for c in at.caption)
    assert any("95% interval: bootstrap over 60 prompts" in c.value for c in at.caption)
    assert any("bootstrap over prompts" in m.value for m in at.markdown)
    assert not any("across folds" in m.value for m in at.markdown)
    assert at.slider(key="qp_layers").value == (1, 3)


def test_probes_without_labels_says_so(env):
    at = open_page("probes", {"model": "demo", "set": "agreement", "unit": "token"})
    assert not at.exception
    assert any("no per-token labels" in i.value.replace("\\", "") for i in at.info)


def test_lens_page_shows_the_answer_and_the_set_summary(env):
    at = open_page("lens", {"model": "demo", "set": "agreement"})
    _ok(at)
    assert any("the model's answer is" in m.value for m in at.markdown)
    assert len(at.get("plotly_chart")) == 3  # grid, curves, set summary
    assert "run" in at.query_params


def test_lens_page_tuned_needs_the_button_then_shows_both_kls(env):
    from backend.views import lens
    from pages import _ui

    at = open_page("lens", {"model": "demo", "set": "agreement", "lens": "tuned"})
    assert not at.exception
    button = at.button(key="lens_train")
    assert button.label.startswith("Train a tuned lens on this set (at most ≈")
    s = _ui._root_store(_ui.db_path()).cursor()  # the app's own store (same process)
    mid = s.find_model("demo")["model_id"]
    assert lens.load_tuned(s, mid, "agreement") is None  # opening the link trained nothing
    at = button.click().run(timeout=300)
    _ok(at)
    # grid, tuned-vs-logit KL, the training curve (held-out KL per step), curves, summary
    keys = [c.key for c in at.get("plotly_chart")]
    assert keys == ["lens_fig", "lens_tuned_kl", "lens_tuned_curve", "lens_curves", "lens_summary"]
    assert any("held-out prompts only" in c.value for c in at.caption)
    assert at.query_params["lens"] == "tuned"


def test_lens_page_on_an_encoder_explains_instead_of_failing(env, tiny_model_dir, tmp_path):
    from backend.cli import main

    bert = str(tiny_model_dir("bert"))
    f = tmp_path / "b.txt"
    f.write_text("the cat runs\nthe dogs sit\n")
    assert (
        main(
            [
                "extract",
                "--db",
                str(env),
                "--model",
                bert,
                "--prompts",
                str(f),
                "--set",
                "bert-lines",
                "--json",
            ]
        )
        == 0
    )
    at = open_page("lens", {"model": bert, "set": "bert-lines"})
    assert not at.exception
    assert any("does not apply" in i.value for i in at.info)
    # one pooling rule: an encoder's prompts are pooled by mean on every page by default
    traj = open_page("trajectories", {"model": bert, "set": "bert-lines"})
    assert not traj.exception and traj.radio(key="qp_pool").value == "mean"
    sim = open_page("similarity", {"model": bert, "set": "bert-lines", "kind": "prompt"})
    assert not sim.exception and sim.radio(key="qp_units").value == "mean"
    demo = open_page("trajectories", {"model": "demo", "set": "agreement"})
    assert demo.radio(key="qp_pool").value == "last"


def test_stats_page_lists_the_largest_activations(env):
    at = open_page("stats", {"model": "demo", "set": "agreement", "layer": "2"})
    _ok(at)
    top = _table(at, "dim")
    assert len(top) == 5 and {"value", "dim", "token", "open"} <= set(top.columns)
    assert top["× median"].iloc[0] > 10


def test_prompt_page_is_the_error_analysis_landing_spot(env):
    """Label, group and set of the prompt, links to its views, and the probe's out-of-fold
    verdict on it at a chosen layer (only after a click)."""
    from pages import _ui

    s = _ui.store()
    mid = s.find_model("demo")["model_id"]
    runs = s.set_runs("agreement", mid)
    r = runs.iloc[0]
    # a probe nobody has fitted yet (another test may store the default one)
    at = open_page("prompt", {"run": r["run_id"], "probe": "ridge", "folds": "3"})
    assert not at.exception, at.exception
    shown = " ".join(m.value for m in at.markdown)
    assert "agreement" in shown and r["label"] in shown
    links = [e.proto.page for e in at.get("page_link")]
    assert any("lens" in p for p in links) and any("probes" in p for p in links)
    assert not any("predicts" in m.value for m in at.markdown)  # nothing computed on open
    at.button(key="prompt_probe").click().run()
    assert not at.exception, at.exception
    verdict = [m.value for m in at.markdown if "predicts" in m.value]
    assert verdict and ("right" in verdict[0] or "wrong" in verdict[0])
    again = open_page("prompt", {"run": r["run_id"], "probe": "ridge", "folds": "3"})
    assert any("predicts" in m.value for m in again.markdown)  # stored now: shown at once
    # its lens row, on a click: one column per layer, the last layer = the model's answer
    assert not any("top guess" in d.value.columns for d in at.dataframe)
    at.button(key="prompt_lens").click().run()
    assert not at.exception, at.exception
    (row,) = [d.value for d in at.dataframe if "top guess" in d.value.columns]
    n_layers = s.get_model(mid)["n_layers"] + 1
    assert len(row) == n_layers and row["rank of the final answer"].iloc[-1] == 0
    assert any("layer" in c.value for c in at.caption)
    # its path in the trajectories: the link carries it, the page draws it in black
    (link,) = [e.proto for e in at.get("page_link") if "trajectories" in e.proto.page]
    assert f"highlight={r['run_id']}" in link.query_string or r["run_id"] in str(link)
    traj = open_page(
        "trajectories", {"model": "demo", "set": "agreement", "highlight": r["run_id"]}
    )
    assert not traj.exception, traj.exception
    assert '"this prompt: ' in traj.get("plotly_chart")[0].proto.spec


def test_lens_report_holds_every_figure_of_the_page_with_its_settings(env):
    """The one-file report is the whole page: the grid, the curves and the set summary (in
    drawing order, each under its title), made on the click from this run's figures."""
    from backend import exports
    from pages import _ui

    at = open_page("lens", {"model": "demo", "set": "agreement"})
    _ok(at)
    figs = at.session_state["_ls_figs"]
    sections = _ui.report_sections(figs)
    assert len(sections) == len(at.get("plotly_chart")) == 3
    captions = [c for c, _ in sections]
    assert captions[0].startswith("Logit lens")
    html = exports.report_html(figs[""] or "Logit lens", sections, {"model": "demo"}).decode()
    for c in captions:
        assert exports.html.escape(c) in html
    assert html.count("Plotly.newPlot(") == 3
    # the button's file is deferred: nothing is rendered into the page on every rerun
    report = [b for b in at.get("download_button") if b.proto.label == "Report (HTML)"]
    assert report and all(b.proto.deferred_file_id or not b.proto.url for b in report)
